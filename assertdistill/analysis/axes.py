"""The settings a sweep varies: the declared axes (alpha, temperature, seed) and any other run setting.

One list, SWEPT, names the settings sweep.sh has shorthands for; every other entry of a summary's
`args` is a setting too. A results folder's cells are the runs that agree on every setting but the
seed (and the run-only ones below; an entry a summary lacks counts as its default); the settings whose
values differ between cells are its axes:
its CSV columns, figure lines and paired comparisons name them all, so runs that differ in anything
are never pooled as seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from assertdistill.core.schema import ARG_ALPHA, ARG_SEED, ARG_TEMPERATURE
from assertdistill.distill import config


@dataclass(frozen=True)
class Axis:
    """A run setting as an axis: its name in tables and file names, its `args` key and how to draw it."""

    name: str  # CSV column, --reference / --axis name, the thesis figures' prefix (<name>_vs_loss.png)
    key: str  # the entry of the summary's args (script.py's flag dest)
    column: str  # the summary.md column title
    symbol: str  # legends: "α=0.5"
    label: str  # axis labels
    thesis_label: str  # the thesis figures' axis label and title wording
    log2: bool = False  # temperatures are usually a doubling grid
    thesis_loss_colour: str = "green"
    dir_prefix: str = ""  # sweep.sh's run directory part: <dir_prefix>_<value>


ALPHA = Axis("alpha", ARG_ALPHA, "alpha", "α", "α (weight of the KL loss)", "Alpha (KL Loss Weight)",
             dir_prefix="alpha")
TEMPERATURE = Axis("temperature", ARG_TEMPERATURE, "T", "T", "temperature T", "Temperature", log2=True,
                   thesis_loss_colour="magenta", dir_prefix="temp")
SEED = Axis("seed", ARG_SEED, "seed", "seed", "seed", "Seed", dir_prefix="seed")
SWEPT = (ALPHA, TEMPERATURE, SEED)  # the declared axes, in sweep.sh's directory-name order
ALWAYS_SHOWN = (ALPHA.name, TEMPERATURE.name)  # columns of every table, even when one value only
ALIASES = {"T": TEMPERATURE.name, "temp": TEMPERATURE.name, ARG_ALPHA: ALPHA.name, ARG_TEMPERATURE: TEMPERATURE.name}
# Settings that change where and how a run is written, never its numbers: never part of a cell.
RUN_ONLY_SETTINGS = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint", "save_steps", "save_total_limit",
                     "log_steps")
_DECLARED = {axis.name: axis for axis in SWEPT}
# A run made before a setting existed ran as its default does (a new flag's default keeps the old behaviour):
# a summary without an entry of args is read as holding RunConfig's default for it.
DEFAULTS = {name: value for name, value in config.DEFAULTS.items() if name not in RUN_ONLY_SETTINGS}
_BY_KEY = {axis.key: axis for axis in SWEPT}


def setting_name(key: str) -> str:
    """The name of the setting stored as args[key]: 'alpha_kl_loss_weight' -> 'alpha'; others unchanged."""
    return _BY_KEY[key].name if key in _BY_KEY else key


def canonical_name(name: str) -> str:
    """A setting named as the user may ('T', 'temp', 'alpha_kl_loss_weight') -> its name in tables."""
    return ALIASES.get(name, name)


def axis(name: str) -> Axis:
    """The Axis of a setting: declared ones as declared, any other labelled by its name."""
    name = canonical_name(name)
    if name in _DECLARED:
        return _DECLARED[name]
    return Axis(name, name, name, name, name, name, dir_prefix=name)


def setting_value(value):
    """An args value as a hashable cell coordinate: numbers as float, strings/bools/None as they are."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else repr(float(value))
    return json.dumps(value, sort_keys=True)


def is_number(value) -> bool:
    """True for a numeric coordinate (not a bool)."""
    return isinstance(value, float)


def sort_key(value) -> tuple:
    """Orders one setting's values: numbers, then text, then absent."""
    if is_number(value):
        return (0, value, "")
    return (2, 0.0, "") if value is None else (1, 0.0, str(value))


def format_value(value) -> str:
    """'0.5', 'demo/student', 'none' (the setting was not recorded)."""
    if is_number(value):
        return f"{value:g}"
    return "none" if value is None else str(value)


def categorical(values) -> bool:
    """True when an axis's values are not all numbers: it is drawn at evenly spaced positions."""
    return not all(is_number(value) for value in values)
