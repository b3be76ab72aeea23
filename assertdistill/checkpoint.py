"""Atomic training checkpoints: weights, optimizer, scheduler, RNG states and the place in the data."""

from __future__ import annotations

import os
import random
import re
import shutil

import numpy as np
import torch

from .schema import CHECKPOINTS_DIRNAME

STATE_FILENAME = "state.pt"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(Exception):
    """A checkpoint that cannot be found or read, reported as one clear line."""


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and every CUDA device) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints_in(output_dir: str) -> list[tuple[int, str]]:
    """(global step, path) of the complete checkpoints under output_dir, oldest first."""
    root = os.path.join(output_dir, CHECKPOINTS_DIRNAME)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _CHECKPOINT_NAME.match(name)
        path = os.path.join(root, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILENAME)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(output_dir: str, state: dict, save_total_limit: int | None) -> str:
    """Write checkpoint-<step>/ through a temporary directory and a rename; keep the newest `limit`."""
    root = os.path.join(output_dir, CHECKPOINTS_DIRNAME)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"checkpoint-{state['global_step']}")
    temporary = final + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    state_path = os.path.join(temporary, STATE_FILENAME)
    with open(state_path, "wb") as stream:
        torch.save(state, stream)
        stream.flush()
        os.fsync(stream.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(temporary, final)
    if save_total_limit is not None and save_total_limit > 0:
        for _, old in checkpoints_in(output_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(spec: str, output_dir: str) -> str:
    """A checkpoint directory from a path or 'latest' (the newest complete one in output_dir)."""
    if spec == "latest":
        found = checkpoints_in(output_dir)
        if not found:
            raise CheckpointError(f"--resume_from_checkpoint latest: no complete checkpoint in "
                                  f"{os.path.join(output_dir, CHECKPOINTS_DIRNAME)}")
        return found[-1][1]
    if not os.path.isfile(os.path.join(spec, STATE_FILENAME)):
        raise CheckpointError(f"--resume_from_checkpoint {spec}: not a complete checkpoint "
                              f"(no {STATE_FILENAME} in it)")
    return spec


def load_checkpoint(path: str) -> dict:
    """The state dict saved by save_checkpoint."""
    try:
        with open(os.path.join(path, STATE_FILENAME), "rb") as stream:
            return torch.load(stream, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
