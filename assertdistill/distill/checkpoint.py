"""Atomic training checkpoints that load without running code: tensors and plain containers, JSON beside them."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil

import torch

from ..core.schema import CHECKPOINTS_DIRNAME
from .config import DEFAULTS, RESUME_MUST_MATCH  # the flags declared resume_must_match: a resume refuses others

STATE_FILENAME = "state.pt"
CHECKPOINT_FORMAT = 2  # tensors and plain containers, the run's state as JSON text (format 1 pickled objects)
FORMAT_KEY, RUN_KEY = "format", "run"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(Exception):
    """A checkpoint that cannot be found or read, reported as one clear line."""


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


def save_checkpoint(output_dir: str, step: int, tensors: dict, run: dict, save_total_limit: int | None) -> str:
    """Write checkpoint-<step>/ through a temporary directory and a rename; keep the newest `limit`.

    tensors: state dicts and other tensors in plain containers; run: JSON values, stored beside them as text,
    so the file loads with torch.load(weights_only=True) and no pickled object.
    """
    root = os.path.join(output_dir, CHECKPOINTS_DIRNAME)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"checkpoint-{step}")
    temporary = final + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    state_path = os.path.join(temporary, STATE_FILENAME)
    with open(state_path, "wb") as stream:
        torch.save({**tensors, FORMAT_KEY: CHECKPOINT_FORMAT, RUN_KEY: json.dumps(run)}, stream)
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
    """The state save_checkpoint wrote, its run part parsed; read with weights_only=True, so loading runs no code."""
    state_path = os.path.join(path, STATE_FILENAME)
    try:
        with open(state_path, "rb") as stream:
            state = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"refusing checkpoint {path}: {STATE_FILENAME} holds objects other than tensors and "
                              f"plain values (loading it could run code); only this suite's checkpoints resume") \
            from None
    except (OSError, EOFError, RuntimeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(state, dict) or state.get(FORMAT_KEY) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"refusing checkpoint {path}: not a checkpoint of this version of the suite "
                              f"(format {state.get(FORMAT_KEY) if isinstance(state, dict) else None}, "
                              f"expected {CHECKPOINT_FORMAT})")
    try:
        state[RUN_KEY] = json.loads(state[RUN_KEY])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: its run state is not JSON ({error})") from None
    return state


def checkpoint_to_resume(spec: str, output_dir: str, flags: dict) -> tuple[str, dict]:
    """(path, state) of the checkpoint `spec` names, refused unless made with this run's RESUME_MUST_MATCH flags."""
    path = resolve_checkpoint(spec, output_dir)
    checkpoint = load_checkpoint(path)
    made_with = {**DEFAULTS, **checkpoint[RUN_KEY]["args"]}  # a checkpoint older than a flag ran with its default
    mismatched = [name for name in RESUME_MUST_MATCH if made_with.get(name) != flags[name]]
    if mismatched:
        raise CheckpointError(f"{path} was made with other values of --{', --'.join(mismatched)}; "
                              f"resume with the same flags")
    return path, checkpoint
