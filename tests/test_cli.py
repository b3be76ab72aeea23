"""script.py end to end, in-process: summary, saved models, user errors."""

import json
import os

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import script
from util import make_record, records_as_lines, save_tiny_model, tiny_run_flags, tiny_tokenizer, write_archive

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
    summary = json.loads((out / "distillation_summary.json").read_text())
    assert summary["args"]["alpha_kl_loss_weight"] == 0.5 and summary["args"]["temperature"] == 2.0
    assert THESIS_METRIC_KEYS <= set(summary["final_evaluation_metrics"])
    assert summary["final_evaluation_metrics"]["num_eval_samples"] == 5
    assert summary["epochs_trained"] == 2 and isinstance(summary["teacher_model_size_mb"], float)
    assert summary["compression_ratio_model_size"] == pytest.approx(1.0, abs=0.01)  # same model as teacher
    assert summary["data_counts"]["training"]["skipped_by_reason"] == {"invalid_json": 1}
    assert "avg_accuracy_t_vs_gt_script1" in summary["teacher_vs_ground_truth_metrics"]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history[-1]["eval"] == summary["final_evaluation_metrics"]
    for saved in ("final_student_model", "best_student_model"):
        model = AutoModelForSeq2SeqLM.from_pretrained(out / saved)
        tokenizer = AutoTokenizer.from_pretrained(out / saved)
        assert model.config.vocab_size == len(tokenizer) == len(tiny_tokenizer())


def test_same_seed_gives_same_metrics(workspace, tmp_path):
    _, model_dir, flags = workspace
    results = []
    for name in ("a", "b"):
        assert run(tiny_run_flags(tmp_path, model_dir, flags, **{"--output_dir": str(tmp_path / name)})) == 0
        summary = json.loads((tmp_path / name / "distillation_summary.json").read_text())
        metrics = summary["final_evaluation_metrics"]
        metrics.pop("avg_inference_time_per_sample_ms")
        results.append(metrics)
    assert results[0] == results[1]


def test_teacher_given_only_as_config_directory(workspace, tmp_path):
    _, model_dir, flags = workspace
    teacher = save_tiny_model(str(tmp_path / "teacher_config"), with_weights=False, d_model=64, d_ff=128)
    assert not any(name.endswith(".safetensors") for name in os.listdir(teacher))
    assert run(tiny_run_flags(tmp_path, model_dir, flags, **{"--teacher_model_name": teacher})) == 0
    summary = json.loads((tmp_path / "out" / "distillation_summary.json").read_text())
    assert summary["teacher_model_size_mb"] > summary["student_model_size_mb"]
    assert 0 < summary["compression_ratio_model_size"] < 1


def test_unknown_teacher_offline_gives_na(workspace, tmp_path):
    _, model_dir, flags = workspace
    with pytest.warns(UserWarning, match="N/A"):
        code = run(tiny_run_flags(tmp_path, model_dir, flags, **{"--teacher_model_name": "nobody/no-such-model"}))
    assert code == 0
    summary = json.loads((tmp_path / "out" / "distillation_summary.json").read_text())
    assert summary["teacher_model_size_mb"] == "N/A" and summary["compression_ratio_model_size"] == "N/A"


@pytest.mark.parametrize("override, message", [
    ({"--train_outer_zip_internal_path": "codet5/wrong.zip"}, "holds [codet5/distillation_data_training.jsonl.zip"),
    ({"--distillation_data_path": "/nonexistent/data.zip"}, "not found"),
    ({"--student_model_name": "nobody/no-such-model"}, "cannot load"),
    ({"--train_jsonl_is_gzipped": False}, "gzip"),
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
    before = (tmp_path / "out" / "distillation_summary.json").read_text()
    assert run(argv) == 2
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert (tmp_path / "out" / "distillation_summary.json").read_text() == before
    assert run(argv + ["--overwrite_output_dir"]) == 0


def test_invalid_flag_values_are_rejected():
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--alpha", "1.5"])
    assert exit_info.value.code == 2
    assert script.parse_args(["--alpha", "0.25"]).alpha_kl_loss_weight == 0.25
