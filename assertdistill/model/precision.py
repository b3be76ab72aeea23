"""Which number format the model computes in: autocast on GPU; on CPU a bf16 copy of the weights where the silicon has bf16.

On a CUDA device --precision bf16/fp16 runs under torch.autocast, as before. On the CPU, bf16 runs
the student as a bf16 copy of itself (Bf16Weights): every matmul, and every elementwise op between
them, reads and writes bf16, while the float32 model keeps the master weights the optimizer updates
and the checkpoints save. The copy is refreshed after each optimizer step. Plain CPU autocast casts
every weight again on every forward and keeps the residual stream in float32 (T5's layer norm returns
its float32 weight's dtype); measured on a CodeT5-small step, the copy took 2.23 s against autocast's
2.96 s (docs/PERFORMANCE.md). Where the CPU has no bf16 instructions (neither AVX512-BF16 nor AMX),
bf16 is emulated at a fraction of float32's speed, so the run says so once and trains in float32.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
# /proc/cpuinfo flags of x86 matrix and dot-product units, in the order they are reported
MATRIX_FEATURES = ("amx_bf16", "amx_int8", "amx_fp16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512_vnni",
                   "avx_vnni")
_warned: set[str] = set()  # messages already shown in this process


def cpu_matrix_features(cpuinfo_path: str = "/proc/cpuinfo") -> list[str]:
    """The MATRIX_FEATURES flags this CPU reports in /proc/cpuinfo ([] where there is no such file)."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in MATRIX_FEATURES if name in flags]
    except OSError:
        pass
    return []


def cpu_has_bf16() -> bool:
    """True when oneDNN runs bf16 matmuls on this CPU's own instructions (AVX512-BF16, AMX), not emulated."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN's probe
        return False


def _say_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def effective_precision(precision: str, device: torch.device) -> str:
    """The precision a run on `device` computes in: --precision, except fp32 on a CPU that cannot do it fast.

    CPU bf16 without bf16 instructions, and CPU fp16 (no fp16 matmul units worth using), say so once and
    give fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type != "cpu" or precision == "fp32":
        return precision
    if precision == "fp16":
        _say_once("--precision fp16 is a GPU setting; on the CPU the run computes in fp32")
        return "fp32"
    if not cpu_has_bf16():
        _say_once("--precision bf16: this CPU has no bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 "
                  "would be emulated more slowly than fp32; the run computes in fp32")
        return "fp32"
    return "bf16"


def autocast_context(device: torch.device, precision: str):
    """bf16/fp16 autocast on GPU; a no-op for fp32 or on CPU (where bf16 runs a bf16 copy, Bf16Weights)."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A bf16 copy of a model (its torch.compile wrapper, if any, compiled again around the copy)."""
    plain = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule holds the module here
    twin = copy.deepcopy(plain).to(torch.bfloat16)
    return torch.compile(twin, dynamic=True) if plain is not model else twin


class Bf16Weights:
    """A bf16 copy of a float32 model for forward and backward; the float32 model keeps the master weights.

    After each backward, collect_gradients() adds the copy's bf16 gradients into the master's float32
    .grad (so accumulation over micro-steps happens in float32); after each optimizer step, refresh()
    rounds the updated master weights into the copy. Optimizer state and checkpoints are the master's.
    """

    def __init__(self, master: torch.nn.Module):
        self.master = master
        self.model = bf16_copy(master)
        plain = getattr(self.model, "_orig_mod", self.model)
        self._pairs = [(weight, twin) for weight, twin in zip(getattr(master, "_orig_mod", master).parameters(),
                                                              plain.parameters()) if weight.requires_grad]

    @classmethod
    def for_run(cls, model: torch.nn.Module, precision: str, device: torch.device) -> Bf16Weights | None:
        """The copy a CPU bf16 run trains through; None for every other run (fp32, GPU autocast, no bf16 CPU)."""
        if device.type != "cpu" or effective_precision(precision, device) != "bf16":
            return None
        return cls(model)

    def train(self, mode: bool = True) -> None:
        """Put the copy in training (or eval) mode."""
        self.model.train(mode)

    @torch.no_grad()
    def collect_gradients(self) -> None:
        """Add the copy's gradients into the master's float32 .grad and clear the copy's."""
        for weight, twin in self._pairs:
            if twin.grad is None:
                continue
            if weight.grad is None:
                weight.grad = twin.grad.to(torch.float32)
            else:
                weight.grad.add_(twin.grad)
            twin.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Round the master weights into the copy (after an optimizer step or a checkpoint load)."""
        for weight, twin in self._pairs:
            twin.copy_(weight)


def inference_model(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    """The model evaluation and generation run: a bf16 copy for CPU bf16 (where the CPU has it), else the model."""
    if device.type == "cpu" and effective_precision(precision, device) == "bf16":
        return bf16_copy(getattr(model, "_orig_mod", model)).eval()
    return model


def int8_engine() -> str:
    """torch's quantized engine for int8 inference: oneDNN where the CPU has int8 dot-product units (VNNI, AMX).

    oneDNN's dynamic int8 Linear ran 1.4x the x86 engine's speed on 512-row inputs and as fast on 16-row ones
    (docs/PERFORMANCE.md); elsewhere torch's default engine stays.
    """
    engines = torch.backends.quantized.supported_engines
    int8_units = {"amx_int8", "avx512_vnni", "avx_vnni"} & set(cpu_matrix_features())
    return "onednn" if "onednn" in engines and int8_units else torch.backends.quantized.engine
