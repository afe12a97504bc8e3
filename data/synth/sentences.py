"""Sentences from files for the synthesiser: slot JSONL tokens or text lines, in their spoken form
(:func:`data.spoken.spoken_form`: the text given to eSpeak NG is also the transcript a model learns)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from data.spoken import spoken_form

__all__ = ["read_sentences", "texts_digest"]

def read_sentences(path: str | Path) -> list[str]:
    """The spoken form of every sentence in ``path``, in file order.

    ``.jsonl`` rows give ``tokens`` (slot data) or ``text``; any other file gives one sentence a line.
    Empty sentences are dropped.

    Raises:
        ValueError: A JSONL row that is not an object with ``tokens`` or ``text`` (naming file and line).
    """
    path = Path(path)
    rows: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                    tokens = row["tokens"] if "tokens" in row else str(row["text"]).split()
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: expected a JSON object with tokens or text ({e})") from None
            else:
                tokens = line.split()
            rows.append(spoken_form(tokens))
    return [" ".join(words) for words in rows if words]


def texts_digest(texts: Sequence[str]) -> str:
    """A short digest of a list of sentences (names a cached corpus built from them)."""
    return hashlib.sha1("\n".join(texts).encode()).hexdigest()[:10]
