"""Text as it is spoken: numbers, years and letter-digit codes in words.

Slot data (ATIS, SNIPS) is written with digits and abbreviations (``"after 5 pm"``, ``"st. louis"``,
``"flight 1291"``, ``"dc10"``); a character CTC model only writes letters, apostrophes and spaces. So the text
given to a synthesiser, which is also the transcript a model learns, is :func:`spoken_form` of the tokens: numbers
as words, letter-digit codes spelled out, ``st.`` as ``saint``. :func:`slot_words` goes the short way back
(a transcript to tokens for a slot tagger); numbers stay words, since undoing them is ambiguous (``one way``).
Slot data, the spoken slot commands and the synthesiser (:mod:`data.synth`) all use these rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["number_to_words", "plain_words", "slot_words", "spoken_form", "year_to_words"]


def plain_words(text: str) -> str:
    """Lower-cases and keeps only ``a-z``, apostrophes and single spaces (the synthetic corpus's transcripts)."""
    text = re.sub(r"[^a-z' ]+", " ", text.lower().replace("\u2019", "'"))
    return " ".join(text.split())


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DIGITS = _ONES[:10]


def number_to_words(n: int, *, british_and: bool = True) -> str:
    """Cardinal number in words, 0 <= n < 1,000,000: ``241 -> "two hundred and forty one"``."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        head = _ONES[n // 100] + " hundred"
        rest = n % 100
        if rest == 0:
            return head
        return head + (" and " if british_and else " ") + number_to_words(rest)
    head = number_to_words(n // 1000, british_and=british_and) + " thousand"
    rest = n % 1000
    if rest == 0:
        return head
    joiner = " and " if (british_and and rest < 100) else " "
    return head + joiner + number_to_words(rest, british_and=british_and)


def year_to_words(y: int) -> str:
    hi, lo = divmod(y, 100)
    if 2000 <= y < 2010:
        return "two thousand" + ("" if lo == 0 else " and " + _ONES[lo])
    if lo == 0:
        return number_to_words(hi) + " hundred"
    return number_to_words(hi) + " " + ("oh " + _ONES[lo] if lo < 10 else number_to_words(lo))


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
            out.extend(plain_words(t).split())
            continue
        for run in _LETTERS_DIGITS.findall(t):
            out.extend((_number(run) if run[0].isdigit() else " ".join(run)).split())
    return out


def slot_words(transcript: str) -> list[str]:
    """A transcript as slot-tagger tokens: lower-case words, ``saint`` back to the slot data's ``st.``."""
    return [_BACK.get(w, w) for w in plain_words(transcript).split()]
