"""Code-aware tokens for BM25: identifiers split on camelCase and snake_case, lowercased."""

from __future__ import annotations

import re

_WORDS = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*|\d+")  # identifiers and numbers; punctuation carries no words
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")  # parseHTMLString -> parse, HTML, String
TOKENIZATIONS = ("words", "subwords", "both")  # what a token is; retrieval/README.md (docs/RETRIEVAL.md) measures them
DEFAULT_TOKENIZATION = "words"  # measured best on the demo (docs/RETRIEVAL.md)


def subwords(identifier: str) -> list[str]:
    """An identifier's parts: getMaxValue_2 -> get, max, value, 2 (lowercased)."""
    return [part.lower() for piece in identifier.split("_") for part in _CAMEL.findall(piece)]


def code_tokens(text: str, tokenization: str = DEFAULT_TOKENIZATION) -> list[str]:
    """BM25 tokens of Java text: 'words' (whole identifiers), 'subwords' (their camel/snake parts) or 'both'.

    Everything is lowercased; a whole identifier that is also its only part is counted once.
    """
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"tokenization must be one of {', '.join(TOKENIZATIONS)}, got {tokenization!r}")
    tokens = []
    for word in _WORDS.findall(text):
        parts = subwords(word) if tokenization != "words" else []
        if tokenization != "subwords" and (len(parts) != 1 or parts[0] != word.lower()):
            tokens.append(word.lower())
        tokens += parts
    return tokens
