"""script.py end to end, in-process: summary, saved models, user errors."""

import io
import json
import os
import zipfile

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from util import (
    assert_same_numbers,
    flag_list,
    make_record,
    records_as_lines,
    save_tiny_model,
    tiny_run_flags,
    tiny_tokenizer,
    write_archive,
)

import script
from assertdistill.core import schema

THESIS_METRIC_KEYS = {"avg_loss", "avg_hard_loss", "avg_soft_loss", "avg_inference_time_per_sample_ms",
                      "num_eval_samples"} | {f"avg_{m}_s_vs_{a}_script1" for a in ("t", "gt")
                                             for m in ("precision", "recall", "f1", "accuracy", "similarity_avg")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model_dir = save_tiny_model(str(root / "model"))
    vocab = len(tiny_tokenizer())
    train = records_as_lines([make_record(i, vocab, padded_length=512) for i in range(10)]) + ["{broken"]
    val = records_as_lines([make_record(100 + i, vocab, target_field="assertions", teacher_field="model_prediction")
                            for i in range(5)])
    flags = write_archive(str(root / "codet5.zip"), train, val, gzipped=True)
    flags.update({"--train_jsonl_is_gzipped": True, "--val_jsonl_is_gzipped": True})
    return root, model_dir, flags


def run(argv):
    return script.main(argv)


def test_run_writes_thesis_summary_and_loadable_models(workspace, tmp_path):
    _, model_dir, flags = workspace
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--epochs": 2, "--alpha": 0.5, "--save_best_model": True})
    assert run(argv) == 0
    out = tmp_path / "out"
    summary = json.loads((out / schema.SUMMARY_FILENAME).read_text())
    assert summary[schema.ARGS]["alpha_kl_loss_weight"] == 0.5 and summary[schema.ARGS]["temperature"] == 2.0
    assert THESIS_METRIC_KEYS <= set(summary[schema.FINAL_EVALUATION_METRICS])
    assert summary[schema.FINAL_EVALUATION_METRICS]["num_eval_samples"] == 5
    assert summary[schema.EPOCHS_TRAINED] == 2 and isinstance(summary[schema.TEACHER_MODEL_SIZE_MB], float)
    assert summary[schema.COMPRESSION_RATIO_MODEL_SIZE] == pytest.approx(1.0, abs=0.01)  # same model as teacher
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["skipped_by_reason"] == {"invalid_json": 1}
    assert "avg_accuracy_t_vs_gt_script1" in summary[schema.TEACHER_VS_GROUND_TRUTH_METRICS]
    history = [json.loads(line) for line in (out / schema.METRICS_FILENAME).read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history[-1]["eval"] == summary[schema.FINAL_EVALUATION_METRICS]
    for saved in (schema.FINAL_MODEL_DIRNAME, schema.BEST_MODEL_DIRNAME):
        model = AutoModelForSeq2SeqLM.from_pretrained(out / saved)
        tokenizer = AutoTokenizer.from_pretrained(out / saved)
        assert model.config.vocab_size == len(tokenizer) == len(tiny_tokenizer())


def test_same_seed_gives_same_metrics(workspace, tmp_path):
    _, model_dir, flags = workspace
    results = []
    for name in ("a", "b"):
        assert run(tiny_run_flags(tmp_path, model_dir, flags, **{"--output_dir": str(tmp_path / name)})) == 0
        summary = json.loads((tmp_path / name / schema.SUMMARY_FILENAME).read_text())
        metrics = summary[schema.FINAL_EVALUATION_METRICS]
        metrics.pop("avg_inference_time_per_sample_ms")
        results.append(metrics)
    assert_same_numbers(results[1], results[0])


def test_teacher_given_only_as_config_directory(workspace, tmp_path):
    _, model_dir, flags = workspace
    teacher = save_tiny_model(str(tmp_path / "teacher_config"), with_weights=False, d_model=64, d_ff=128)
    assert not any(name.endswith(".safetensors") for name in os.listdir(teacher))
    assert run(tiny_run_flags(tmp_path, model_dir, flags, **{"--teacher_model_name": teacher})) == 0
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert summary[schema.TEACHER_MODEL_SIZE_MB] > summary[schema.STUDENT_MODEL_SIZE_MB]
    assert 0 < summary[schema.COMPRESSION_RATIO_MODEL_SIZE] < 1


def test_unknown_teacher_offline_gives_na(workspace, tmp_path):
    _, model_dir, flags = workspace
    with pytest.warns(UserWarning, match="N/A"):
        code = run(tiny_run_flags(tmp_path, model_dir, flags, **{"--teacher_model_name": "nobody/no-such-model"}))
    assert code == 0
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert summary[schema.TEACHER_MODEL_SIZE_MB] == "N/A" and summary[schema.COMPRESSION_RATIO_MODEL_SIZE] == "N/A"


@pytest.mark.parametrize("override, message", [
    ({"--train_outer_zip_internal_path": "codet5/wrong.zip"}, "holds [codet5/distillation_data_training.jsonl.zip"),
    ({"--distillation_data_path": "/nonexistent/data.zip"}, "not found"),
    ({"--student_model_name": "nobody/no-such-model"}, "cannot load"),
    ({"--student_model_name": "nobody/no-such-model"}, "; pass --student_model_name with a local model directory"),
    ({"--train_inner_zip_jsonl_filename": "nope.jsonl"}, "'nope.jsonl' not found"),
])
def test_user_errors_are_one_line_and_exit_2(workspace, tmp_path, capsys, override, message):
    _, model_dir, flags = workspace
    assert run(tiny_run_flags(tmp_path, model_dir, flags, **override)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_refuses_to_clobber_a_finished_run(workspace, tmp_path, capsys):
    _, model_dir, flags = workspace
    argv = tiny_run_flags(tmp_path, model_dir, flags)
    assert run(argv) == 0
    before = (tmp_path / "out" / schema.SUMMARY_FILENAME).read_text()
    assert run(argv) == 2
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert (tmp_path / "out" / schema.SUMMARY_FILENAME).read_text() == before
    assert run(argv + ["--overwrite_output_dir"]) == 0


def test_invalid_flag_values_are_rejected():
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--alpha", "1.5"])
    assert exit_info.value.code == 2
    assert script.parse_args(["--alpha", "0.25"]).alpha_kl_loss_weight == 0.25


def summary_of(out):
    return json.loads((out / schema.SUMMARY_FILENAME).read_text())


def test_a_user_archive_without_model_flags_means_the_thesis_models(workspace, tmp_path, capsys):
    _, _, flags = workspace
    args = script.parse_args(["--distillation_data_path", flags["--distillation_data_path"]])
    assert (args.student_model_name, args.teacher_model_name) == ("Salesforce/codet5-small", "Salesforce/codet5-base")
    assert (args.learning_rate, args.epochs, args.student_max_src_length, args.student_max_tgt_length,
            args.eval_batch_size, args.num_beams) == (5e-5, 3, 1024, 512, 16, 4)  # not the demo's values
    code = run(["--distillation_data_path", flags["--distillation_data_path"], "--output_dir", str(tmp_path / "o")])
    assert code == 2  # offline: the thesis's student cannot be fetched
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "'Salesforce/codet5-small'" in err[-1] and "demo" not in err[-1]


def test_inner_paths_and_gzip_are_picked_from_the_published_layout(workspace, tmp_path, capsys):
    _, model_dir, flags = workspace  # gzipped JSONL members
    argv = tiny_run_flags(tmp_path, model_dir, {"--distillation_data_path": flags["--distillation_data_path"]})
    assert run(argv) == 0
    out = capsys.readouterr().out
    for name in ("--train_outer_zip_internal_path codet5/distillation_data_training.jsonl.zip",
                 "--train_inner_zip_jsonl_filename distillation_data_training.jsonl",
                 "--val_outer_zip_internal_path codet5/distillation_data_validation.jsonl.zip",
                 "--val_inner_zip_jsonl_filename distillation_data_validation.jsonl"):
        assert f"Picked {name} " in out
    assert "Detected --train_jsonl_is_gzipped" in out and "Detected --val_jsonl_is_gzipped" in out
    assert "item_count" not in out  # the headers' counts are right
    summary = summary_of(tmp_path / "out")
    assert summary[schema.ARGS]["train_outer_zip_internal_path"] == "codet5/distillation_data_training.jsonl.zip"
    assert summary[schema.ARGS]["val_jsonl_is_gzipped"] is True
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 10
    assert summary[schema.FINAL_EVALUATION_METRICS]["num_eval_samples"] == 5


def write_members(path, members):
    """An outer ZIP holding the given {name: bytes} members."""
    with zipfile.ZipFile(path, "w") as outer:
        for name, data in members.items():
            outer.writestr(name, data)
    return str(path)


def inner_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as inner:
        for name, data in members.items():
            inner.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("members, override, message", [
    ({"a/distillation_data_training.jsonl.zip": b"", "b/distillation_data_training.jsonl.zip": b"",
      "a/distillation_data_validation.jsonl.zip": b""}, {},
     "cannot pick the training data in {path} (<name>/distillation_data_training.jsonl.zip): 2 fit "
     "(a/distillation_data_training.jsonl.zip, b/distillation_data_training.jsonl.zip) among "
     "[a/distillation_data_training.jsonl.zip, b/distillation_data_training.jsonl.zip, "
     "a/distillation_data_validation.jsonl.zip]; give --train_outer_zip_internal_path"),
    ({"train.zip": b"", "notes.txt": b""}, {},
     "cannot pick the training data in {path} (<name>/distillation_data_training.jsonl.zip): none fits among "
     "[train.zip, notes.txt]; give --train_outer_zip_internal_path"),
    ({"t.zip": inner_zip({"a.jsonl": b"{}", "b.jsonl.gz": b"", "README": b""})},
     {"--train_outer_zip_internal_path": "t.zip"},
     "cannot pick the JSONL member of t.zip (*.jsonl or *.jsonl.gz): 2 fit (a.jsonl, b.jsonl.gz) among "
     "[a.jsonl, b.jsonl.gz, README]; give --train_inner_zip_jsonl_filename"),
])
def test_members_that_cannot_be_picked_are_listed(tmp_path, capsys, members, override, message):
    path = write_members(tmp_path / "data.zip", members)
    argv = flag_list({"--distillation_data_path": path, "--output_dir": str(tmp_path / "o"), **override})
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: " + message.format(path=path)]


def count_note(flags, split, item_count, records):
    return (f"Note: {flags['--distillation_data_path']}:codet5/distillation_data_{split}.jsonl.zip/"
            f"distillation_data_{split}.jsonl: the header's item_count is {item_count} but the file holds "
            f"{records} records; using {records}")


# Headers of the training (10 records) and validation (3 records) files: 0, too small, too large, right.
@pytest.mark.parametrize("train_count, val_count", [(0, 30), (2, 3)])
def test_the_record_count_comes_from_the_data_not_the_header(workspace, tmp_path, capsys, train_count, val_count):
    _, model_dir, _ = workspace
    vocab = len(tiny_tokenizer())
    headers = [json.dumps({"header": {"dataset_type": split, "item_count": count}})
               for split, count in (("training", train_count), ("validation", val_count))]
    train = records_as_lines([make_record(i, vocab) for i in range(10)])
    val = records_as_lines([make_record(100 + i, vocab) for i in range(3)])
    flags = write_archive(str(tmp_path / "d.zip"), [headers[0]] + train, [headers[1]] + val, header=False)
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--epochs": 2, "--learning_rate": 1e-3, "--num_beams": 1})
    assert run(argv) == 0
    out = capsys.readouterr().out
    expected = [count_note(flags, "training", train_count, 10)]
    expected += [count_note(flags, "validation", val_count, 3)] if val_count != 3 else []
    assert [line for line in out.splitlines() if "item_count" in line] == expected
    # 10 records at batch 4: 3 optimizer steps per epoch, 6 in all, no warmup (int(0.1 * 6) = 0).
    assert "Training 2 epochs, 6 optimizer steps" in out
    history = [json.loads(line) for line in (tmp_path / "out" / schema.METRICS_FILENAME).read_text().splitlines()]
    assert [entry["train"]["optimizer_steps"] for entry in history] == [3, 3]
    assert history[0]["train"]["learning_rate"] == pytest.approx(1e-3 * 3 / 6)  # half-way down the linear decay
    assert history[1]["train"]["learning_rate"] == 0.0
    summary = summary_of(tmp_path / "out")
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 10
    assert summary[schema.FINAL_EVALUATION_METRICS]["num_eval_samples"] == 3


def test_dataloader_workers_give_the_same_run_as_none(workspace, tmp_path):
    _, model_dir, flags = workspace
    summaries = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--output_dir": str(out), "--eval_batch_size": 2,
                                                             "--num_dataloader_workers": workers})
        assert run(argv) == 0
        summaries.append(summary_of(out))
    for summary in summaries:
        summary[schema.FINAL_EVALUATION_METRICS].pop("avg_inference_time_per_sample_ms")
        for entry in summary[schema.TRAINING_HISTORY]:
            entry.pop("elapsed_seconds")
            entry["eval"].pop("avg_inference_time_per_sample_ms")
    assert summaries[1][schema.FINAL_EVALUATION_METRICS]["num_eval_samples"] == 5
    assert summaries[1][schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 10
    for key in (schema.FINAL_EVALUATION_METRICS, schema.DATA_COUNTS, schema.TRAINING_HISTORY):
        assert_same_numbers(summaries[1][key], summaries[0][key], key)


@pytest.mark.parametrize("metric", ["avg_loss", "avg_accuracy_s_vs_gt_script1"])
def test_best_model_selection_keeps_the_lowest_loss_and_the_highest_other_metric(metric):
    from assertdistill.distill.run import is_better

    lower_is_better = metric == "avg_loss"
    assert is_better(metric, 0.5, None)  # the first evaluation is the best so far
    assert is_better(metric, 0.4, 0.5) is lower_is_better and is_better(metric, 0.6, 0.5) is not lower_is_better
    assert not is_better(metric, 0.5, 0.5)  # a tie keeps the earlier model
