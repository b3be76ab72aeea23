"""The speed-ups keep behaviour: fast member reader, fast record JSON, fused loss, --compile, bench.py."""

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
import torch

from assertdistill import archive as archive_module
from assertdistill.archive import DataError, locate_inner_zip, open_jsonl_member
from assertdistill.codec import CodecError, HexBytes, compress_logits, decode_quantized, dequantize_codes
from assertdistill.dataset import ArchiveSpec, DistillationStream, collate
from assertdistill.forward import batch_losses
from assertdistill.loss import DistillationLoss
from assertdistill.records import InputEncoder, loads_record_line
from benchmarks import runner, worker
from benchmarks.data import write_bench_archive
from benchmarks.thesis import ThesisDataset, thesis_loader, thesis_losses
from util import make_record, records_as_lines, tiny_t5, tiny_tokenizer, write_archive


def member_lines(flags, split="train"):
    location = locate_inner_zip(flags["--distillation_data_path"], flags[f"--{split}_outer_zip_internal_path"])
    with open_jsonl_member(location, flags[f"--{split}_inner_zip_jsonl_filename"], False, "label") as stream:
        return list(iter(stream.readline, b""))


def zipfile_lines(flags, split="train"):
    with zipfile.ZipFile(flags["--distillation_data_path"]) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read(flags[f"--{split}_outer_zip_internal_path"])))
        return inner.read(flags[f"--{split}_inner_zip_jsonl_filename"]).splitlines(keepends=True)


@pytest.mark.parametrize("chunk_bytes", [(7, 13), (1 << 18, 1 << 20)])  # tiny chunks split lines everywhere
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_member_reader_gives_zipfiles_lines(tmp_path, monkeypatch, chunk_bytes, compression):
    monkeypatch.setattr(archive_module, "RAW_CHUNK_BYTES", chunk_bytes[0])
    monkeypatch.setattr(archive_module, "OUT_CHUNK_BYTES", chunk_bytes[1])
    lines = records_as_lines([make_record(i, 50, padded_length=40) for i in range(3)]) + ["", "  ", "{}"]
    flags = write_archive(str(tmp_path / "d.zip"), lines, [], inner_compression=compression)
    assert member_lines(flags) == zipfile_lines(flags)


def test_member_reader_reports_damage_as_zipfile_does(tmp_path):
    lines = records_as_lines([make_record(i, 50, padded_length=40) for i in range(3)])
    flags = write_archive(str(tmp_path / "d.zip"), lines, [])
    path = tmp_path / "d.zip"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as outer, zipfile.ZipFile(io.BytesIO(outer.read(
            flags["--train_outer_zip_internal_path"]))) as inner:
        member = inner.infolist()[0]
        inner_offset = data.find(outer.read(flags["--train_outer_zip_internal_path"]))
        middle = inner_offset + member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    data[middle] ^= 0xFF  # one flipped byte in the middle of the deflated JSONL
    path.write_bytes(bytes(data))
    spec = ArchiveSpec(str(path), flags["--train_outer_zip_internal_path"], flags["--train_inner_zip_jsonl_filename"])
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(DistillationStream(spec, InputEncoder(tiny_tokenizer(), 64, 32), 2, True))


def large_line(**extra):
    record = make_record(0, 300, padded_length=200)  # ~120 KB of hex: above LARGE_STRING_BYTES
    record["focal_file"] = 'String s = "a \\"quoted\\" word";\n\\\\ done "' + '"' * 3
    record.update(extra)
    return json.dumps(record).encode()


@pytest.mark.parametrize("line", [
    large_line(),
    large_line(model_type="\u00e9t\u00e9 \ud83d\ude00"),
    large_line(extra=["x" * 70000]),  # a second large string, in a list
    large_line(extra="\\u0000large string 0\\u0000"),  # looks like a placeholder once decoded
    large_line(extra={"\u0000large string 0\u0000": 1}),
    json.dumps(["y" * 70000, {"z": "w" * 70000}]).encode(),
    b'{"a": "' + b"0" * 70000 + b'\\n"}',  # an escape inside: json.loads does it
    b'{"a": "' + b"0" * 70000 + b'", "b": 1}\r\n',
])
def test_loads_record_line_equals_json_loads(line):
    assert loads_record_line(line) == json.loads(line)


@pytest.mark.parametrize("line", [
    b'{"a": "' + b"0" * 70000 + b'", "b": }',  # error after the large string
    b'{"a": "' + b"0" * 70000,  # unterminated
    b'{"a": "' + b"0" * 70000 + b'"} trailing',
])
def test_loads_record_line_raises_json_loads_error(line):
    with pytest.raises(ValueError) as expected:
        json.loads(line)
    with pytest.raises(ValueError, match=str(expected.value).replace("(", r"\(").replace(")", r"\)")):
        loads_record_line(line)


def reference_losses(loss_fn, logits, labels, codes, scale, zero, mask):
    hard = loss_fn.hard_loss(logits, labels)
    soft = torch.zeros(())
    if codes is not None and loss_fn.alpha > 0:
        teacher = dequantize_codes(codes, scale[:, None], zero[:, None])
        soft = loss_fn.soft_loss_from_rows(logits[mask], teacher, mask.sum())
    return loss_fn.combine(hard, soft), hard, soft


@pytest.mark.parametrize("temperature, alpha, teacher_vocab, teacher", [
    (2.0, 0.7, 40, True), (1.0, 0.0, 40, True), (0.5, 1.0, 40, True), (4.0, 0.3, 33, True), (2.0, 0.5, 40, False)])
def test_fused_loss_matches_reference_values_and_gradients(temperature, alpha, teacher_vocab, teacher):
    generator = torch.Generator().manual_seed(int(temperature * 10 + alpha * 100))
    logits = torch.randn(3, 9, 40, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (3, 9), generator=generator)
    labels[0, 5:] = -100
    labels[2, 2:] = -100
    mask = labels != -100
    mask[1, 6:] = False  # a teacher block shorter than the target
    count = int(mask.sum())
    codes = torch.randint(0, 256, (count, teacher_vocab), generator=generator, dtype=torch.uint8) if teacher else None
    scale, zero = torch.rand(count, generator=generator) * 0.1 + 0.01, torch.rand(count, generator=generator) * 200
    loss_fn = DistillationLoss(temperature, alpha)
    with pytest.warns(UserWarning, match="vocabulary") if teacher and teacher_vocab != 40 and alpha else \
            contextlib.nullcontext():
        fused = loss_fn.fused(logits, labels, codes, scale, zero, mask)
    expected = reference_losses(loss_fn, logits, labels, codes, scale, zero, mask)
    for got, want in zip(fused, expected):
        assert torch.allclose(got.double(), want.double(), rtol=1e-5, atol=1e-7)
    assert not fused[1].requires_grad and not fused[2].requires_grad  # logged, not backpropagated
    for scale_by in (1.0, 0.25):  # 0.25: gradient accumulation divides the loss
        (got,) = torch.autograd.grad(fused[0] * scale_by if scale_by != 1.0 else fused[0], logits, retain_graph=True)
        (want,) = torch.autograd.grad(expected[0] * scale_by, logits, retain_graph=True)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)


def test_fused_loss_without_gradient_keeps_no_buffer():
    logits = torch.randn(2, 5, 30)
    labels = torch.randint(0, 30, (2, 5))
    with torch.no_grad():
        total, hard, _ = DistillationLoss(2.0, 0.0).fused(logits, labels, None, None, None, None)
    assert torch.allclose(hard, torch.nn.functional.cross_entropy(logits.reshape(-1, 30), labels.reshape(-1)))
    assert torch.allclose(total, hard)


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
    assert not [name for name in os.listdir(tmp_path) if name.startswith("assertdistill_bench_")]  # cleaned up


def test_compile_flag_trains_with_a_compiled_student(tmp_path, monkeypatch):
    """--compile wires torch.compile into training; the eager backend keeps this test fast on CPU."""
    import script
    from util import save_tiny_model, tiny_run_flags

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
    summary = json.loads((tmp_path / "out" / "distillation_summary.json").read_text())
    assert np.isfinite(summary["training_history"][0]["train"]["loss"])


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


def test_collate_and_batch_losses_unchanged_by_fused_path():
    """batch_losses == the unfused formula on a collated batch (what Trainer and evaluate see)."""
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    rng = np.random.default_rng(1)
    samples = []
    from assertdistill.dataset import Sample

    for index, (source, target) in enumerate([(20, 5), (9, 8)]):
        compressed = compress_logits(rng.normal(size=(1, 12, vocab)).astype(np.float32), bits=8)
        samples.append(Sample(list(rng.integers(5, vocab, source)), list(rng.integers(5, vocab, target)),
                              decode_quantized(compressed, max_positions=target), "gt", "t", "['t']", index))
    batch = collate(samples, tokenizer.pad_token_id)
    model = tiny_t5(tokenizer).eval()
    loss_fn = DistillationLoss(2.0, 0.7)
    total, hard, soft = batch_losses(model, batch, loss_fn)
    from assertdistill.forward import student_logits_for

    logits = student_logits_for(model, batch)
    expected = reference_losses(loss_fn, logits, batch["labels"], batch["teacher_values"], batch["teacher_scale"],
                                batch["teacher_zero_point"], batch["teacher_position_mask"])
    for got, want in zip((total, hard, soft), expected):
        assert torch.allclose(got, want, rtol=1e-5)
    total.backward()
    fused_gradients = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected[0].backward()
    for got, want in zip(fused_gradients, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


ALLOCATOR_PROBE = ("from assertdistill.allocator import keep_freed_memory; "
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


def test_prefetched_keeps_order_reraises_in_place_and_closes_on_early_stop():
    def numbers(fail_at=None, closed=None):
        try:
            for number in range(50):
                if number == fail_at:
                    raise ValueError("broken at 7")
                yield number
        finally:
            if closed is not None:
                closed.append(True)

    assert list(archive_module.prefetched(numbers(), depth=2)) == list(range(50))
    seen = []
    with pytest.raises(ValueError, match="broken at 7"):
        for number in archive_module.prefetched(numbers(fail_at=7)):
            seen.append(number)
    assert seen == list(range(7))
    closed = []
    reader = archive_module.prefetched(numbers(closed=closed))
    assert next(reader) == 0
    reader.close()  # the consumer stops early: the thread ends and closes its source
    assert closed == [True] and not any(t.name == "prefetch-lines" for t in threading.enumerate())


def test_lazy_hex_keeps_the_logits_in_the_line_and_decodes_the_same():
    logits = np.random.default_rng(0).normal(size=(1, 40, 3000)).astype(np.float32)
    compressed = compress_logits(logits, bits=8)
    line = json.dumps({"focal_file": "x" * 70000, "compressed_logits": compressed}).encode()
    eager, lazy = loads_record_line(line), loads_record_line(line, lazy_hex=True)
    hex_data = lazy["compressed_logits"]["data_encoded"]["data"]
    assert isinstance(hex_data, HexBytes) and str(hex_data) == eager["compressed_logits"]["data_encoded"]["data"]
    assert lazy["focal_file"] == "x" * 70000  # other large strings are still str
    for positions in (None, 7):
        assert np.array_equal(decode_quantized(lazy["compressed_logits"], positions).values,
                              decode_quantized(eager["compressed_logits"], positions).values)
    broken = json.loads(line)
    broken["compressed_logits"]["data_encoded"]["data"] = "zz" + compressed["data_encoded"]["data"][2:]
    with pytest.raises(CodecError, match="not valid hex"):
        decode_quantized(loads_record_line(json.dumps(broken).encode(), lazy_hex=True)["compressed_logits"])


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_script_trains_and_evaluates_in_every_precision(tmp_path, precision):
    import script
    from util import save_tiny_model, tiny_run_flags

    vocab = len(tiny_tokenizer())
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(6)]),
                          records_as_lines([make_record(9 + i, vocab) for i in range(3)]))
    model_dir = save_tiny_model(str(tmp_path / "model"))
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--precision": precision})) == 0
    summary = json.loads((tmp_path / "out" / "distillation_summary.json").read_text())
    assert summary["environment"]["device"].startswith("cuda")
    assert np.isfinite(summary["training_history"][0]["train"]["loss"])
    assert np.isfinite(summary["training_history"][0]["eval"]["avg_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
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
