"""The retrieval baseline's costs: index build time and peak memory, query latency, the training-step overhead of K.

    python -m benchmarks.retrieval [--records 100000] [--queries 1000]

1. Build: --records generated test methods (identifiers drawn from a Zipf-like vocabulary, 40-200 tokens each,
   as mined JUnit tests) streamed into RetrievalIndex.build; wall time and the peak of Python + numpy
   allocations (tracemalloc) of the build. rank_bm25 (BM25Okapi) is timed on the same tokens for comparison.
With --demo_accuracy instead: the baseline's accuracy on the demo per tokenization, and Yu et al.'s adaptation.
2. Query: --queries searches of held-out generated methods (top 1, excluding one file): p50 / p95 ms.
3. Training step, K = 0 vs K = 2, on the demo archive (first 64 training records, batch 8, 256 source tokens,
   the demo student from random weights): retrieval + encoding per record, and one forward + backward per batch.
Run it on an otherwise idle machine (docs/RETRIEVAL.md reports its numbers with the CPU model).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import time
import tracemalloc

import numpy as np
import torch

from assertdistill.core.paths import DEMO
from assertdistill.core.schema import ACCURACY, R_VS_GT, record_key, script1
from assertdistill.data.dataset import ArchiveSpec, DistillationStream, collate
from assertdistill.data.encoding import InputEncoder
from assertdistill.model.models import load_student, load_tokenizer
from assertdistill.retrieval.adapt import adapt_assertion
from assertdistill.retrieval.baseline import TRAINING, VALIDATION, Retriever, index_training_split
from assertdistill.retrieval.code_tokens import TOKENIZATIONS, code_tokens
from assertdistill.retrieval.index import Entry, IndexSettings, RetrievalIndex
from assertdistill.scoring.registry import record_metrics
from assertdistill.scoring.statistics import paired_test

RETRIEVAL_ACCURACY = record_key(ACCURACY, script1(R_VS_GT))


def generated_entries(count: int, seed: int = 0):
    """`count` synthetic test methods with a placeholder, an assertion and a test file (50 methods per file)."""
    rng = random.Random(seed)
    words = [f"{rng.choice(['get', 'set', 'is', 'make', 'parse', 'add'])}{rng.choice(['Value', 'Name', 'Item', 'X'])}"
             f"{number}" for number in range(20_000)]
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    for number in range(count):
        body = " ".join(f"{word}();" for word in rng.choices(words, cum_weights=cumulative, k=rng.randint(10, 50)))
        yield Entry(f"@Test public void test{number}() {{ {body} // <ASSERTION_PLACEHOLDER> }}",
                    f"assertEquals({number % 97}, {rng.choice(words)}());", f"repo/Test{number // 50}.java", number)


def bench_build(records: int) -> tuple[RetrievalIndex, dict]:
    """Build time and tracemalloc peak of an index over `records` generated entries; rank_bm25 on the same tokens."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    index = RetrievalIndex.build(generated_entries(records))
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    from rank_bm25 import BM25Okapi

    tokens = [code_tokens(entry.test_method) for entry in generated_entries(records)]
    started = time.perf_counter()
    okapi = BM25Okapi(tokens)
    okapi_seconds = time.perf_counter() - started
    query = code_tokens(next(generated_entries(1, seed=1)).test_method)
    started = time.perf_counter()
    for _ in range(5):
        okapi.get_scores(query)
    okapi_query_ms = (time.perf_counter() - started) / 5 * 1000
    return index, {"build_seconds": seconds, "build_peak_mib": peak / 2**20, "rank_bm25_build_seconds": okapi_seconds,
                   "rank_bm25_query_ms": okapi_query_ms}


def bench_queries(index: RetrievalIndex, queries: int) -> dict:
    """p50 / p95 milliseconds of one validation-style search (top 1, its own file excluded)."""
    retriever = Retriever(index, TRAINING, depth=1)
    times = []
    for entry in generated_entries(queries, seed=2):
        started = time.perf_counter()
        retriever.retrieve(entry.test_method, entry.test_file, line_number=entry.line_number)
        times.append((time.perf_counter() - started) * 1000)
    return {"query_p50_ms": float(np.percentile(times, 50)), "query_p95_ms": float(np.percentile(times, 95))}


def bench_training_step(records: int = 64, batch_size: int = 8, repeats: int = 3) -> dict:
    """Seconds per record of retrieval + encoding, and per batch of forward + backward, for K = 0 and K = 2."""
    tokenizer = load_tokenizer(DEMO.student)
    spec = ArchiveSpec(DEMO.archive, DEMO.train_inner_zip, DEMO.train_jsonl)
    plain = InputEncoder(tokenizer, 256, 128)
    stream = DistillationStream(spec, plain, batch_size, need_logits=False, max_records=None)
    index, _ = index_training_split(stream, require_teacher=True)
    stream.close()
    results = {}
    for examples in (0, 2):
        encoder = InputEncoder(tokenizer, 256, 128, examples)
        stream = DistillationStream(spec, encoder, batch_size, need_logits=False, max_records=records)
        if examples:
            stream.retriever = Retriever(index, TRAINING, examples)
        started = time.perf_counter()
        samples = [sample for _, group, _ in stream.iter_groups() for sample in group]
        encode_ms = (time.perf_counter() - started) * 1000 / len(samples)
        stream.close()
        torch.manual_seed(0)
        model = load_student(DEMO.student, from_scratch=True)
        model.train()
        batches = [collate(samples[i:i + batch_size], tokenizer.pad_token_id)
                   for i in range(0, len(samples), batch_size)]
        step_times = []
        for _ in range(repeats):
            for batch in batches:
                started = time.perf_counter()
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"]).loss
                loss.backward()
                model.zero_grad(set_to_none=True)
                step_times.append(time.perf_counter() - started)
        results[examples] = {"encode_ms_per_record": encode_ms, "step_ms": statistics.median(step_times) * 1000,
                             "mean_source_tokens": float(np.mean([len(s.input_ids) for s in samples]))}
    return results


def demo_accuracy() -> None:
    """Print the retrieval baseline's accuracy on the demo's 300 validation methods for every tokenization, with and
    without the focal code's identifiers, and of Yu et al.'s adaptation (docs/RETRIEVAL.md's tables)."""
    tokenizer = load_tokenizer(DEMO.student)
    encoder = InputEncoder(tokenizer, 256, 128)
    train = DistillationStream(ArchiveSpec(DEMO.archive, DEMO.train_inner_zip, DEMO.train_jsonl), encoder, 32, False)
    val = DistillationStream(ArchiveSpec(DEMO.archive, DEMO.val_inner_zip, DEMO.val_jsonl), encoder, 32, False)
    records = list(val.iter_records(require_teacher=True))
    for tokenization in TOKENIZATIONS:
        for focal in (False, True):
            index, _ = index_training_split(train, True, IndexSettings(tokenization, focal_identifiers=focal))
            retriever = Retriever(index, VALIDATION, 1)
            plain, adapted = [], []
            for line_number, record in records:
                hits = retriever(line_number, record)
                text = hits[0][1] if hits else ""
                plain.append(record_metrics("", record.ground_truth_text, "", "", text)[RETRIEVAL_ACCURACY])
                if hits:
                    text = adapt_assertion(hits[0][1], hits[0][0], record.test_method)
                adapted.append(record_metrics("", record.ground_truth_text, "", "", text)[RETRIEVAL_ACCURACY])
            plain, adapted = np.asarray(plain), np.asarray(adapted)
            print(f"{tokenization}, focal identifiers {focal}: accuracy {plain.mean():.4f} ({int(plain.sum())}); "
                  f"adapted {adapted.mean():.4f} ({int(adapted.sum())}), paired p = "
                  f"{paired_test(adapted, plain, binary=True).p_value:.3g}")
    train.close()
    val.close()


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="generated records indexed")
    parser.add_argument("--queries", type=int, default=1000, help="searches timed")
    parser.add_argument("--demo_accuracy", action="store_true",
                        help="instead: the baseline's accuracy on the demo per tokenization, and adapted")
    args = parser.parse_args(argv)
    if args.demo_accuracy:
        demo_accuracy()
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    index, build = bench_build(args.records)
    print(f"build: {args.records} records in {build['build_seconds']:.1f} s, peak {build['build_peak_mib']:.0f} MiB "
          f"(tracemalloc); rank_bm25 BM25Okapi on the same tokens: {build['rank_bm25_build_seconds']:.1f} s, "
          f"{build['rank_bm25_query_ms']:.0f} ms per query")
    queries = bench_queries(index, args.queries)
    print(f"query (top 1, own file excluded): p50 {queries['query_p50_ms']:.2f} ms, "
          f"p95 {queries['query_p95_ms']:.2f} ms")
    steps = bench_training_step()
    for examples, values in steps.items():
        print(f"K = {examples}: retrieval + encoding {values['encode_ms_per_record']:.2f} ms per record, "
              f"forward + backward {values['step_ms']:.0f} ms per batch of 8 "
              f"({values['mean_source_tokens']:.0f} source tokens on average)")
    overhead = (steps[2]["step_ms"] + 8 * steps[2]["encode_ms_per_record"]) / (
        steps[0]["step_ms"] + 8 * steps[0]["encode_ms_per_record"]) - 1
    print(f"training-step overhead of K = 2 (encoding + step): {overhead:+.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
