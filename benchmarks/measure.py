"""What the benchmark measures: peak memory, matmul FLOP/s, model FLOPs of a training step, timings."""

from __future__ import annotations

import os
import resource
import statistics
import time

import torch

from assertdistill.distill.summary import cpu_name
from assertdistill.model.precision import cpu_has_bf16, cpu_matrix_features

SHAPES = {  # T5 dimensions; vocabulary 32100 for both (CodeT5's)
    "codet5-small": dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, num_decoder_layers=6),
    "codet5-base": dict(d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12, num_decoder_layers=12),
    "tiny": dict(d_model=64, d_ff=256, d_kv=32, num_heads=2, num_layers=1, num_decoder_layers=1),
}
FLOP_FORMULA = ("6 x (encoder non-embedding params x source tokens + decoder non-embedding params x target "
                "tokens + d_model x V x target tokens) + 12 x d_attn x (encoder layers x S^2 + decoder layers "
                "x (L^2 + L x S)), real (non-padding) tokens per sample")


def make_model(shape: str, tokenizer, seed: int = 0, vocab_size: int = 32100):
    """A randomly initialized T5 of a benchmark shape, CodeT5's vocabulary size, special ids and dropout."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      **SHAPES[shape])
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: VmHWM is reset through /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as control:
            control.write("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process
        pass


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (or since the process started), in MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def matmul_flops(size: int = 4096, repeats: int = 3, device: torch.device = torch.device("cpu"),
                 dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of one large matmul (size x size x size), best of `repeats` (on CUDA: of 10 back-to-back)."""
    left, right = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    calls = 10 if device.type == "cuda" else 1

    def run() -> None:
        for _ in range(calls):
            left @ right
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm up
    best = min(_seconds(run) for _ in range(repeats))
    return 2 * size ** 3 * calls / best


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak window of the device's allocator (CUDA only; CPU memory is peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory allocated on a CUDA device since the last reset, in MiB; None on CPU."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def parameter_counts(model) -> dict:
    """Non-embedding parameters of encoder and decoder, and the lm_head's d_model x V."""
    shared = model.shared.weight.numel()
    encoder = sum(p.numel() for p in model.encoder.parameters()) - shared  # the encoder's embedding is `shared`
    decoder = sum(p.numel() for p in model.decoder.parameters()) - shared
    return {"encoder": encoder, "decoder": decoder, "lm_head": model.config.d_model * model.config.vocab_size}


def training_flops(model, source_lengths: list[int], target_lengths: list[int]) -> float:
    """Model FLOPs of one forward + backward on real tokens (see FLOP_FORMULA)."""
    counts = parameter_counts(model)
    config = model.config
    attention_width = config.num_heads * config.d_kv
    flops = 0.0
    for source, target in zip(source_lengths, target_lengths):
        flops += 6 * (counts["encoder"] * source + (counts["decoder"] + counts["lm_head"]) * target)
        flops += 12 * attention_width * (config.num_layers * source ** 2
                                         + config.num_decoder_layers * (target ** 2 + target * source))
    return flops


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(values)


def machine() -> dict:
    """CPU model, cores, torch threads, the math library torch uses, the CPU's matrix units, the GPU if any."""
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
            "matrix_features": cpu_matrix_features(), "mkldnn_bf16": cpu_has_bf16()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
