"""Paired comparisons of a sweep's cells with a reference cell, record by record.

Every run of a sweep evaluates the same validation records, so two cells are compared on the
per-record differences of a score (each cell's per-record scores averaged over its seeds): a paired
percentile bootstrap over the records gives the interval and p value of the mean difference, and
McNemar's exact test the p value of a 0/1 score (strict exact match) between two single runs.
Cells whose records are not the reference's are refused, by name. No correction for multiple
comparisons is made.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assertdistill import statistics
from assertdistill.intervals import BOUNDED, RecordScores, cell_records
from assertdistill.results import CONFIDENCE, Cell, Metric
from assertdistill.schema import COMPARISONS_FILENAME, PREDICTIONS_FILENAME

CSV_COLUMNS = ("alpha", "temperature", "metric", "reference_alpha", "reference_temperature", "difference",
               "ci_low", "ci_high", "p_value", "significant", "test")
REFERENCE_NAMES = {"alpha": "alpha", "temperature": "temperature", "T": "temperature"}


class ReferenceSpecError(ValueError):
    """A --reference that names no cell, or more than one."""


@dataclass(frozen=True)
class Comparison:
    """One (cell, metric) against the reference: cell minus reference."""

    cell: Cell
    metric: Metric
    reference: Cell
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str

    @property
    def significant(self) -> bool:
        """Whether the difference is significant at the sweep's confidence level."""
        return self.p_value < 1.0 - CONFIDENCE


@dataclass
class PairedComparisons:
    """The comparisons of a sweep, the reference (None: none possible) and one line per refused cell."""

    reference: Cell | None
    main: Metric
    rows: list[Comparison]
    refused: list[str]
    verdict: str
    records: int = 0


def cell_name(cell: Cell) -> str:
    """'alpha=0.5, T=2'."""
    return f"alpha={cell.alpha:g}, T={cell.temperature:g}"


def parse_reference(spec: str) -> dict[str, float]:
    """'alpha=0.0' or 'alpha=0.5,temperature=2' (T= for short) -> {'alpha': 0.0, 'temperature': 2.0}."""
    wanted = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in REFERENCE_NAMES:
            raise ReferenceSpecError(f"--reference {spec!r}: expected alpha=<value> and/or temperature=<value>")
        try:
            wanted[REFERENCE_NAMES[name.strip()]] = float(value)
        except ValueError:
            raise ReferenceSpecError(f"--reference {spec!r}: {value!r} is not a number") from None
    return wanted


def select_reference(cells: list[Cell], main: Metric, spec: str | None, candidates: list[Cell]) -> Cell:
    """The cell --reference names, or else the candidate with the best mean of the main metric."""
    if spec is None:
        scored = [c for c in candidates if main.key in c.stats]
        pick = min if main.lower_is_better else max
        return pick(scored, key=lambda c: c.stats[main.key][0]) if scored else candidates[0]
    wanted = parse_reference(spec)
    matches = [c for c in cells if all(np.isclose(c.value(name), value) for name, value in wanted.items())]
    if len(matches) != 1:
        names = "; ".join(cell_name(c) for c in cells)
        raise ReferenceSpecError(f"--reference {spec} matches {len(matches)} cells (need one); cells: {names}")
    return matches[0]


def _per_record(records: list[RecordScores], key: str) -> np.ndarray:
    """(N,) per-record scores of one metric averaged over the cell's seeds (NaN where a record has none)."""
    return np.mean(np.stack([r.scores[key] for r in records]), axis=0)


def _why_not_paired(records: list[RecordScores], reference: list[RecordScores]) -> str | None:
    """Why a cell cannot be paired with the reference record by record; None when it can."""
    own = records[0].ground_truths
    if any(r.ground_truths != own for r in records[1:]):
        return "its seeds evaluated different records"
    theirs = reference[0].ground_truths
    if len(own) != len(theirs):
        return f"its {len(own)} records are not the reference's {len(theirs)}"
    differing = next(i for i, (a, b) in enumerate(zip(own, theirs)) if a != b) if own != theirs else None
    if differing is not None:
        return f"its record {differing} differs from the reference's (another validation file?)"
    return None


def compare_metric(cell: Cell, records, reference: Cell, reference_records, metric: Metric) -> Comparison | None:
    """Paired bootstrap (McNemar for a 0/1 score of single runs) of one metric; None if either lacks it."""
    if not all(metric.key in r.scores for r in records + reference_records):
        return None
    values, base = _per_record(records, metric.key), _per_record(reference_records, metric.key)
    both = ~(np.isnan(values) | np.isnan(base))
    if not both.any():
        return None
    values, base = values[both], base[both]
    difference, low, high, p_value = statistics.paired_bootstrap(values, base, confidence=CONFIDENCE)
    test = "paired bootstrap"
    zero_one = np.isin(values, (0.0, 1.0)).all() and np.isin(base, (0.0, 1.0)).all()
    if metric.binary and len(records) == len(reference_records) == 1 and zero_one:
        p_value, test = statistics.mcnemar_exact(values == 1.0, base == 1.0), "McNemar exact"
    return Comparison(cell, metric, reference, difference, low, high, p_value, test)


def compare_cells(cells: list[Cell], predictions: dict, main: Metric, spec: str | None = None) -> PairedComparisons:
    """Every (cell, bounded metric) against the reference cell; raises ReferenceSpecError for a bad --reference."""
    pairable = {id(c): cell_records(c, predictions) for c in cells}
    candidates = [c for c in cells if pairable[id(c)] is not None]
    if spec is not None:
        reference = select_reference(cells, main, spec, candidates or cells)
    elif candidates:
        reference = select_reference(cells, main, None, candidates)
    else:
        return PairedComparisons(None, main, [], [], f"No paired comparison: no run has a {PREDICTIONS_FILENAME} "
                                 "(the summaries hold only means; per-record scores are needed to pair cells).")
    reference_records = pairable[id(reference)]
    if reference_records is None:
        return PairedComparisons(reference, main, [], [], f"No paired comparison: the reference "
                                 f"{cell_name(reference)} has no {PREDICTIONS_FILENAME} for every run.")
    rows, refused = [], []
    for cell in cells:
        if cell is reference:
            continue
        records = pairable[id(cell)]
        why = f"no {PREDICTIONS_FILENAME} for every run" if records is None else _why_not_paired(
            records, reference_records)
        if why is not None:
            refused.append(f"{cell_name(cell)}: not compared, {why}")
            continue
        for metric in BOUNDED.values():
            comparison = compare_metric(cell, records, reference, reference_records, metric)
            if comparison is not None:
                rows.append(comparison)
    result = PairedComparisons(reference, main, rows, refused, "", len(reference_records[0]))
    result.verdict = verdict(result, chosen=spec is not None)
    return result


def verdict(result: PairedComparisons, chosen: bool) -> str:
    """One line: which cells are not distinguishable from the reference in the main metric."""
    main, reference = result.main, result.reference
    if main.key not in BOUNDED:
        return f"No verdict: {main.label} has no per-record scores ({COMPARISONS_FILENAME} holds the scores in [0, 1])."
    rows = [row for row in result.rows if row.metric.key == main.key]
    what = "the reference" if chosen else "the best"
    if not rows:
        return f"No cell could be compared with {what}, {cell_name(reference)}, in {main.label}."
    same = [cell_name(row.cell) for row in rows if not row.significant]
    differ = [cell_name(row.cell) for row in rows if row.significant]
    return (f"Not distinguishable from {what} ({cell_name(reference)}, {main.label} "
            f"{reference.stats[main.key][0]:{main.fmt}}) at {CONFIDENCE:.0%}, paired over {result.records} records: "
            f"{'; '.join(same) or 'none'}. Distinguishable: {'; '.join(differ) or 'none'}.")


def write_csv(result: PairedComparisons, path: Path) -> None:
    """comparisons.csv: one row per (cell, metric), columns CSV_COLUMNS."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in result.rows:
            writer.writerow([f"{row.cell.alpha:g}", f"{row.cell.temperature:g}", row.metric.key,
                             f"{row.reference.alpha:g}", f"{row.reference.temperature:g}",
                             f"{row.difference:.10g}", f"{row.ci_low:.10g}", f"{row.ci_high:.10g}",
                             f"{row.p_value:.6g}", str(row.significant).lower(), row.test])


def markdown_section(result: PairedComparisons) -> str:
    """The summary.md section: the verdict, the main metric's comparisons, the refused cells."""
    lines = ["## Paired comparisons", ""]
    if result.reference is not None and result.rows:
        lines[0] += f" with {cell_name(result.reference)}"
    lines += [result.verdict, ""]
    main_rows = [row for row in result.rows if row.metric.key == result.main.key]
    if main_rows:
        fmt = result.main.fmt
        lines += [f"| alpha | T | {result.main.label}: difference | {CONFIDENCE:.0%} CI | p | significant | test |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {row.cell.alpha:g} | {row.cell.temperature:g} | {row.difference:+{fmt}} | "
                  f"[{row.ci_low:+{fmt}}, {row.ci_high:+{fmt}}] | {row.p_value:.3g} | "
                  f"{'yes' if row.significant else 'no'} | {row.test} |" for row in main_rows]
        lines += ["", "Difference = cell - reference, on per-record scores averaged over each cell's seeds; "
                  "paired percentile bootstrap over the records (McNemar's exact test for the strict exact match "
                  f"of single runs); no correction for multiple comparisons. Every metric: {COMPARISONS_FILENAME}."]
    lines += [f"- {line}" for line in result.refused]
    return "\n".join(lines) + "\n"
