"""Rebuilds a saved tokenizer (character or SentencePiece) from the plain dict a checkpoint stores.

This dispatch lives apart from :mod:`data.text` and :mod:`data.subwords` so that each tokenizer module
imports only what it needs: :mod:`data.subwords` uses :mod:`data.text`'s special symbols, and this module
sits above both (no import cycle between them).
"""

from __future__ import annotations

from data.subwords import SentencePieceTokenizer
from data.text import CharTokenizer


def tokenizer_from_dict(d: dict) -> CharTokenizer | SentencePieceTokenizer:
    """Rebuilds a tokenizer saved with its ``to_dict()`` (stored in checkpoints).

    Args:
        d: ``{"kind": "char", "alphabet": ...}`` or a SentencePiece tokenizer's dict.

    Raises:
        ValueError: For an unknown ``kind``.
    """
    kind = d.get("kind")
    if kind == CharTokenizer.kind:
        return CharTokenizer(d["alphabet"])
    if kind == SentencePieceTokenizer.kind:
        return SentencePieceTokenizer.from_dict(d)
    raise ValueError(f"unknown tokenizer kind {kind!r} (expected char|sentencepiece)")
