"""Text side of the data layer: label vocabularies, text normalisers, the character tokenizer, text input lines."""

from __future__ import annotations

import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from data.errors import DataError

PAD = "<pad>"
UNK = "<unk>"
BLANK = "<blank>"


class Vocabulary:
    """A string <-> id mapping built from training data, serialisable as a plain list.

    Args:
        itos: The symbols in id order.
        unk: The symbol unknown items map to, or None to make unknown items an error.
    """

    def __init__(self, itos: Sequence[str], *, unk: str | None = None) -> None:
        if len(set(itos)) != len(itos):
            dupes = [s for s, c in Counter(itos).items() if c > 1]
            raise ValueError(f"vocabulary has duplicate symbols: {dupes[:5]}")
        self.itos = list(itos)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if unk is not None and unk not in self.stoi:
            raise ValueError(f"unknown symbol {unk!r} is not in the vocabulary")
        self.unk = unk

    @classmethod
    def build(
        cls,
        items: Iterable[str],
        *,
        specials: Sequence[str] = (),
        min_freq: int = 1,
        unk: str | None = None,
    ) -> Vocabulary:
        """Counts ``items`` and keeps those seen at least ``min_freq`` times, after ``specials``.

        Order is deterministic: specials, then by descending count, then alphabetically.
        """
        counts = Counter(items)
        kept = sorted((s for s, c in counts.items() if c >= min_freq and s not in specials), key=lambda s: (-counts[s], s))
        return cls([*specials, *kept], unk=unk)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, item: str) -> bool:
        return item in self.stoi

    def index(self, item: str) -> int:
        """The id of ``item``; unknown items give the ``unk`` id or raise ``KeyError``."""
        idx = self.stoi.get(item)
        if idx is None:
            if self.unk is None:
                raise KeyError(item)
            return self.stoi[self.unk]
        return idx

    def encode(self, items: Sequence[str]) -> list[int]:
        return [self.index(s) for s in items]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def to_dict(self) -> dict:
        return {"itos": list(self.itos), "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        return cls(d["itos"], unk=d.get("unk"))


# ---------------------------------------------------------------------------------------------------------------------
# Normalisers


_NUM_ONES = "zero one two three four five six seven eight nine".split()


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize_text(text: str, kind: Literal["none", "lower", "asr_chars"] = "asr_chars") -> str:
    """Normalises a transcript.

    ``asr_chars`` (default for character CTC): lower-case, accents stripped, digits spelled one by one,
    hyphens and dashes become spaces, every character other than ``a-z``, apostrophe and space dropped,
    runs of spaces collapsed. ``lower`` only lower-cases and collapses whitespace; ``none`` keeps the text.
    """
    if kind == "none":
        return text
    if kind == "lower":
        return " ".join(text.lower().split())
    if kind != "asr_chars":
        raise ValueError(f"normaliser must be one of none|lower|asr_chars, got {kind!r}")
    text = _strip_accents(text.lower())
    text = re.sub(r"\d", lambda m: f" {_NUM_ONES[int(m.group())]} ", text)
    text = re.sub(r"[-\u2010-\u2015_/]+", " ", text)
    text = text.replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"[^a-z' ]", "", text)
    text = re.sub(r"(^|\s)'+|'+(\s|$)", " ", text)  # quote marks, not apostrophes inside words
    return " ".join(text.split())


class CharTokenizer:
    """Character tokenizer for CTC: id 0 is the blank, then space, apostrophe and the letters (by default).

    Args:
        alphabet: The characters, in id order after the blank.
    """

    kind = "char"

    def __init__(self, alphabet: str = " 'abcdefghijklmnopqrstuvwxyz") -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet has repeated characters: {alphabet!r}")
        self.alphabet = alphabet
        self.tokens = [BLANK, *alphabet]
        self._stoi = {c: i for i, c in enumerate(self.tokens)}
        self.blank = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self._stoi or c == BLANK}

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; raises ``ValueError`` naming characters outside the alphabet."""
        bad = self.unknown_chars(text)
        if bad:
            raise ValueError(f"characters outside the tokenizer alphabet: {''.join(sorted(bad))!r}")
        return [self._stoi[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: blanks dropped; runs of spaces (which CTC can emit) collapse to one, none at the ends."""
        text = "".join(self.tokens[i] for i in ids if i != self.blank)
        return " ".join(w for w in text.split(" ") if w)

    def to_dict(self) -> dict:
        return {"kind": "char", "alphabet": self.alphabet}


def read_lines(path: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The lines of a text input, UTF-8 by rule: ``([(1-based line, text)], [(1-based line, problem)])``.

    ``path`` ``-`` reads stdin (as bytes, so the same rule holds whatever the terminal's locale). A line that is
    not valid UTF-8 is not guessed at (replacement characters would silently turn its words into ``<unk>``): it
    is left out and listed in the problems (``not UTF-8 text (byte 0x..)``); the caller names it and skips it or
    stops, as its ``strict`` rule says.

    Raises:
        DataError: the file cannot be read (one line naming it).
    """
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from None
    good, problems = [], []
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            good.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            problems.append((n, f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"))
    return good, problems
