"""Noise banks for augmentation: the clips of one label (e.g. Speech Commands' ``silence``) of a local corpus.

Read through the same ``load_dataset`` path as every corpus (:func:`data.sources.load_split`); rows are filtered
by label before any audio is decoded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from data.audio import AudioError, audio_ref, load_audio
from data.errors import DataError
from data.sources import load_split, no_progress_bars, split_where

log = logging.getLogger(__name__)


def load_noise_clips(data_dir: str, *, split: str = "train", label_column: str = "label", label: str = "silence",
                     audio_column: str = "audio", sample_rate: int = 16000) -> list[torch.Tensor]:
    """Every clip of ``split`` whose ``label_column`` is ``label``, decoded at ``sample_rate``.

    Unreadable clips are skipped with one warning naming the file.

    Raises:
        DataError: the directory is missing, or holds no such clip (one line naming it).
    """
    if not Path(data_dir).expanduser().exists():
        raise DataError(f"noise directory not found: {data_dir}")
    where = split_where(data_dir, None, split)
    rows = load_split(None, split, data_dir=data_dir)
    columns = list(rows.column_names or [])
    if label_column not in columns:
        raise DataError(f"{where}: no {label_column!r} column for the noise bank (columns are {columns})")
    from datasets import Audio

    with no_progress_bars():
        rows = rows.filter(lambda r: r[label_column] == label).cast_column(audio_column, Audio(decode=False))
    base = Path(data_dir).expanduser()
    clips = []
    for row in rows:
        try:
            clips.append(load_audio(audio_ref(row[audio_column], base_dir=str(base)), sample_rate))
        except AudioError as e:
            log.warning("noise bank: skipped %s", e)
    if not clips:
        raise DataError(f"{where}: no {label_column}={label!r} clips for the noise bank")
    return clips
