"""Sentences from files for the synthesiser: slot JSONL tokens or text lines, written the way they are spoken.

Slot data (ATIS, SNIPS) is written with digits and abbreviations (``"after 5 pm"``, ``"st. louis"``,
``"flight 1291"``, ``"dc10"``); a character CTC model only writes letters, apostrophes and spaces. So the text
given to eSpeak NG, which is also the transcript a model learns, is :func:`spoken_form` of the tokens: numbers
as words, letter-digit codes spelled out, ``st.`` as ``saint``. :func:`slot_words` goes the short way back
(a transcript to tokens for a slot tagger); numbers stay words, since undoing them is ambiguous (``one way``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from data.synth.texts import normalize_text, number_to_words, year_to_words

__all__ = ["read_sentences", "slot_words", "spoken_form", "texts_digest"]

_LETTERS_DIGITS = re.compile(r"[a-z]+|[0-9]+")
#: Abbreviations the slot data writes and eSpeak would expand anyway; the transcript holds the expansion.
_ABBREVIATIONS = {"st.": "saint"}
_BACK = {v: k for k, v in _ABBREVIATIONS.items()}


def _number(digits: str) -> str:
    if len(digits) > 1 and digits.startswith("0"):  # "0900": read digit by digit
        return " ".join(number_to_words(int(d)) for d in digits)
    n = int(digits)
    if len(digits) == 4 and 1950 <= n < 2030:
        return year_to_words(n)
    if n >= 1_000_000:
        return " ".join(number_to_words(int(d)) for d in digits)
    return number_to_words(n, british_and=False)


def spoken_form(tokens: Sequence[str]) -> list[str]:
    """Words as spoken: ``["after", "5", "pm"] -> ["after", "five", "pm"]``; ``"dc10" -> "d c ten"``.

    Every word is in the character CTC alphabet (lower-case ``a-z``, apostrophe). Digits become cardinals
    (``"1291" -> "one thousand two hundred ninety one"``), 1950-2029 in four digits years
    (``"nineteen ninety one"``), a leading zero digit by digit; in a token mixing letters and digits the
    letter runs are spelled letter by letter (``"ap57" -> "a p fifty seven"``).
    """
    out: list[str] = []
    for token in tokens:
        t = token.lower().replace("\u2019", "'")
        if t in _ABBREVIATIONS:
            out.append(_ABBREVIATIONS[t])
            continue
        if not re.search(r"[0-9]", t):
            out.extend(normalize_text(t).split())
            continue
        for run in _LETTERS_DIGITS.findall(t):
            out.extend((_number(run) if run[0].isdigit() else " ".join(run)).split())
    return out


def slot_words(transcript: str) -> list[str]:
    """A transcript as slot-tagger tokens: lower-case words, ``saint`` back to the slot data's ``st.``."""
    return [_BACK.get(w, w) for w in normalize_text(transcript).split()]


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
