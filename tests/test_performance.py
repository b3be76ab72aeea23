"""The speed-ups keep behaviour: --compile, bench.py and its thesis recreation, allocator tuning, the GPU check."""

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from util import make_record, records_as_lines, tiny_t5, tiny_tokenizer, write_archive

from assertdistill.codec.codec import decode_quantized
from assertdistill.core import schema
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.encoding import InputEncoder
from assertdistill.distill.forward import batch_losses
from assertdistill.distill.loss import DistillationLoss
from benchmarks import runner, worker
from benchmarks.data import write_bench_archive
from benchmarks.thesis import ThesisDataset, thesis_loader, thesis_losses


def test_thesis_recreation_gives_the_suites_loss(tmp_path):
    """bench's thesis pipeline (padding to the maximum, full float32 blocks, F.kl_div) == the suite's."""
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(
        [make_record(i, vocab, padded_length=48) for i in range(3)]), [])
    names = (flags["--train_outer_zip_internal_path"], flags["--train_inner_zip_jsonl_filename"])
    thesis = ThesisDataset(str(tmp_path / "d.zip"), *names, tokenizer, max_source_length=96, max_target_length=48)
    assert len(thesis) == 3
    thesis_batch = next(iter(thesis_loader(thesis, 3)))
    assert thesis_batch["teacher_logits"].shape == (3, 48, vocab) and thesis_batch["labels"].shape == (3, 48)
    stream = DistillationStream(ArchiveSpec(str(tmp_path / "d.zip"), *names), InputEncoder(tokenizer, 96, 48), 3,
                                need_logits=True)
    suite_batch = next(iter(stream))
    assert suite_batch["labels"].shape[1] < 48  # padded to the longest only
    model = tiny_t5(tokenizer).eval()
    with torch.no_grad():
        expected = thesis_losses(model, thesis_batch, 2.0, 0.7)
        got = batch_losses(model, suite_batch, DistillationLoss(2.0, 0.7))
    for suite_value, thesis_value in zip(got, expected):
        assert abs(float(suite_value) - float(thesis_value)) <= 1e-4 * abs(float(thesis_value))


def test_bench_archive_is_a_valid_nested_zip(tmp_path):
    archive = write_bench_archive(str(tmp_path / "b.zip"), tiny_tokenizer(), 3, num_blocks=2, num_val_records=1,
                                  vocab_size=300, positions=96)
    inner_path, jsonl_name = archive.member()
    with zipfile.ZipFile(archive.path) as outer:
        assert outer.getinfo(inner_path).compress_type == zipfile.ZIP_STORED
        with zipfile.ZipFile(io.BytesIO(outer.read(inner_path))) as inner:
            assert inner.testzip() is None
            lines = inner.read(jsonl_name).splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["header"]["item_count"] == 3
    record = json.loads(lines[1])
    assert decode_quantized(record["compressed_logits"]).values.shape == (96, 300)
    assert 20 <= len(tiny_tokenizer()(record["original_target"])["input_ids"]) <= 96
    assert archive.jsonl_bytes == sum(len(line) + 1 for line in lines)


def in_process_worker(task, archive, tokenizer, **options):
    argv = [task] + (["--archive", archive, "--tokenizer", tokenizer] if archive else [])
    for name, value in options.items():
        argv += [f"--{name}"] + ([str(item) for item in value] if isinstance(value, list) else
                                 [str(value)] if value != "" else [])
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert worker.main(argv) == 0
    return json.loads(output.getvalue().strip().splitlines()[-1])


def test_bench_smoke_prints_the_table_and_the_speedup_last(tmp_path, monkeypatch, capsys):
    """bench.py's whole flow on a very small plan, workers in this process (the real run uses subprocesses)."""
    monkeypatch.setattr(runner, "run_worker", in_process_worker)
    monkeypatch.setattr(worker, "matmul_flops", lambda **_: 1e9)
    monkeypatch.setitem(runner.PLANS, "tiny-only", runner.Plan(
        ["tiny"], records=4, batch_size=2, steps=1, val_records=3, eval_batch_size=2, blocks=1, vocab_size=2048,
        positions=64, max_source=64))
    import bench

    assert bench.main(["--tiny-only", "--workdir", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split("=")[0] for line in lines[-4:]]
    assert names == ["eval_speedup", "end_to_end_speedup", "mfu", "speedup_vs_thesis"]
    assert all(float(line.split("=")[1]) > 0 for line in lines[-4:])
    assert any("MFU" in line for line in lines) and any(": OK" in line for line in lines)
    assert sum("same generated text for 3/3 records (OK)" in line for line in lines) == 2  # beam 4 and beam 1
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["check_tiny"]["max_relative_difference"] <= runner.LOSS_TOLERANCE
    for beams in ("4", "1"):
        thesis, suite = (results[f"eval_tiny_{name}"][beams] for name in ("thesis", "suite"))
        assert thesis["records"] == suite["records"] == 3
        assert np.allclose(thesis["losses"], suite["losses"], rtol=1e-4)
    train = {name: results[f"train_tiny_{name}"] for name in ("thesis", "suite")}
    assert train["thesis"]["executed_flops_per_sample"] > train["suite"]["executed_flops_per_sample"]  # padding
    assert any("computed work per sample" in line for line in lines)
    deploy = results["deploy"]["beams"]  # benchmarks/deploy.py's per-method figures, their name=value lines
    assert [deploy[beams]["suite_same_text_as_generate"] for beams in ("1", "4")] == [3, 3]
    assert {"tiny_decoder_speedup_beam4", "tiny_int8_size_ratio"} <= {line.split("=")[0] for line in lines}
    assert any(line.startswith("CPU matrix features: ") for line in lines)
    assert lines[-5].startswith("matrix_features=") or lines[-5].startswith("bf16_")
    if results["plan"]["precision"] == "bf16":  # a CPU with bf16 instructions: the bf16 step of the same run
        figures = {line.split("=")[0]: float(line.split("=")[1]) for line in lines if line.startswith("bf16_")}
        assert set(figures) == {"bf16_train_speedup", "bf16_speedup_vs_thesis", "bf16_eval_speedup", "bf16_mfu"}
        assert results["figures"]["bf16_train_speedup"] == pytest.approx(
            results["train_tiny_suite_bf16"]["samples_per_s"] / train["suite"]["samples_per_s"])
    assert not [name for name in os.listdir(tmp_path) if name.startswith("assertdistill_bench_")]  # cleaned up


def test_compile_flag_trains_with_a_compiled_student(tmp_path, monkeypatch):
    """--compile wires torch.compile into training; the eager backend keeps this test fast on CPU."""
    from util import save_tiny_model, tiny_run_flags

    import script

    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **options):
        compiled.append(options)
        return real_compile(model, backend="eager", **options)

    monkeypatch.setattr(torch, "compile", eager_compile)
    vocab = len(tiny_tokenizer())
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(4)]),
                          records_as_lines([make_record(9, vocab)]))
    model_dir = save_tiny_model(str(tmp_path / "model"))
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--compile": True, "--num_beams": 1})
    assert script.main(argv) == 0
    assert compiled == [{"dynamic": True}]
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert np.isfinite(summary[schema.TRAINING_HISTORY][0]["train"]["loss"])


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS is read from /proc")
def test_peak_rss_window_can_be_reset():
    # In a fresh process: in this one, memory kept by earlier tests' allocations can pin the peak.
    code = ("import sys; sys.path.insert(0, %r); import numpy as np\n"
            "from benchmarks.measure import peak_rss_mb, reset_peak_rss\n"
            "block = np.ones(64 << 20, dtype=np.uint8)  # 64 MB\n"
            "high = peak_rss_mb(); del block; reset_peak_rss(); print(high, peak_rss_mb())"
            % os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    high, after_reset = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout.split())
    assert after_reset < high


ALLOCATOR_PROBE = ("from assertdistill.runtime.allocator import keep_freed_memory; "
                   "print(keep_freed_memory(), keep_freed_memory())")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_allocator_tuning_applies_once_and_can_be_turned_off():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = dict(os.environ, PYTHONPATH=root)
    environment.pop("ASSERTDISTILL_MALLOC_TUNING", None)
    tuned = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE], env=environment, capture_output=True, text=True)
    off = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE], capture_output=True, text=True,
                         env=dict(environment, ASSERTDISTILL_MALLOC_TUNING="0"))
    assert tuned.stdout.split() == ["True", "True"] and off.stdout.split() == ["False", "False"]


def test_gpu_check_without_cuda_says_so_in_one_line_and_succeeds():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu_check.sh")
    dry_run = subprocess.run(["bash", script, "--dry-run"], capture_output=True, text=True)
    assert dry_run.returncode == 0 and "bench.py --device cuda" in dry_run.stdout
    completed = subprocess.run(["bash", script], capture_output=True, text=True,
                               env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable))
    assert completed.returncode == 0
    assert completed.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device available (torch.cuda.is_available() is False); nothing to check"]


def test_bench_refuses_cuda_options_it_cannot_honour(capsys):
    import bench

    with pytest.raises(SystemExit):
        bench.parse_args(["--bf16"])  # bf16 autocast is a GPU setting
    if not torch.cuda.is_available():
        assert bench.main(["--device", "cuda", "--tiny-only"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_stop_at_target_length_ends_every_beam_at_its_records_length():
    from transformers import LogitsProcessorList

    from benchmarks.evaluation import StopAtTargetLength

    model = tiny_t5(tiny_tokenizer()).eval()
    eos = model.config.eos_token_id
    input_ids = torch.randint(4, 300, (3, 12))
    lengths = torch.tensor([5, 9, 3])  # tokens to generate, EOS included
    for num_beams in (1, 4):
        with torch.no_grad():
            ids = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_length=40,
                                 num_beams=num_beams, early_stopping=True,
                                 logits_processor=LogitsProcessorList([StopAtTargetLength(lengths, num_beams, eos)]))
        generated = ids[:, 1:]  # after the decoder start token
        assert [int((row == eos).nonzero()[0]) + 1 for row in generated] == lengths.tolist()


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_script_trains_and_evaluates_in_every_precision(tmp_path, precision):
    from util import save_tiny_model, tiny_run_flags

    import script

    vocab = len(tiny_tokenizer())
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(6)]),
                          records_as_lines([make_record(9 + i, vocab) for i in range(3)]))
    model_dir = save_tiny_model(str(tmp_path / "model"))
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--precision": precision})) == 0
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert summary[schema.ENVIRONMENT]["device"].startswith("cuda")
    assert np.isfinite(summary[schema.TRAINING_HISTORY][0]["train"]["loss"])
    assert np.isfinite(summary[schema.TRAINING_HISTORY][0]["eval"]["avg_loss"])


@pytest.mark.cuda
def test_cuda_bench_smoke_runs_both_pipelines_on_the_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_worker", in_process_worker)
    monkeypatch.setitem(runner.PLANS, "tiny-only", runner.Plan(
        ["tiny"], records=4, batch_size=2, steps=1, val_records=3, eval_batch_size=2, blocks=1, vocab_size=2048,
        positions=64, max_source=64))
    import bench

    assert bench.main(["--tiny-only", "--device", "cuda", "--bf16", "--workdir", str(tmp_path),
                       "--json", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("speedup_vs_thesis=")
    assert sum("same generated text for 3/3 records (OK)" in line for line in lines) == 2
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["train_tiny_suite"]["peak_device_mb"] > 0 and results["train_tiny_suite_bf16"]["peak_device_mb"] > 0
