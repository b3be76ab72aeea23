"""Load the student and tokenizer, size the teacher from its config, pick the device."""

from __future__ import annotations

import functools
import os
import socket
import warnings
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

from ..core.errors import ModelLoadError
from .attention import ATTENTION_NAME, set_attention
from .dropout import use_fast_dropout


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """True when the Hugging Face hub's host resolves and offline mode is not set."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def from_pretrained_local_first(loader, name: str, what: str, **kwargs):
    """Load from a local dir or the cache first; go online only when the hub can be reached."""
    try:
        return loader(name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as local_error:
        if os.path.isdir(name):
            raise ModelLoadError(f"cannot load {what} from directory '{name}': {local_error}") from None
        if not hub_reachable():
            raise ModelLoadError(f"cannot load {what} '{name}': not a local directory, not in the Hugging Face "
                                 f"cache, and the hub cannot be reached (offline)") from None
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load {what} '{name}': {error}") from None


def load_tokenizer(name: str):
    """The tokenizer of a Hugging Face id or local directory."""
    tokenizer = from_pretrained_local_first(AutoTokenizer.from_pretrained, name, "tokenizer")
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"tokenizer '{name}' has no pad token")
    return tokenizer


def has_weights(directory: str) -> bool:
    """True when a local model directory holds weight files."""
    return any(entry.endswith((".safetensors", ".bin", ".pt")) for entry in os.listdir(directory))


def load_student(name: str, from_scratch: bool = False) -> torch.nn.Module:
    """A seq2seq student: pretrained weights, or random init from the same config."""
    if not from_scratch and os.path.isdir(name) and not has_weights(name):
        print(f"{name} holds a config but no weights: initializing the student randomly from its config")
        from_scratch = True
    if from_scratch:
        config = from_pretrained_local_first(AutoConfig.from_pretrained, name, "student config")
        return AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32)
    # float32 master weights whatever the checkpoint holds; --precision autocasts on GPU.
    return from_pretrained_local_first(AutoModelForSeq2SeqLM.from_pretrained, name, "student model",
                                       dtype=torch.float32)


def model_size_mb(model: torch.nn.Module, trainable_only: bool = True) -> float:
    """Parameter bytes in MiB (the thesis counts trainable parameters)."""
    parameters = (p for p in model.parameters() if p.requires_grad or not trainable_only)
    return sum(p.numel() * p.element_size() for p in parameters) / (1024 * 1024)


def teacher_size_mb(name: str) -> float | None:
    """Teacher size from its config alone (built on the meta device, no weights); None if no config."""
    try:
        config = from_pretrained_local_first(AutoConfig.from_pretrained, name, "teacher config")
    except ModelLoadError as error:
        warnings.warn(f"{error}; teacher size will be reported as N/A", stacklevel=2)
        return None
    with torch.device("meta"):
        teacher = AutoModelForSeq2SeqLM.from_config(config)
    # Sized as float32 parameters, like the student, whatever dtype its checkpoint is stored in.
    return sum(parameter.numel() for parameter in teacher.parameters()) * 4 / (1024 * 1024)


def pick_device() -> torch.device:
    """CUDA when present, then MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def configure_training_kernels(model: torch.nn.Module, attention: str, device: torch.device,
                               compiling: bool = False, checkpointing: bool = False) -> str:
    """Apply --attention, --gradient_checkpointing and, with the chunked attention, FastDropout.

    eager and sdpa keep transformers' kernels throughout (its dropout included), for reference runs.
    Returns a one-line description for the log.
    """
    used = set_attention(model, attention, device, compiling)
    fast = use_fast_dropout(model) if used == ATTENTION_NAME and device.type == "cpu" else 0
    if checkpointing:  # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias)
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        try:
            enable()
        except ValueError as error:
            raise ModelLoadError(f"--gradient_checkpointing: {error}") from error
    return (f"attention {used}, dropout {'fast (numpy masks)' if fast else 'torch'}"
            f"{', activation checkpointing' if checkpointing else ''}")
