"""benchmarks/deploy.py: per-method latency of the three ways, sizes, int8 against float32 paired on the records."""

import torch
from util import tiny_t5, tiny_tokenizer

from benchmarks import deploy


def test_measure_reports_every_way_and_the_paired_int8_test():
    tokenizer = tiny_tokenizer()
    generator = torch.Generator().manual_seed(0)
    methods = [{"input_ids": torch.randint(4, len(tokenizer), (1, length), generator=generator), "target_length": 5,
                "truth": "assertTrue(x);", "teacher": "assertTrue(x);", "teacher_script1": "['assertTrue(x);']"}
               for length in (7, 12, 9)]
    results = deploy.measure(tiny_t5(tokenizer), tokenizer, methods, (1, 2), 12, stop_at_target=False)
    assert results["methods"] == 3 and 0 < results["int8_bytes"] and 0 < results["fp32_bytes"]
    for entry in results["beams"].values():
        assert entry["suite_same_text_as_generate"] == 3  # the suite's decoder writes generate's text
        assert all(entry[way]["p50_ms"] <= entry[way]["p95_ms"] for way in deploy.WAYS)
        for way in ("int8", "bf16"):
            tests = entry[f"{way}_vs_fp32"]
            assert set(tests) == {"accuracy", "similarity", "strict exact match"}
            assert tests["strict exact match"]["test"] == "McNemar exact"
            assert tests["accuracy"]["ci"][0] <= tests["accuracy"]["difference"] <= tests["accuracy"]["ci"][1]
            assert 0 <= entry[f"{way}_same_text_as_fp32"] <= 3 and entry[f"{way}_speedup_vs_fp32"] > 0
    lines = deploy.figure_lines(results, "tiny")
    assert lines[-1].startswith("tiny_int8_size_ratio=") and "tiny_decoder_speedup_beam2=" in "\n".join(lines)
    assert "tiny_bf16_latency_speedup_beam2=" in "\n".join(lines)
