"""Audio decoding with soundfile (no FFmpeg): any rate, mono downmix, resampling, and validation of samples."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from data.errors import DataError

# Float audio is nominally in [-1, 1]; far beyond is a scaling error, and powers would overflow float32.
MAX_AMPLITUDE = 1e3


class AudioError(DataError):
    """An audio file or cell cannot be used; the message names it and says why."""


@dataclass
class AudioRef:
    """Where an utterance's audio is: a path, or encoded bytes (from a dataset cell) with a display name."""

    path: str | None = None
    data: bytes | None = None

    @property
    def name(self) -> str:
        return self.path or "<bytes>"

    def open(self):
        return io.BytesIO(self.data) if self.data is not None else self.path


def audio_ref(cell, *, base_dir: str | None = None) -> AudioRef:
    """An :class:`AudioRef` from a ``datasets`` Audio(decode=False) cell (``{"bytes", "path"}``) or a path string."""
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data is None and path is None:
            raise AudioError("audio cell has neither bytes nor path")
        return AudioRef(path=path, data=data)
    if isinstance(cell, str):
        if base_dir is not None and not cell.startswith("/"):
            import os

            cell = os.path.join(base_dir, cell)
        return AudioRef(path=cell)
    raise AudioError(f"audio cell must be a dict with bytes/path or a path string, got {type(cell).__name__}")


def audio_duration(ref: AudioRef) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(ref.open())
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes a one-line message
        raise AudioError(f"{ref.name}: unreadable audio ({_short(e)})") from None
    if info.samplerate <= 0:
        raise AudioError(f"{ref.name}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate


def load_audio(ref: AudioRef, sample_rate: int) -> torch.Tensor:
    """Decodes, downmixes to mono and resamples to ``sample_rate``; float32 ``(S,)``.

    Raises:
        AudioError: unreadable or truncated file, empty audio, or non-finite samples (names the file).
    """
    try:
        data, sr = sf.read(ref.open(), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"{ref.name}: unreadable audio ({_short(e)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{ref.name}: zero-length audio")
    if not np.isfinite(data).all():
        raise AudioError(f"{ref.name}: audio contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_AMPLITUDE:
        raise AudioError(f"{ref.name}: peak amplitude {peak:.3g} is not audio in [-1, 1] (a scaling error?)")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return wav


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    g = np.gcd(int(orig), int(new))
    return AF.resample(wav, int(orig) // g, int(new) // g)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


@lru_cache(maxsize=1)
def supported_extensions() -> tuple[str, ...]:
    return tuple(f".{ext.lower()}" for ext in sf.available_formats())
