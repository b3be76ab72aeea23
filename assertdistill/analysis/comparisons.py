"""Paired comparisons of a sweep's cells with a reference cell, record by record.

Two cells are compared on the per-record differences of a score (each cell's per-record scores
averaged over its seeds), records matched by their line_number in the validation file (the ground
truth must agree too). The p value comes from a test that is exact or valid at every record count:
McNemar's exact test for a 0/1 score (strict exact match of single runs), else the sign-flip
permutation test; the interval from the paired bootstrap where it is trustworthy, else a conservative
one (statistics.paired_tests). Cells whose records are not the reference's, or whose seeds evaluated
different records, are refused, by name. No correction for multiple comparisons is made.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assertdistill.analysis import axes
from assertdistill.analysis.intervals import BOUNDED, RecordScores, cell_records
from assertdistill.analysis.results import CONFIDENCE, METRICS_BY_KEY, Cell, Metric, axis_columns
from assertdistill.core.schema import COMPARISONS_FILENAME, PREDICTIONS_FILENAME, ROW_LINE_NUMBER
from assertdistill.scoring import statistics

RESULT_COLUMNS = ("difference", "ci_low", "ci_high", "p_value", "significant", "test", "ci_method", "records")


class ReferenceSpecError(ValueError):
    """A --reference that names no cell, or more than one."""


@dataclass(frozen=True)
class Comparison:
    """One (cell, metric) against the reference: cell minus reference."""

    cell: Cell
    metric: Metric
    reference: Cell
    result: statistics.PairedResult
    baseline: str = ""  # against a reference prediction on the cell's own records (teacher, retrieval), not a cell

    @property
    def significant(self) -> bool:
        """Whether the difference is significant at the sweep's confidence level."""
        return self.result.p_value < 1.0 - CONFIDENCE

    @property
    def significance_text(self) -> str:
        """yes / no as p says, marked where the interval (a separate method) says otherwise about 0."""
        holds_zero = self.result.ci_low <= 0.0 <= self.result.ci_high
        if self.significant:
            return "yes (interval holds 0)" if holds_zero else "yes"
        return "no" if holds_zero else "no (interval excludes 0)"


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
    """'alpha=0.5, T=2' (plus the folder's other axes)."""
    return cell.name


def csv_columns(names) -> tuple[str, ...]:
    """comparisons.csv's columns for cells with these axes."""
    return (*names, "metric", *(f"reference_{name}" for name in names), *RESULT_COLUMNS)


def parse_reference(spec: str) -> dict:
    """'alpha=0.0' or 'alpha=0.5,T=2,student_model_name=dir2' -> {'alpha': 0.0, 'temperature': 2.0, ...}."""
    wanted = {}
    for part in spec.split(","):
        name, equals, value = (text.strip() for text in part.partition("="))
        if not name or not equals:
            raise ReferenceSpecError(f"--reference {spec!r}: expected <setting>=<value>[,<setting>=<value>...], "
                                     "e.g. alpha=0.5,T=2")
        try:
            wanted[axes.canonical_name(name)] = float(value)
        except ValueError:
            wanted[axes.canonical_name(name)] = value
    return wanted


def _matches(cell: Cell, name: str, value) -> bool:
    """Whether the cell's setting `name` is `value` (numbers within rounding, text as written)."""
    mine = cell.value(name)
    if axes.is_number(mine) and isinstance(value, float):
        return bool(np.isclose(mine, value))
    return axes.format_value(mine) == (value if isinstance(value, str) else axes.format_value(value))


def select_reference(cells: list[Cell], main: Metric, spec: str | None, candidates: list[Cell]) -> Cell:
    """The cell --reference names, or else the candidate with the best mean of the main metric."""
    if spec is None:
        scored = [c for c in candidates if main.key in c.stats]
        pick = min if main.lower_is_better else max
        return pick(scored, key=lambda c: c.stats[main.key][0]) if scored else candidates[0]
    wanted = parse_reference(spec)
    names = axis_columns(cells)
    unknown = [name for name in wanted if name not in names and all(c.value(name) is None for c in cells)]
    if unknown:
        raise ReferenceSpecError(f"--reference {spec}: no cell has the setting {', '.join(unknown)}; "
                                 f"the cells differ in {', '.join(names)}")
    for name, value in wanted.items():
        if isinstance(value, str) and not axes.categorical([c.value(name) for c in cells]):
            raise ReferenceSpecError(f"--reference {spec!r}: {value!r} is not a number")
    matches = [c for c in cells if all(_matches(c, name, value) for name, value in wanted.items())]
    if len(matches) != 1:
        listed = "; ".join(cell_name(c) for c in cells)
        raise ReferenceSpecError(f"--reference {spec} matches {len(matches)} cells (need one); cells: {listed}")
    return matches[0]


def _seeds_problem(records: list[RecordScores]) -> str | None:
    """Why a cell's seeds cannot be averaged record by record; None when they evaluated the same records."""
    if any(r.line_numbers is None for r in records):
        return f"its {PREDICTIONS_FILENAME} has no {ROW_LINE_NUMBER} for every record (records cannot be matched)"
    first = records[0]
    for other in records[1:]:
        if other.line_numbers != first.line_numbers or other.ground_truths != first.ground_truths:
            return (f"its seeds evaluated different records ({len(first)} in {first.path}, "
                    f"{len(other)} in {other.path})")
    return None


def _why_not_paired(records: list[RecordScores], reference: list[RecordScores]) -> str | None:
    """Why a cell cannot be paired with the reference record by record; None when it can."""
    own, theirs = records[0], reference[0]
    if own.line_numbers != theirs.line_numbers:
        common = len(set(own.line_numbers) & set(theirs.line_numbers))
        return (f"it evaluated other records than the reference ({len(own)} records, the reference {len(theirs)}, "
                f"{common} {ROW_LINE_NUMBER}s in common)")
    differing = next((i for i, (a, b) in enumerate(zip(own.ground_truths, theirs.ground_truths)) if a != b), None)
    if differing is not None:
        return (f"its record at {ROW_LINE_NUMBER} {own.line_numbers[differing]} has another ground truth than the "
                "reference's (another validation file?)")
    return None


def _per_record(records: list[RecordScores], keys: list[str]) -> np.ndarray:
    """(N, M) per-record scores of the metrics averaged over the cell's seeds (NaN where a record has none)."""
    return np.mean(np.stack([np.column_stack([r.scores[key] for key in keys]) for r in records]), axis=0)


def compare_pair(cell: Cell, records, reference: Cell, reference_records) -> list[Comparison]:
    """statistics.paired_tests of every bounded metric both cells have per record."""
    metrics = [m for m in BOUNDED.values() if all(m.key in r.scores for r in records + reference_records)]
    if not metrics:
        return []
    keys = [m.key for m in metrics]
    results = statistics.paired_tests(_per_record(records, keys), _per_record(reference_records, keys),
                                      [m.binary for m in metrics], CONFIDENCE)
    return [Comparison(cell, metric, reference, result) for metric, result in zip(metrics, results)
            if result is not None]


def compare_with_baselines(cell: Cell, records: list[RecordScores]) -> list[Comparison]:
    """The cell's bounded metrics against the same score of the teacher and the baselines on the same records
    (e.g. accuracy s_vs_gt - accuracy r_vs_gt): does the student beat them?"""
    rows = []
    for metric in BOUNDED.values():
        for key in metric.reference_keys:
            if not all(metric.key in r.scores and key in r.scores for r in records):
                continue
            result = statistics.paired_tests(_per_record(records, [metric.key]), _per_record(records, [key]),
                                             [metric.binary], CONFIDENCE)[0]
            if result is not None:
                rows.append(Comparison(cell, metric, cell, result, METRICS_BY_KEY[key].reference_label))
    return rows


def compare_cells(cells: list[Cell], predictions: dict, main: Metric, spec: str | None = None) -> PairedComparisons:
    """Every (cell, bounded metric) against the reference cell; raises ReferenceSpecError for a bad --reference."""
    found = {id(c): cell_records(c, predictions) for c in cells}
    problems = {id(c): f"no {PREDICTIONS_FILENAME} for every run" if found[id(c)] is None
                else _seeds_problem(found[id(c)]) for c in cells}
    candidates = [c for c in cells if problems[id(c)] is None]
    if spec is not None:
        reference = select_reference(cells, main, spec, candidates or cells)
    elif candidates:
        reference = select_reference(cells, main, None, candidates)
    elif any(records is not None for records in found.values()):
        return PairedComparisons(None, main, [], [f"{cell_name(c)}: not compared, {problems[id(c)]}" for c in cells],
                                 "No paired comparison: no cell's runs evaluated the same records.")
    else:
        return PairedComparisons(None, main, [], [], f"No paired comparison: no run has a {PREDICTIONS_FILENAME} "
                                 "(the summaries hold only means; per-record scores are needed to pair cells).")
    if problems[id(reference)] is not None:
        return PairedComparisons(reference, main, [], [], f"No paired comparison: the reference "
                                 f"{cell_name(reference)} cannot be paired: {problems[id(reference)]}.")
    reference_records = found[id(reference)]
    rows, refused = [], []
    for cell in cells:
        if cell is reference:
            continue
        why = problems[id(cell)] or _why_not_paired(found[id(cell)], reference_records)
        if why is not None:
            refused.append(f"{cell_name(cell)}: not compared, {why}")
            continue
        rows += compare_pair(cell, found[id(cell)], reference, reference_records)
    for cell in candidates:
        rows += compare_with_baselines(cell, found[id(cell)])
    result = PairedComparisons(reference, main, rows, refused, "", len(reference_records[0]))
    result.verdict = verdict(result, chosen=spec is not None)
    return result


def verdict(result: PairedComparisons, chosen: bool) -> str:
    """One line: which cells are not distinguishable from the reference in the main metric."""
    main, reference = result.main, result.reference
    if main.key not in BOUNDED:
        return f"No verdict: {main.label} has no per-record scores ({COMPARISONS_FILENAME} holds the scores in [0, 1])."
    rows = [row for row in result.rows if row.metric.key == main.key and not row.baseline]
    what = "the reference" if chosen else "the best"
    if not rows:
        return f"No cell could be compared with {what}, {cell_name(reference)}, in {main.label}."
    same = [cell_name(row.cell) for row in rows if not row.significant]
    differ = [cell_name(row.cell) for row in rows if row.significant]
    stat = reference.stats.get(main.key)
    return (f"Not distinguishable from {what} ({cell_name(reference)}, {main.label} "
            f"{stat[0] if stat else float('nan'):{main.fmt}}) at {CONFIDENCE:.0%}, paired over {result.records} records: "
            f"{'; '.join(same) or 'none'}. Distinguishable: {'; '.join(differ) or 'none'}.")


def write_csv(result: PairedComparisons, path: Path) -> None:
    """comparisons.csv: one row per (cell, metric), columns csv_columns(the cells' axes)."""
    names = list(result.reference.axes) if result.reference is not None else list(axes.ALWAYS_SHOWN)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(csv_columns(names))
        for row in result.rows:
            paired = row.result
            reference = ([row.baseline] * len(names) if row.baseline
                         else [axes.format_value(row.reference.value(name)) for name in names])
            writer.writerow([axes.format_value(row.cell.value(name)) for name in names] + [row.metric.key] + reference
                            + [f"{paired.difference:.10g}", f"{paired.ci_low:.10g}", f"{paired.ci_high:.10g}",
                               f"{paired.p_value:.6g}", str(row.significant).lower(), paired.test, paired.ci_method,
                               paired.records])


def markdown_section(result: PairedComparisons) -> str:
    """The summary.md section: the verdict, the main metric's comparisons, how they were made, the refused cells."""
    lines = ["## Paired comparisons", ""]
    if result.reference is not None and result.rows:
        lines[0] += f" with {cell_name(result.reference)}"
    lines += [result.verdict, ""]
    main_rows = [row for row in result.rows if row.metric.key == result.main.key and not row.baseline]
    if main_rows:
        fmt = result.main.fmt
        names = list(result.reference.axes)
        header = [axes.axis(name).column for name in names]
        lines += ["| " + " | ".join(header) + f" | {result.main.label}: difference | {CONFIDENCE:.0%} CI | p | "
                  "significant | test | interval | records |", "|" + "---|" * (len(header) + 7)]
        for row in main_rows:
            paired = row.result
            lines.append("| " + " | ".join(axes.format_value(row.cell.value(name)) for name in names)
                         + f" | {paired.difference:+{fmt}} | [{paired.ci_low:+{fmt}}, {paired.ci_high:+{fmt}}] | "
                         f"{paired.p_value:.3g} | {row.significance_text} | {paired.test} | "
                         f"{paired.ci_method} | {paired.records} |")
        lines += ["", "Difference = cell - reference, on per-record scores averaged over each cell's seeds, records "
                  f"matched by {ROW_LINE_NUMBER}. p: McNemar's exact test for the strict exact match when every "
                  "per-record value is 0 or 1, else the sign-flip permutation test (exact up to "
                  f"{statistics.EXACT_MAX_NONZERO} differing records, else Monte Carlo); with m differing records "
                  "no p is below 2 / 2^m, so fewer than 6 can never be significant. Interval: paired bootstrap "
                  f"with >= {statistics.MIN_BOOTSTRAP_RECORDS} records of which >= "
                  f"{statistics.MIN_BOOTSTRAP_NONZERO} differ, else conservative. Significant: p < "
                  f"{1.0 - CONFIDENCE:.2g}; \"interval holds 0\": the interval, which does not condition on which "
                  "records differ, disagrees (few records differ). No correction for multiple "
                  f"comparisons. Every metric: {COMPARISONS_FILENAME}; methods: docs/STATISTICS.md."]
    lines += [f"- {line}" for line in result.refused]
    lines += baseline_section(result)
    return "\n".join(lines) + "\n"


def baseline_section(result: PairedComparisons) -> list[str]:
    """Each cell's main metric against the teacher's and the baselines' on the same records (when it has them)."""
    rows = [row for row in result.rows if row.metric.key == result.main.key and row.baseline]
    if not rows:
        return []
    fmt = result.main.fmt
    lines = ["", f"## {result.main.label}: each cell against the teacher and the baselines on its own records", "",
             f"| cell | against | difference | {CONFIDENCE:.0%} CI | p | significant | test |", "|" + "---|" * 7]
    for row in rows:
        paired = row.result
        lines.append(f"| {cell_name(row.cell)} | {row.baseline} | {paired.difference:+{fmt}} | "
                     f"[{paired.ci_low:+{fmt}}, {paired.ci_high:+{fmt}}] | {paired.p_value:.3g} | "
                     f"{row.significance_text} | {paired.test} |")
    lines += ["", f"Difference = the cell's student - the reference prediction, per record; {COMPARISONS_FILENAME} "
              "holds these rows with the prediction's name (teacher, retrieval) in the reference columns."]
    return lines
