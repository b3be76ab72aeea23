"""Where the embedded demo's files live (the defaults of script.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_DIR = os.path.join(REPO_ROOT, "demo")


@dataclass(frozen=True)
class DemoPaths:
    """The demo archive, its members, and the demo models."""

    archive: str = os.path.relpath(os.path.join(DEMO_DIR, "data", "codet5_demo.zip"))
    train_inner_zip: str = "codet5_demo/distillation_data_training.jsonl.zip"
    train_jsonl: str = "distillation_data_training.jsonl"
    val_inner_zip: str = "codet5_demo/distillation_data_validation.jsonl.zip"
    val_jsonl: str = "distillation_data_validation.jsonl"
    teacher: str = os.path.relpath(os.path.join(DEMO_DIR, "teacher"))
    student: str = os.path.relpath(os.path.join(DEMO_DIR, "student"))
    run_defaults: str = os.path.join(DEMO_DIR, "run_defaults.json")


DEMO = DemoPaths()
