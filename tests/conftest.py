"""Make the repository root and tests/ importable, keep every test offline, skip cuda-marked tests without CUDA,
keep the recursion limit."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Tests marked cuda are skipped when no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def recursion_limit_kept():
    """Fail the test that leaves the interpreter's recursion limit changed (LittleDarwin's import raises it to
    100000, and json's C scanner then overflows the C stack on a deeply nested record instead of raising)."""
    limit = sys.getrecursionlimit()
    yield
    changed = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    assert changed == limit, f"the test left the recursion limit at {changed}, not {limit}"
