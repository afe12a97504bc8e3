"""What every DataModule shares about rows: counting and naming skipped rows, and reading audio undecoded."""

from __future__ import annotations

import logging
from collections import Counter

from data.sources import row_place

log = logging.getLogger("data.speech")


class SkipCounter:
    """Counts skipped utterances per reason and warns once per file, naming it."""

    def __init__(self, where: str, max_warnings: int = 20) -> None:
        self.where = where
        self.counts: Counter[str] = Counter()
        self.max_warnings = max_warnings
        self._warned = 0

    def skip(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if self._warned < self.max_warnings:
            log.warning("%s: skipped %s", self.where, message)
            self._warned += 1
            if self._warned == self.max_warnings:
                log.warning("%s: further skip warnings suppressed (see the run summary for counts)", self.where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def row_at(skips: SkipCounter, i: int, rid: str) -> str:
    """Row ``i`` (0-based) of the file ``skips`` names, as an editor counts it, with the row's id if it has one."""
    return f"{row_place(skips.where, i)} ({rid})" if rid else row_place(skips.where, i)


def no_decode(rows, audio_column: str, where: str):
    """Casts the audio column to ``Audio(decode=False)``: decoding happens here with soundfile, not torchcodec."""
    import datasets

    features = getattr(rows, "features", None)
    if features is not None and audio_column in features and isinstance(features[audio_column], datasets.Audio):
        rows = rows.cast_column(audio_column, datasets.Audio(decode=False))
    return rows
