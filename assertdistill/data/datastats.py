"""Counts of one pass over a data file: records used, and records skipped by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DataStats:
    """Counts of one pass over a data file: records used and records skipped, by reason."""

    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # kept records with something worth knowing

    def merge(self, other: "DataStats") -> None:
        """Add another pass's (or worker's) counts to these."""
        self.used += other.used
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)

    def as_dict(self) -> dict:
        """Plain-JSON form for the summary."""
        return {"records_used": self.used, "records_skipped": sum(self.skipped.values()),
                "skipped_by_reason": dict(sorted(self.skipped.items())), "notes": dict(sorted(self.notes.items()))}

    def describe(self) -> str:
        """One line: used, skipped and why."""
        text = f"{self.used} records used, {sum(self.skipped.values())} skipped"
        if self.skipped:
            text += " (" + ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items())) + ")"
        if self.notes:
            text += "; " + ", ".join(f"{note}: {count}" for note, count in sorted(self.notes.items()))
        return text
