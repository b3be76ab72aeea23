"""The *_script1 metrics and num_eval_samples equal the thesis's, checked against a transcription of its code.

The oracle below is a literal transcription of the thesis's script.py (Kristian2003/distillation, commit
7146b6f): the record-validity rule, the record-to-text steps of its loader, the metric functions and the
averaging of evaluate_student. It lives here, as the oracle, and nowhere in the package.
"""

import json
import re
from difflib import SequenceMatcher
from itertools import cycle

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase
from util import make_record, save_tiny_model, tiny_run_flags, tiny_tokenizer, write_archive

import script
from assertdistill.core.schema import RECORD_METRICS
from assertdistill.data.records import RecordError, parse_record
from assertdistill.scoring.metrics import evaluate_assertions_script1_style


# ---- oracle: transcribed from the thesis's script.py ------------------------------------------------------
def thesis_is_valid_entry_dict(entry_dict):
    has_target = 'original_target' in entry_dict or 'assertions' in entry_dict
    has_teacher_pred_text = 'model_prediction' in entry_dict or 'predicted_assertions' in entry_dict
    has_logits = 'compressed_logits' in entry_dict and entry_dict['compressed_logits'] is not None
    return (isinstance(entry_dict.get('test_method_masked'), str) and has_target and has_teacher_pred_text and has_logits)


def thesis_process_entry_texts(entry):
    """_process_entry up to the texts (tokenization and logits left out); None = record skipped."""
    if not thesis_is_valid_entry_dict(entry):
        return None
    if 'original_target' in entry and entry['original_target'] is not None:
        gt_text_input = entry['original_target']
        ground_truth_assertions_text = "\n".join(gt_text_input) if isinstance(gt_text_input, list) else str(gt_text_input)
    elif 'assertions' in entry and entry['assertions'] is not None:
        ground_truth_assertions_text = "\n".join(str(s) for s in entry['assertions'])
    else: return None

    if 'model_prediction' in entry and entry['model_prediction'] is not None:
        teacher_predicted_text = str(entry['model_prediction'])
    elif 'predicted_assertions' in entry and entry['predicted_assertions'] is not None:
        teacher_predicted_text = str(entry['predicted_assertions'])
    else: return None
    return {"ground_truth_text": ground_truth_assertions_text, "teacher_predicted_text": teacher_predicted_text}


def thesis_iter_texts(lines):
    """__iter__ without worker sharding: the processed samples' texts, in file order."""
    first_line_skipped = False
    for line_content in lines:
        line_strip = line_content.strip()
        if not line_strip: continue
        try:
            entry_data = json.loads(line_strip)
            if not first_line_skipped and isinstance(entry_data, dict) and 'header' in entry_data:
                first_line_skipped = True; continue
            first_line_skipped = True
            processed_item = thesis_process_entry_texts(entry_data)
            if processed_item: yield processed_item
        except json.JSONDecodeError: pass
        except Exception: pass


def normalize_assertion_script1(assertion: str) -> str:
    assertion = re.sub(r'\s+', ' ', assertion).strip()
    assertion = re.sub(r'assertEquals\s*\(\s*[^,]+,\s*([^)]+)\s*\)', r'assertEquals(VALUE, \1)', assertion)
    assertion = re.sub(r'assert(Equals|That|True|False|Null|NotNull|Throws|Same|NotSame|ArrayEquals)\b', r'assert\1', assertion, flags=re.IGNORECASE)
    return assertion


def calculate_similarity_script1(reference: str, candidate: str) -> float:
    if not isinstance(reference, str) or not isinstance(candidate, str): return 0.0
    if not reference or not candidate: return 0.0
    return SequenceMatcher(None, reference, candidate).ratio()


def classify_assertion_type_script1(assertion: str) -> str:
    if not isinstance(assertion, str): return "other"
    assertion_lower = assertion.lower()
    if re.search(r"\bassertequals\b", assertion_lower) or \
       (re.search(r"\bassertthat\b", assertion_lower) and ".isequalto" in assertion_lower): return "equality"
    elif re.search(r"\basserttrue\b", assertion_lower): return "truth"
    elif re.search(r"\bassertfalse\b", assertion_lower): return "falsity"
    elif re.search(r"\bassertnull\b", assertion_lower): return "null"
    elif re.search(r"\bassertnotnull\b", assertion_lower): return "not_null"
    elif re.search(r"\bassertthrows\b", assertion_lower): return "exception"
    elif re.search(r"\bassertsame\b", assertion_lower): return "same"
    elif re.search(r"\bassertnotsame\b", assertion_lower): return "not_same"
    elif re.search(r"\bassertarrayequals\b", assertion_lower): return "array_equality"
    else: return "other"


def thesis_evaluate_assertions_script1_style(generated_assertions_block, reference_assertions_block):
    def _parse_assertions(block):
        if not block or not isinstance(block, str): return []
        items = re.split(r';|\n', block)
        return [a.strip() + (';' if a.strip() and not a.strip().endswith(';') else '') for a in items if a.strip()]

    generated_list_raw = _parse_assertions(generated_assertions_block)
    reference_list_raw = _parse_assertions(reference_assertions_block)
    normalized_generated = [normalize_assertion_script1(a) for a in generated_list_raw]
    normalized_reference = [normalize_assertion_script1(a) for a in reference_list_raw]
    exact_matches = 0
    for gen_item in normalized_generated:
        if gen_item in normalized_reference: exact_matches +=1
    similarity_scores_list = []
    if normalized_generated:
        for gen_norm in normalized_generated:
            best_sim = 0.0
            if normalized_reference:
                for ref_norm in normalized_reference:
                    sim = calculate_similarity_script1(gen_norm, ref_norm)
                    best_sim = max(best_sim, sim)
            similarity_scores_list.append(best_sim)
    gen_types = [classify_assertion_type_script1(a) for a in generated_list_raw]
    ref_types = [classify_assertion_type_script1(a) for a in reference_list_raw]
    gen_type_counts = {t: gen_types.count(t) for t in set(gen_types)}
    ref_type_counts = {t: ref_types.count(t) for t in set(ref_types)}

    if not normalized_generated and not normalized_reference:
        precision, recall, f1, accuracy_script1 = 1.0, 1.0, 1.0, 1.0
        similarity_avg_script1 = 1.0
    else:
        precision = exact_matches / len(normalized_generated) if normalized_generated else 0.0
        recall = exact_matches / len(normalized_reference) if normalized_reference else 0.0
        f1 = 2 * precision * recall / (precision + recall) if (precision + recall) > 0 else 0.0
        max_len = max(len(normalized_generated), len(normalized_reference))
        accuracy_script1 = exact_matches / max_len if max_len > 0 else 0.0
        similarity_avg_script1 = sum(similarity_scores_list) / len(similarity_scores_list) if similarity_scores_list else 0.0
        if not normalized_generated and normalized_reference: similarity_avg_script1 = 0.0
    return {"exact_matches_script1": exact_matches, "generated_count_script1": len(normalized_generated),
            "reference_count_script1": len(normalized_reference), "precision_script1": precision, "recall_script1": recall,
            "f1_script1": f1, "accuracy_script1": accuracy_script1, "similarity_avg_script1": similarity_avg_script1,
            "gen_type_counts_script1": gen_type_counts, "ref_type_counts_script1": ref_type_counts,
            "similarity_scores_list_script1": similarity_scores_list}


def thesis_evaluation_averages(samples, generated_texts):
    """evaluate_student's metric part: per-sample metrics in order, then np.mean under the thesis's key names."""
    all_metrics_s_vs_t_script1 = []; all_metrics_s_vs_gt_script1 = []
    for sample, gen_text in zip(samples, generated_texts, strict=True):
        teacher_text, gt_text = sample["teacher_predicted_text"], sample["ground_truth_text"]
        all_metrics_s_vs_t_script1.append(thesis_evaluate_assertions_script1_style(gen_text, teacher_text))
        all_metrics_s_vs_gt_script1.append(thesis_evaluate_assertions_script1_style(gen_text, gt_text))
    results = {}
    metric_keys_script1 = ["precision_script1", "recall_script1", "f1_script1", "accuracy_script1", "similarity_avg_script1"]
    for prefix, metrics_list in [("s_vs_t", all_metrics_s_vs_t_script1), ("s_vs_gt", all_metrics_s_vs_gt_script1)]:
        for key in metric_keys_script1:
            avg_val = np.mean([m[key] for m in metrics_list]) if metrics_list else 0.0
            results[f"avg_{key.replace('_avg_script1', '_avg').replace('_script1', '')}_{prefix}_script1"] = float(avg_val)
    results["num_eval_samples"] = len(samples)
    return results
# ---- end of the oracle --------------------------------------------------------------------------------------


MISSING = object()  # a field removed from the record
# (id, field updates applied to a valid published-format record, reason this suite skips it under or None)
ADVERSARIAL_RECORDS = [
    ("list_prediction", {}, None),
    ("two_line_list_prediction", {"predicted_assertions": ["assertTrue(a);", "assertFalse(b);"]}, None),
    ("empty_list_prediction", {"predicted_assertions": []}, None),
    ("string_prediction", {"predicted_assertions": MISSING, "model_prediction": "assertTrue(stack.isEmpty());"},
     None),
    ("model_prediction_wins", {"model_prediction": "assertNull(x);"}, None),
    ("null_model_prediction_falls_through", {"model_prediction": None}, None),
    ("empty_string_prediction", {"predicted_assertions": ""}, None),
    ("number_prediction", {"predicted_assertions": MISSING, "model_prediction": 5}, None),
    ("bool_prediction", {"model_prediction": True}, None),
    ("object_prediction", {"model_prediction": {"a": "assertTrue(x);"}}, None),
    ("list_with_non_strings", {"predicted_assertions": ["assertTrue(a);", None, 3]}, None),
    ("no_prediction_field", {"predicted_assertions": MISSING}, "missing_teacher_prediction"),
    ("null_predictions", {"predicted_assertions": None, "model_prediction": None}, "missing_teacher_prediction"),
    ("case_variants", {"original_target": "ASSERTTRUE(stack.isEmpty());\nAssertEquals(1, x);",
                       "predicted_assertions": ["assertTRUE(stack.isEmpty());", "assertequals(2, x);"]}, None),
    ("lowercase_names", {"original_target": "assertnotnull(r);\nassertthat(a).isEqualTo(b);",
                         "predicted_assertions": ["assertnotnull(r);"]}, None),
    ("spacing", {"original_target": "  assertEquals( 1 ,  x );\t\n\n assertTrue (a) ",
                 "predicted_assertions": ["assertEquals(1, x);", "assertTrue (a);"]}, None),
    ("multiline_block", {"original_target": "assertTrue(a);\n\nassertFalse(b); assertNull(c)\n"}, None),
    ("ground_truth_list", {"original_target": ["assertTrue(stack.isEmpty());", "assertNull(x);"]}, None),
    ("ground_truth_list_with_non_string", {"original_target": ["assertTrue(a);", 5]}, "wrong_field_type"),
    ("ground_truth_number", {"original_target": 5}, None),
    ("original_target_wins", {"assertions": ["assertNull(z);"]}, None),
    ("null_original_target_falls_through", {"original_target": None, "assertions": ["assertNull(z);", 7]}, None),
    ("assertions_string", {"original_target": MISSING, "assertions": "assertTrue(a);"}, None),
    ("assertions_number", {"original_target": MISSING, "assertions": 12}, "wrong_field_type"),
    ("null_ground_truths", {"original_target": None, "assertions": None}, "missing_ground_truth"),
    ("null_original_target_only", {"original_target": None}, "missing_ground_truth"),
    ("no_ground_truth", {"original_target": MISSING}, "missing_ground_truth"),
    ("no_test_method", {"test_method_masked": MISSING}, "missing_test_method_masked"),
    ("test_method_not_string", {"test_method_masked": ["void t() {}"]}, "wrong_field_type"),
    ("no_logits", {"compressed_logits": MISSING}, "missing_compressed_logits"),
    ("null_logits", {"compressed_logits": None}, "missing_compressed_logits"),
    ("unicode", {"original_target": "assertEquals(\"é漢字😀\", s);",
                 "predicted_assertions": ["assertEquals(\"é\", s);"]}, None),
]
# Student outputs cycled over the evaluated records (the end-to-end run decodes these instead of its own).
# The first matches the first evaluated record's teacher line (after the VALUE mask).
STUDENT_OUTPUTS = ["assertEquals(1, calculator.add(100, 0));", "assertTrue(stack.isEmpty());",
                   "ASSERTTRUE(stack.isEmpty());", "['assertEquals(1, calculator.add(1, 0));']", "",
                   "assertEquals(9, calculator.add(2, 0)); assertTrue(stack.isEmpty())",
                   "assertnotnull(r);\nassertTRUE(stack.isEmpty());", "assertTrue (a);"]
# Blocks compared pairwise with the metric functions (case, spacing, splitting, non-strings).
BLOCKS = ["assertEquals(1, x);", "assertEquals( 2 ,x)", "assertequals(1, x);", "ASSERTEQUALS(1, x);",
          "assertTrue(a);", "ASSERTTRUE(a);", "assertTRUE(a)", "AssertTrue(a);", "assertnotnull(y);",
          "assertNotNull(y);", "assertTrue(a);\nassertFalse(b);", "assertTrue(a); assertFalse(b);;\n\n",
          "assertThat(a).isEqualTo(b);", "assertThrows(E.class, () -> f());", "fail();", "", "   ", None,
          ["assertTrue(a);"], "['assertTrue(a);']", 5]


def adversarial_record(index, updates):
    record = make_record(index, len(tiny_tokenizer()))
    for name, value in updates.items():
        if value is MISSING:
            record.pop(name, None)
        else:
            record[name] = value
    return record


def adversarial_lines(start=0):
    lines = [json.dumps(adversarial_record(start + index, updates))
             for index, (_, updates, _) in enumerate(ADVERSARIAL_RECORDS)]
    return lines + ["{not json", "[1, 2]"]


@pytest.mark.parametrize("case_id, updates, reason", ADVERSARIAL_RECORDS, ids=[row[0] for row in ADVERSARIAL_RECORDS])
def test_records_are_read_as_the_thesis_loader_reads_them(case_id, updates, reason):
    line = json.dumps(adversarial_record(3, updates))
    expected = list(thesis_iter_texts([line]))
    assert (reason is None) == bool(expected)  # the rows' reasons agree with the thesis's validity rule
    if reason is not None:
        with pytest.raises(RecordError) as error:
            parse_record(line, "focal_file", need_logits=False)
        assert error.value.reason == reason
        return
    record = parse_record(line, "focal_file", need_logits=False)
    assert record.ground_truth_text == expected[0]["ground_truth_text"]
    assert record.teacher_text_script1 == expected[0]["teacher_predicted_text"]
    raw = json.loads(line)
    teacher = raw.get("model_prediction")
    teacher = raw["predicted_assertions"] if teacher is None else teacher
    joined = "\n".join(str(item) for item in teacher) if isinstance(teacher, list) else str(teacher)
    assert record.teacher_text == joined  # the corrected text: the lines joined


@pytest.mark.parametrize("generated", BLOCKS, ids=repr)
def test_metric_functions_equal_the_thesis_on_every_pair(generated):
    for reference in BLOCKS:
        assert evaluate_assertions_script1_style(generated, reference) == \
            thesis_evaluate_assertions_script1_style(generated, reference), (generated, reference)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("compat") / "model"))


def test_run_reports_the_thesis_numbers_on_adversarial_records(model_dir, tmp_path, monkeypatch):
    train, val = adversarial_lines(0), adversarial_lines(100)
    flags = write_archive(str(tmp_path / "d.zip"), train, val)
    outputs = cycle(STUDENT_OUTPUTS)
    monkeypatch.setattr(PreTrainedTokenizerBase, "batch_decode",
                        lambda self, ids, **kwargs: [next(outputs) for _ in range(len(ids))])
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--eval_batch_size": 5, "--num_beams": 1, "--alpha": 0.0,
                                                           "--student_max_tgt_length": 16})
    assert script.main(argv) == 0
    summary = json.loads((tmp_path / "out" / "distillation_summary.json").read_text())
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]

    samples = list(thesis_iter_texts(["{\"header\": {}}"] + val))
    students = [row["student_prediction"] for row in predictions]
    assert students == [output for output, _ in zip(cycle(STUDENT_OUTPUTS), samples)]
    thesis = thesis_evaluation_averages(samples, students)
    metrics = summary["final_evaluation_metrics"]
    assert {key: metrics[key] for key in thesis} == thesis
    assert [(row["ground_truth"], row["teacher_prediction_script1"]) for row in predictions] == \
        [(sample["ground_truth_text"], sample["teacher_predicted_text"]) for sample in samples]
    skipped = sum(reason is not None for _, _, reason in ADVERSARIAL_RECORDS) + 2  # + the two broken lines
    for split in ("training", "validation"):  # the same rule for training, even at alpha 0
        counts = summary["data_counts"][split]
        assert counts["records_used"] == len(samples) and counts["records_skipped"] == skipped
    # The corrected numbers differ where the teacher's list was read as its str().
    assert predictions[0]["teacher_prediction"] == "assertEquals(100, calculator.add(100, 0));"
    assert predictions[0]["accuracy_s_vs_t_corrected"] == 1.0 and predictions[0]["accuracy_s_vs_t_script1"] == 0.0
    assert set(RECORD_METRICS) <= set(predictions[0])


def test_a_run_whose_every_training_record_is_skipped_stops_with_the_reasons(model_dir, tmp_path, capsys):
    lines = [json.dumps(adversarial_record(i, {"predicted_assertions": MISSING})) for i in range(3)]  # no teacher text
    flags = write_archive(str(tmp_path / "d.zip"), lines, lines)
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--alpha": 0.0, "--num_beams": 1})) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "every training record was skipped" in last and "missing_teacher_prediction: 3" in last


def test_plain_fine_tuning_keeps_records_without_teacher_output_when_asked(model_dir, tmp_path):
    """--allow_records_without_teacher (this suite only): package-only archives train at alpha 0."""
    lines = [json.dumps(adversarial_record(i, {"predicted_assertions": MISSING, "compressed_logits": MISSING}))
             for i in range(3)]
    flags = write_archive(str(tmp_path / "d.zip"), lines, lines)
    options = {"--alpha": 0.0, "--num_beams": 1, "--allow_records_without_teacher": True}
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **options)) == 0
    with open(tmp_path / "out" / "distillation_summary.json", encoding="utf-8") as stream:
        summary = json.load(stream)
    assert summary["data_counts"]["training"]["records_used"] == 3
    assert summary["final_evaluation_metrics"]["num_eval_samples"] == 3
    # with alpha > 0 the logits are still needed: every record is skipped and the run stops
    options["--alpha"] = 0.5
    options["--output_dir"] = str(tmp_path / "out2")
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **options)) == 2
