"""Generate a realistic distillation archive: full-size 8-bit teacher blocks, sources that fill the budget.

Records look like the thesis generator's output (docs/DATA_FORMAT.md): targets of 20-80 tokens (validation
records: 20-60, the lengths real assertion blocks have, which the eval timing generates), teacher
blocks padded to T = 512 positions over V = 32100, quantized to 8 bits, LZ4-framed and hex-encoded
(~33 MB of JSON per record), inside a DEFLATE-compressed inner ZIP inside a stored outer ZIP.

Deflating 33 MB of hex takes seconds, so each distinct teacher block is deflated once and its
compressed bytes are reused: every JSON line is deflated as three independent pieces (text before
the hex, the hex, text after it), each ended with a full flush. Their concatenation is one valid
DEFLATE stream (as pigz writes them), so any reader inflates it like any other archive.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from assertdistill.codec.codec import compress_logits
from assertdistill.model.tokenizer import train_bpe_tokenizer

VOCAB_SIZE = 32100  # CodeT5's vocabulary
PADDED_POSITIONS = 512  # the generator pads every teacher block to max_tgt_length
DEFLATE_LEVEL = 6  # what the generator's inner ZIPs use
HEX_MARKER = "@@HEX@@"  # stands in for the hex data while a record is serialized
TRAIN_TARGET_TOKENS = (20, 80)  # inclusive range of training targets' token counts
VAL_TARGET_TOKENS = (20, 60)  # validation targets: real assertion blocks' lengths (the eval timing generates them)
ZIP_LIMIT = 0xFFFFFFFF  # the hand-written inner ZIP has no ZIP64 records
INNER_ZIP_PATH = "codet5/distillation_data_{split}.jsonl.zip"
JSONL_NAME = "distillation_data_{split}.jsonl"

_TYPES = ["int", "long", "String", "List<String>", "Map<String, Integer>", "boolean", "double", "Order"]
_WORDS = ["order", "customer", "item", "price", "total", "discount", "cart", "invoice", "amount", "count",
          "name", "value", "result", "index", "buffer", "cache", "parser", "token", "stream", "reader"]


def java_identifier(rng: np.random.Generator, parts: int = 2) -> str:
    """A camelCase identifier of a few vocabulary words."""
    words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), parts)]
    return words[0] + "".join(word.capitalize() for word in words[1:])


def java_class(rng: np.random.Generator, min_chars: int) -> str:
    """A synthetic Java class of at least `min_chars` characters."""
    name = java_identifier(rng).capitalize()
    lines = [f"package com.example.{java_identifier(rng, 1)};", "", f"public class {name} {{"]
    while sum(len(line) + 1 for line in lines) < min_chars:
        kind, field = _TYPES[rng.integers(len(_TYPES))], java_identifier(rng)
        lines += [f"    private {kind} {field};",
                  f"    public {kind} get{field[0].upper() + field[1:]}() {{",
                  f"        if ({field} == null) {{ throw new IllegalStateException(\"{field} not set\"); }}",
                  f"        return this.{field};", "    }", ""]
    return "\n".join(lines + ["}"])


def java_assertions(rng: np.random.Generator, count: int) -> list[str]:
    """JUnit assertion lines."""
    templates = ["assertEquals({n}, {a}.get{B}());", "assertTrue({a}.is{B}());", "assertNotNull({a});",
                 "assertThat({a}.get{B}()).isEqualTo(\"{b}\");", "assertFalse({a}.contains({n}));"]
    lines = []
    for _ in range(count):
        a, b = java_identifier(rng), java_identifier(rng)
        lines.append(templates[rng.integers(len(templates))].format(n=int(rng.integers(100)), a=a, b=b,
                                                                     B=b[0].upper() + b[1:]))
    return lines


def bench_tokenizer(vocab_size: int = 2000, seed: int = 0):
    """A byte-level BPE tokenizer trained on synthetic Java (CodeT5's special tokens and ids)."""
    rng = np.random.default_rng(seed)
    corpus = [java_class(rng, 2000) + "\n" + "\n".join(java_assertions(rng, 8)) for _ in range(60)]
    return train_bpe_tokenizer(corpus, vocab_size=vocab_size, min_frequency=2)


def teacher_block(rng: np.random.Generator, positions: int = PADDED_POSITIONS, vocab_size: int = VOCAB_SIZE,
                  spikes: int = 4) -> np.ndarray:
    """Teacher-like logits (T, V): standard gaussian with a few large spikes per row."""
    block = rng.standard_normal((positions, vocab_size), dtype=np.float32)  # (T, V)
    rows = np.arange(positions)
    for spike in range(spikes):
        block[rows, rng.integers(0, vocab_size, positions)] += np.float32(14.0 if spike == 0 else 7.0)
    return block


@dataclass
class BenchArchive:
    """A generated archive and what script.py / the streams need to find its members."""

    path: str
    num_records: int
    jsonl_bytes: int  # uncompressed JSONL size of the training split
    compressed_bytes: int  # size of the training split's inner ZIP

    def member(self, split: str = "training") -> tuple[str, str]:
        """(inner ZIP path, JSONL name) of a split."""
        return INNER_ZIP_PATH.format(split=split), JSONL_NAME.format(split=split)


def _deflate_piece(data: bytes) -> bytes:
    """Raw DEFLATE of one piece, ended by a full flush so pieces can be concatenated."""
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def _dos_time() -> tuple[int, int]:
    return (12 << 11) | (0 << 5), ((2024 - 1980) << 9) | (1 << 5) | 1  # 12:00, 2024-01-01


def _write_deflated_zip(path: str, name: str, pieces) -> tuple[int, int]:
    """Write a one-member ZIP whose member is DEFLATEd from precompressed (raw, compressed) pieces."""
    encoded_name = name.encode()
    crc = size = compressed_size = 0
    with open(path, "wb") as out:
        out.write(b"\0" * (30 + len(encoded_name)))  # the local header, rewritten once sizes are known
        for raw, compressed in pieces:
            crc = zlib.crc32(raw, crc)
            size += len(raw)
            out.write(compressed)
            compressed_size += len(compressed)
        final_block = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15).flush()  # an empty last block
        out.write(final_block)
        compressed_size += len(final_block)
        if max(size, compressed_size, out.tell()) > ZIP_LIMIT:
            raise ValueError("the generated member exceeds 4 GiB: generate fewer records")
        dos_time, dos_date = _dos_time()
        fields = (20, 0, zipfile.ZIP_DEFLATED, dos_time, dos_date, crc, compressed_size, size)
        local = struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, len(encoded_name), 0) + encoded_name
        central_offset = out.tell()
        central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, len(encoded_name), 0, 0, 0, 0, 0,
                              0) + encoded_name
        out.write(central)
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), central_offset, 0))
        out.seek(0)
        out.write(local)
    return size, compressed_size


def _record_pieces(record: dict) -> tuple[bytes, bytes]:
    """The JSON line of a record around its hex data: (text up to the hex, text after it + newline)."""
    text = json.dumps(record)
    before, after = text.split(HEX_MARKER)
    return before.encode(), (after + "\n").encode()


def make_records(tokenizer, num_records: int, num_blocks: int, seed: int = 0, source_chars: int = 12000,
                 vocab_size: int = VOCAB_SIZE, positions: int = PADDED_POSITIONS, validation_from: int | None = None):
    """(record dicts with the hex replaced by HEX_MARKER, block index) and the blocks' hex strings.

    Records from index validation_from on get VAL_TARGET_TOKENS targets, the others TRAIN_TARGET_TOKENS.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(num_blocks):
        compressed = compress_logits(teacher_block(rng, positions, vocab_size)[None], bits=8)  # (1, T, V)
        blocks.append(compressed)
    records = []
    for index in range(num_records):
        low, high = VAL_TARGET_TOKENS if validation_from is not None and index >= validation_from else TRAIN_TARGET_TOKENS
        target_tokens = int(rng.integers(low, min(high + 1, positions)))
        assertions = java_assertions(rng, 12)
        ids = tokenizer("\n".join(assertions), add_special_tokens=False)["input_ids"][: target_tokens - 1]
        target = tokenizer.decode(ids, skip_special_tokens=True)
        block = index % num_blocks
        compressed = dict(blocks[block])
        compressed["data_encoded"] = dict(compressed["data_encoded"], data=HEX_MARKER)
        records.append(({
            "focal_file": java_class(rng, source_chars),
            "test_method_masked": "@Test\npublic void testIt() {\n    Order order = new Order();\n"
                                  "    // <ASSERTION_PLACEHOLDER>\n    // <ASSERTION_PLACEHOLDER>\n}\n",
            "original_target": target,
            "predicted_assertions": target.split("\n")[:1],
            "model_type": "codet5",
            "compressed_logits": compressed,
        }, block))
    return records, [block["data_encoded"]["data"] for block in blocks]


def write_bench_archive(path: str, tokenizer, num_records: int, num_blocks: int = 4, num_val_records: int = 2,
                        seed: int = 0, vocab_size: int = VOCAB_SIZE,
                        positions: int = PADDED_POSITIONS) -> BenchArchive:
    """Write the outer ZIP (stored) with a training and a validation inner ZIP of full-size records."""
    records, hex_blocks = make_records(tokenizer, num_records + num_val_records, num_blocks, seed,
                                       vocab_size=vocab_size, positions=positions, validation_from=num_records)
    hex_pieces = [(hex_data.encode(), None) for hex_data in hex_blocks]
    hex_pieces = [(raw, _deflate_piece(raw)) for raw, _ in hex_pieces]
    splits = {"training": records[:num_records], "validation": records[num_records:]}
    sizes = {}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as scratch:
        inner_paths = {}
        for split, split_records in splits.items():
            header = json.dumps({"header": {"dataset_type": split, "item_count": len(split_records),
                                            "args": {"bits": 8}}}) + "\n"

            def pieces(split_records=split_records, header=header):
                yield header.encode(), _deflate_piece(header.encode())
                for record, block in split_records:
                    before, after = _record_pieces(record)
                    yield before, _deflate_piece(before)
                    yield hex_pieces[block]
                    yield after, _deflate_piece(after)

            inner_paths[split] = os.path.join(scratch, f"{split}.zip")
            sizes[split] = _write_deflated_zip(inner_paths[split], JSONL_NAME.format(split=split), pieces())
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as outer:
            for split, inner_path in inner_paths.items():
                outer.write(inner_path, INNER_ZIP_PATH.format(split=split))
    jsonl_bytes, compressed_bytes = sizes["training"]
    return BenchArchive(path, num_records, jsonl_bytes, compressed_bytes)
