"""Atomic training checkpoints: a run's weights, optimizer, scheduler, RNG states and place in the data."""

from __future__ import annotations

import os
import re
import shutil
import time

import torch

from .config import RESUME_MUST_MATCH, SETTINGS  # RESUME_MUST_MATCH: the flags a resume refuses others of
from .datastats import DataStats
from .rng import rng_state, set_rng_state
from .run_state import RunState
from .schema import CHECKPOINTS_DIRNAME
from .training import EpochCounters

STATE_FILENAME = "state.pt"
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


def checkpoint_to_resume(spec: str, output_dir: str, flags: dict) -> tuple[str, dict]:
    """(path, state) of the checkpoint `spec` names, refused unless made with this run's RESUME_MUST_MATCH flags."""
    path = resolve_checkpoint(spec, output_dir)
    checkpoint = load_checkpoint(path)
    made_with = {**{spec.name: spec.default for spec in SETTINGS}, **checkpoint["args"]}  # older: newer flags' defaults
    mismatched = [name for name in RESUME_MUST_MATCH if made_with.get(name) != flags[name]]
    if mismatched:
        raise CheckpointError(f"{path} was made with other values of --{', --'.join(mismatched)}; "
                              f"resume with the same flags")
    return path, checkpoint


def save_run_checkpoint(state: RunState, epoch: int, epoch_finished: bool) -> str:
    """Save the run as it stands: weights, optimizer, scheduler, scaler, RNG, counters, history, flags."""
    trainer = state.trainer
    checkpoint = {"model": state.student.state_dict(), "optimizer": state.optimizer.state_dict(),
                  "scheduler": state.scheduler.state_dict(), "scaler": trainer.scaler.state_dict(),
                  "rng": rng_state(), "global_step": trainer.global_step, "epoch": epoch,
                  "epoch_finished": epoch_finished, "counters": vars(trainer.counters).copy(),
                  "history": state.history, "best_value": state.best_value, "final_results": state.final_results,
                  "final_records": state.final_records,
                  "train_data": vars(state.train_data).copy(), "eval_data": vars(state.eval_data).copy(),
                  "elapsed_seconds": time.time() - state.started, "args": state.config.as_flags()}
    return save_checkpoint(state.config.output_dir, checkpoint, state.config.save_total_limit)


def restore_run_state(state: RunState, checkpoint: dict) -> None:
    """Put a checkpoint back into the run; a mid-epoch one's RNG waits until its batches are skipped again."""
    state.student.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.trainer.scaler.load_state_dict(checkpoint["scaler"])
    state.trainer.global_step = checkpoint["global_step"]
    state.history, state.best_value = checkpoint["history"], checkpoint["best_value"]
    state.final_results = checkpoint["final_results"]
    state.final_records = checkpoint.get("final_records", [])  # absent in checkpoints of older versions
    state.train_data.merge(DataStats(**checkpoint["train_data"]))
    state.eval_data.merge(DataStats(**checkpoint["eval_data"]))
    state.start_epoch = checkpoint["epoch"]
    if checkpoint["epoch_finished"]:
        state.start_epoch += 1
        set_rng_state(checkpoint["rng"])
    else:
        state.resume_counters, state.rng_after_skip = EpochCounters(**checkpoint["counters"]), checkpoint["rng"]
