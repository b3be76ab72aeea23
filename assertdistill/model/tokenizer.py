"""Train a byte-level BPE tokenizer with CodeT5's special-token conventions."""

from __future__ import annotations

import json
from typing import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import RobertaTokenizer

# CodeT5's ids: <pad>=0, <s>=1, </s>=2, <unk>=3, <mask>=4.
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> RobertaTokenizer:
    """A RobertaTokenizer (as CodeT5 uses) whose byte-level BPE is trained on `texts`."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    merges = [tuple(pair.split(" ")) if isinstance(pair, str) else tuple(pair)
              for pair in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                 cls_token="<s>", sep_token="</s>")
    # transformers 5 has silently built 5-token tokenizers from bad inputs: check the size.
    assert len(tokenizer) == len(bpe.get_vocab()), (len(tokenizer), len(bpe.get_vocab()))
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))
    return tokenizer


def t5_config_for(tokenizer, **dimensions):
    """A T5Config whose vocabulary and special ids match the tokenizer (CodeT5 conventions)."""
    from transformers import T5Config

    return T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                    decoder_start_token_id=tokenizer.pad_token_id, **dimensions)
