"""Model cards a run writes into its saved students, and generate_assertions.py on a run's student."""

import json

import pytest
import yaml
from util import tiny_model_and_archive, tiny_run_flags

import generate_assertions
import script
from assertdistill.core import schema
from assertdistill.distill.model_card import model_card
from assertdistill.java.mining import PLACEHOLDER


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    model_dir, flags = tiny_model_and_archive(root, 8, 4)
    assert script.main(tiny_run_flags(root, model_dir, flags, **{"--epochs": 2, "--save_best_model": True})) == 0
    return root / "out"


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_both_saved_students_get_a_card_with_metadata_and_teacher_numbers(run_dir):
    summary = json.loads((run_dir / schema.SUMMARY_FILENAME).read_text())
    for saved in (schema.FINAL_MODEL_DIRNAME, schema.BEST_MODEL_DIRNAME):
        card = (run_dir / saved / schema.MODEL_CARD_FILENAME).read_text()
        meta = front_matter(card)
        assert meta["library_name"] == "transformers" and "knowledge-distillation" in meta["tags"]
        assert "base_model" not in meta  # the student was a local directory, not a hub id
        assert meta["model-index"][0]["results"][0]["metrics"]
        assert "| `--alpha_kl_loss_weight` | `0.7` |" in card and "teacher vs ground truth" in card
    final_card = (run_dir / schema.FINAL_MODEL_DIRNAME / schema.MODEL_CARD_FILENAME).read_text()
    metrics = summary[schema.FINAL_EVALUATION_METRICS]
    low, high = summary[schema.CONFIDENCE_INTERVALS]["avg_accuracy_s_vs_gt_script1"]
    teacher = metrics["avg_accuracy_t_vs_gt_script1"]
    row = next(line for line in final_card.splitlines() if line.startswith("| accuracy |"))
    assert f"[{low:.4f}, {high:.4f}]" in row and f"{teacher:.4f}" in row


def test_a_hub_base_model_is_named():
    card = model_card({schema.STUDENT_MODEL_NAME: "Salesforce/codet5-small", schema.ARGS: {}}, {}, "final", False)
    assert front_matter(card)["base_model"] == "Salesforce/codet5-small"


def test_generate_assertions_uses_the_runs_flags(run_dir, tmp_path, capsys):
    test = tmp_path / "FooTest.java"
    test.write_text(f"class FooTest {{\n  @Test\n  void t() {{\n    int x = 1;\n    {PLACEHOLDER}\n  }}\n}}\n")
    code = generate_assertions.main(["--model_dir", str(run_dir / schema.FINAL_MODEL_DIRNAME), "--json", str(test)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "beam 2" in captured.err  # tiny_run_flags' --num_beams, from training_args_final.json
    assert json.loads(captured.out.splitlines()[0])["line"] == 5
