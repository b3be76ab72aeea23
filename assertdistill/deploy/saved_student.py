"""Load a student saved by a run (final_student_model/, best_student_model/) or its int8 export, with the run's flags."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

import torch

from ..core.schema import ARGS, SUMMARY_FILENAME, TRAINING_ARGS_BEST_FILENAME, TRAINING_ARGS_FINAL_FILENAME
from ..model.attention import set_attention
from ..model.precision import effective_precision, int8_engine

# torch: float32 weights; int8: torch dynamic int8 (Linear weights int8, activations quantized per call, on the
# CPU's int8 dot-product instructions through oneDNN where it has them); bf16: bf16 weights where the CPU has
# bf16 instructions (else float32, said once)
BACKENDS = ("torch", "int8", "bf16")
INT8_MARKER = "int8_export.json"  # in an export directory: how the weights were quantized
INT8_WEIGHTS = "int8_state_dict.pt"  # the quantized model's state_dict (torch.save)
DEFAULT_NUM_BEAMS = 4  # the thesis's --num_beams, when the run's flags are not found


class SavedStudentError(ValueError):
    """A directory that does not hold a saved student (or its export)."""


@dataclass
class SavedStudent:
    """A loaded student, its tokenizer and the flags of the run that saved it ({} when none were found)."""

    model: torch.nn.Module
    tokenizer: object
    flags: dict
    flags_source: str | None  # the file the flags came from
    backend: str

    def setting(self, name: str, default):
        """A run flag's value, else `default`."""
        value = self.flags.get(name)
        return default if value is None else value


def run_flags(model_dir: str) -> tuple[dict, str | None]:
    """The saved run's flags: training_args_*.json in the model dir, else the run's summary next to it."""
    candidates = [os.path.join(model_dir, name) for name in (TRAINING_ARGS_FINAL_FILENAME, TRAINING_ARGS_BEST_FILENAME)]
    candidates.append(os.path.join(os.path.dirname(os.path.abspath(model_dir)), SUMMARY_FILENAME))
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as stream:
                content = json.load(stream)
        except (OSError, ValueError) as error:
            raise SavedStudentError(f"cannot read the run's flags from {path}: {error}") from None
        flags = content.get(ARGS, content) if path.endswith(SUMMARY_FILENAME) else content
        if isinstance(flags, dict):
            return flags, path
    return {}, None


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """torch's dynamic int8 quantization of every Linear (lm_head included); embeddings and norms stay float32."""
    from torch.ao.quantization import quantize_dynamic

    torch.backends.quantized.engine = int8_engine()  # packs the weights for, and runs, that engine's kernels
    with warnings.catch_warnings():  # torch.ao's deprecation notice (it points to torchao); the kernels are current
        warnings.simplefilter("ignore")
        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def export_int8(student: SavedStudent, output_dir: str) -> str:
    """Write an int8 export (config, tokenizer, quantized state_dict, the run's flags); returns the weights' path."""
    if student.backend != "torch":
        raise SavedStudentError(f"export from the float32 student, not from a {student.backend} one")
    os.makedirs(output_dir, exist_ok=True)
    quantized = quantize_int8(student.model)
    weights = os.path.join(output_dir, INT8_WEIGHTS)
    torch.save(quantized.state_dict(), weights)
    student.model.config.save_pretrained(output_dir)
    student.tokenizer.save_pretrained(output_dir)
    marker = {"method": "torch.ao.quantization.quantize_dynamic", "dtype": "qint8", "modules": "torch.nn.Linear",
              "torch": torch.__version__, "engine": torch.backends.quantized.engine, "flags": student.flags}
    with open(os.path.join(output_dir, INT8_MARKER), "w", encoding="utf-8") as stream:
        json.dump(marker, stream, indent=2)
    return weights


def load_saved_student(model_dir: str, backend: str = "torch") -> SavedStudent:
    """The student in model_dir on the CPU in eval mode, with the suite's attention; SavedStudentError if it is not one."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    if backend not in BACKENDS:
        raise SavedStudentError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if not os.path.isdir(model_dir):
        raise SavedStudentError(f"{model_dir} is not a directory")
    exported = os.path.isfile(os.path.join(model_dir, INT8_MARKER))
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise SavedStudentError(f"{model_dir} is not a saved student (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if exported:
            with open(os.path.join(model_dir, INT8_MARKER), encoding="utf-8") as stream:
                flags = json.load(stream).get("flags") or {}
            flags_source = os.path.join(model_dir, INT8_MARKER)
            model = quantize_int8(AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(model_dir)))
            model.load_state_dict(torch.load(os.path.join(model_dir, INT8_WEIGHTS), weights_only=True))
            backend = "int8"
        else:
            if not any(name.endswith((".safetensors", ".bin")) for name in os.listdir(model_dir)):
                raise SavedStudentError(f"{model_dir} is not a saved student (no weights)")
            flags, flags_source = run_flags(model_dir)
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if isinstance(error, SavedStudentError):
            raise
        raise SavedStudentError(f"{model_dir} is not a saved student: {str(error).splitlines()[0]}") from None
    if not getattr(model.config, "is_encoder_decoder", False):
        raise SavedStudentError(f"{model_dir} holds a {model.config.model_type} model, not a seq2seq student")
    model.eval()
    set_attention(model, "auto", torch.device("cpu"))  # evaluation's attention: beams share cross-attention reads
    if backend == "int8" and not exported:
        model = quantize_int8(model)
    if backend == "bf16" and not exported and effective_precision("bf16", torch.device("cpu")) == "bf16":
        model = model.to(torch.bfloat16)
    return SavedStudent(model, tokenizer, flags, flags_source, backend)
