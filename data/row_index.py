"""The row index of a speech split: every row checked (transcript, duration, audio header) and kept as a row number
into the Arrow table, with the durations, so no audio is held; and the utterance a row becomes."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.audio import AudioError, AudioRef, audio_duration, audio_ref
from data.errors import DataError
from data.rows import SkipCounter, row_at
from data.text import normalize_text

log = logging.getLogger("data.speech")


@dataclass
class Utterance:
    id: str
    audio: AudioRef
    text: str
    duration: float
    source: int = 0  # index into SpeechDataModule.source_names (0 for a single corpus)



# Rows are scanned in chunks, so a split's audio bytes never sit in Python memory all at once.
_SCAN_ROWS = 2000


@dataclass
class SplitIndex:
    """The usable utterances of one split, as row numbers into its table: no audio is held here.

    ``table`` is the memory-mapped ``datasets.Dataset`` (or any sequence of row dicts); an item's audio cell,
    transcript and id are read from it by row number when a batch needs them, so memory grows with the number
    of utterances (12 bytes each), not with their audio.

    Attributes:
        rows: ``(N,)`` int64 row numbers into ``table`` of the utterances that passed the checks.
        durations: ``(N,)`` float32 seconds.
    """

    table: Any
    rows: np.ndarray
    durations: np.ndarray
    audio_column: str
    text_column: str
    id_column: str | None
    base_dir: str | None
    normalizer: str
    source: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def utterance(self, k: int) -> Utterance:
        """The ``k``-th utterance, read from the table now (its audio reference lives as long as the caller's)."""
        row_no = int(self.rows[k])
        row = self.table[row_no]
        rid = row.get(self.id_column) if self.id_column else None
        ref = audio_ref(row.get(self.audio_column), base_dir=self.base_dir)
        if rid is None:  # no id column: the audio file's name says which utterance it is, a bare row number does not
            rid = os.path.basename(ref.path) if ref.path else f"row {row_no + 1}"
        return Utterance(str(rid), ref, normalize_text(row[self.text_column], self.normalizer),
                         float(self.durations[k]), self.source)

    def texts(self) -> Iterator[str]:
        """Normalised transcripts in index order, read from the table in chunks (no audio is read)."""
        table = self.table
        if hasattr(table, "select_columns"):
            table = table.select_columns([self.text_column])
        for start in range(0, len(self.rows), _SCAN_ROWS):
            rows = self.rows[start:start + _SCAN_ROWS]
            if hasattr(table, "select_columns"):
                cells = table[rows][self.text_column] if len(rows) else []
            else:
                cells = [table[int(r)][self.text_column] for r in rows]
            yield from (normalize_text(t, self.normalizer) for t in cells)


def index_rows(rows, *, where: str, audio_column: str, text_column: str, id_column: str | None,
               duration_column: str | None, base_dir: str | None, normalizer: str, tokenizer,
               min_duration: float, max_duration: float, validate: bool, skips: SkipCounter,
               source: int = 0, only_texts: list[str] | None = None) -> SplitIndex:
    """Checks every row (transcript, then duration and audio header) and keeps the usable row numbers.

    The audio column is read only where a header must be (``validate``, or no duration column): with
    ``validate=false`` the durations read from headers are cached beside the prepared dataset, so the
    next run reads none. Bad rows are skipped, counted and named, as before. With ``only_texts``, rows whose
    normalised transcript is not one of them are left out (silently: a selection, not a fault).
    """
    only = {normalize_text(t, normalizer) for t in only_texts} if only_texts else None
    columns = list(getattr(rows, "column_names", None) or [])
    id_column, duration_column = check_columns(columns, where=where, audio_column=audio_column,
                                                text_column=text_column, id_column=id_column,
                                                duration_column=duration_column)
    cache = _DurationCache(rows, audio_column) if not validate and duration_column is None else None
    read_headers = validate or duration_column is None
    keep_rows: list[int] = []
    keep_durations: list[float] = []
    wanted = [c for c in dict.fromkeys((text_column, id_column, duration_column)) if c]
    for start, chunk in _row_chunks(rows, wanted):
        todo = []  # rows whose audio header must be read: (row number, id, text)
        for j, row in enumerate(chunk):
            i = start + j
            if only is not None and not (isinstance(row.get(text_column), str)
                                         and normalize_text(row[text_column], normalizer) in only):
                continue
            checked = _check_text(i, row, text_column=text_column, id_column=id_column, normalizer=normalizer,
                                  tokenizer=tokenizer, skips=skips)
            if checked is None:
                continue
            rid, _ = checked
            known = cache.get(i) if cache is not None else None
            if known is None and not read_headers and row.get(duration_column):
                known = float(row[duration_column])
            if known is None:
                todo.append((i, rid))
                continue
            if known < 0:
                skips.skip("unreadable", f"{row_at(skips, i, rid)}: unreadable audio (from the duration cache "
                                         f"{cache.path if cache else ''}; delete it to read the header again)")
                continue
            if _duration_ok(i, rid, "", known, min_duration, max_duration, skips):
                keep_rows.append(i)
                keep_durations.append(known)
        if todo:
            cells = _audio_cells(rows, audio_column, [i for i, _ in todo])
            for (i, rid), cell in zip(todo, cells, strict=True):
                try:
                    ref = audio_ref(cell, base_dir=base_dir)
                    duration = audio_duration(ref)  # reads the header: rejects unreadable files up front
                except AudioError as e:
                    skips.skip("unreadable", f"{row_at(skips, i, rid)}: {e}")
                    if cache is not None:
                        cache.put(i, -1.0)
                    continue
                if cache is not None:
                    cache.put(i, duration)
                if _duration_ok(i, rid, ref.name, duration, min_duration, max_duration, skips):
                    keep_rows.append(i)
                    keep_durations.append(duration)
    if cache is not None:
        cache.save()
    table = rows
    if hasattr(rows, "select_columns"):
        # Items read only these columns: a narrower row is cheaper to fetch and to pickle to workers.
        table = rows.select_columns([c for c in dict.fromkeys((audio_column, text_column, id_column)) if c])
    return SplitIndex(table, np.asarray(keep_rows, dtype=np.int64), np.asarray(keep_durations, dtype=np.float32),
                      audio_column, text_column, id_column, base_dir, normalizer, source)


def _row_chunks(rows, columns: list[str]) -> Iterator[tuple[int, list[dict]]]:
    """``(first row number, rows)`` chunks holding only ``columns`` (a Dataset is read column-wise)."""
    if hasattr(rows, "select_columns"):
        narrow = rows.select_columns(columns)
        for start in range(0, len(narrow), _SCAN_ROWS):
            batch = narrow[start:start + _SCAN_ROWS]
            n = len(batch[columns[0]])
            yield start, [{c: batch[c][j] for c in columns} for j in range(n)]
        return
    chunk: list[dict] = []
    start = 0
    for i, row in enumerate(rows):
        chunk.append(row if isinstance(row, dict) else {})
        if len(chunk) == _SCAN_ROWS:
            yield start, chunk
            chunk, start = [], i + 1
    if chunk:
        yield start, chunk


def _audio_cells(rows, audio_column: str, row_numbers: list[int]) -> list:
    if hasattr(rows, "select_columns"):
        return rows.select_columns([audio_column])[row_numbers][audio_column]
    return [rows[i].get(audio_column) if isinstance(rows[i], dict) else None for i in row_numbers]


def _check_text(i: int, row: dict, *, text_column: str, id_column: str | None, normalizer: str, tokenizer,
                skips: SkipCounter) -> tuple[str, str] | None:
    """``(id, normalised text)`` of a row, or None (counted, named) if its transcript is unusable."""
    rid = str(row[id_column]) if id_column and row.get(id_column) is not None else ""
    raw = row.get(text_column)
    if not isinstance(raw, str):
        skips.skip("bad_text", f"{row_at(skips, i, rid)}: text is {type(raw).__name__}, not a string")
        return None
    text = normalize_text(raw, normalizer)
    if not text:
        skips.skip("empty_text", f"{row_at(skips, i, rid)}: empty transcript after normalisation ({raw[:40]!r})")
        return None
    bad = tokenizer.unknown_chars(text)
    if bad:
        skips.skip("oov_chars", f"{row_at(skips, i, rid)}: characters outside the vocabulary {''.join(sorted(bad))!r}")
        return None
    return rid, text


def _duration_ok(i: int, rid: str, name: str, duration: float, min_duration: float, max_duration: float,
                 skips: SkipCounter) -> bool:
    name = f" {name}" if name else ""
    if duration <= 0:
        skips.skip("empty_audio", f"{row_at(skips, i, rid)}{name}: zero-length audio")
        return False
    if duration < min_duration or duration > max_duration:
        skips.skip("duration", f"{row_at(skips, i, rid)}{name}: {duration:.2f}s outside [{min_duration}, {max_duration}]s")
        return False
    return True


class _DurationCache:
    """Durations read from audio headers, saved beside a prepared dataset's Arrow files.

    Keyed by the dataset's fingerprint (which changes with its data files and transforms) and the audio column,
    so ``validate=false`` on a corpus without a duration column reads every header once, not once per run.
    Values: seconds, -1 for an unreadable header, NaN for not read yet. A dataset with no cache files (built in
    memory) or a read-only cache directory simply gets no cache.
    """

    def __init__(self, rows, audio_column: str) -> None:
        self.path: Path | None = None
        self.values: np.ndarray | None = None
        self.dirty = False
        files = getattr(rows, "cache_files", None)
        fingerprint = getattr(rows, "_fingerprint", None)
        if not files or not fingerprint:
            return
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", audio_column)
        self.path = Path(files[0]["filename"]).parent / f"rnnlab-durations-{fingerprint}-{safe}.npy"
        n = len(rows)
        try:
            values = np.load(self.path) if self.path.is_file() else None
        except (OSError, ValueError):
            values = None
        self.values = values if values is not None and values.shape == (n,) else np.full(n, np.nan, np.float32)

    def get(self, i: int) -> float | None:
        if self.values is None or np.isnan(self.values[i]):
            return None
        return float(self.values[i])

    def put(self, i: int, duration: float) -> None:
        if self.values is not None:
            self.values[i] = duration
            self.dirty = True

    def save(self) -> None:
        if self.path is None or self.values is None or not self.dirty:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, self.values)
            os.replace(tmp, self.path)  # atomic: ranks writing the same cache never leave half a file
        except OSError as e:
            log.info("duration cache not written (%s): %s", self.path, e)
            tmp.unlink(missing_ok=True)


def check_columns(columns: list[str], *, where: str, audio_column: str, text_column: str, id_column: str | None,
                   duration_column: str | None) -> tuple[str | None, str | None]:
    """Raises on a missing audio/text column; returns the id and duration columns that exist (or None)."""
    for col, field in ((audio_column, "audio_column"), (text_column, "text_column")):
        if columns and col not in columns:
            raise DataError(f"{where}: missing column {col!r} (columns are {columns}); set data.{field}")
    if columns and duration_column not in columns:
        duration_column = None
    if columns and id_column not in columns:
        id_column = None
    return id_column, duration_column


def row_to_utterance(i: int, row, *, audio_column: str, text_column: str, id_column: str | None,
                      duration_column: str | None, base_dir: str | None, normalizer: str, tokenizer,
                      min_duration: float, max_duration: float, validate: bool,
                      skips: SkipCounter) -> Utterance | None:
    """One streamed row checked (transcript, audio header, duration); None, counted and named, if unusable."""
    checked = _check_text(i, row, text_column=text_column, id_column=id_column, normalizer=normalizer,
                          tokenizer=tokenizer, skips=skips)
    if checked is None:
        return None
    rid, text = checked
    try:
        ref = audio_ref(row.get(audio_column), base_dir=base_dir)
        if not validate and duration_column and row.get(duration_column):
            duration = float(row[duration_column])
        else:
            duration = audio_duration(ref)  # reads the header: rejects unreadable files up front
    except AudioError as e:
        skips.skip("unreadable", f"{row_at(skips, i, rid)}: {e}")
        return None
    if not _duration_ok(i, rid, ref.name, duration, min_duration, max_duration, skips):
        return None
    return Utterance(rid or (os.path.basename(ref.path) if ref.path else f"row {i + 1}"), ref, text, duration)
