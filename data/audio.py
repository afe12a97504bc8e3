"""Audio decoding with soundfile (no FFmpeg): any rate, mono downmix, resampling, and validation of samples."""

from __future__ import annotations

import io
import os
import sys
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
    label: str | None = None  # how messages name bytes (e.g. an upload's file name)

    @property
    def name(self) -> str:
        return self.path or self.label or "<bytes>"

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
        info = _decode(sf.info, ref)
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes a one-line message
        raise _unreadable(ref, e) from None
    if info.samplerate <= 0:
        raise AudioError(f"{ref.name}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate


def load_audio(ref: AudioRef, sample_rate: int) -> torch.Tensor:
    """Decodes, downmixes to mono and resamples to ``sample_rate``; float32 ``(S,)``.

    Raises:
        AudioError: unreadable or truncated file, empty audio, or non-finite samples (names the file).
    """
    wav, sr = load_audio_native(ref)
    if sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return wav


def load_audio_native(ref: AudioRef) -> tuple[torch.Tensor, int]:
    """``(mono float32 (S,), sample rate)`` at the file's own rate: the one reader every caller goes through.

    Raises:
        AudioError: as :func:`load_audio`.
    """
    try:
        data, sr = _decode(lambda f: sf.read(f, dtype="float32", always_2d=True), ref)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(ref, e) from None
    if data.shape[0] == 0:
        raise AudioError(f"{ref.name}: zero-length audio")
    if not np.isfinite(data).all():
        raise AudioError(f"{ref.name}: audio contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_AMPLITUDE:
        raise AudioError(f"{ref.name}: peak amplitude {peak:.3g} is not audio in [-1, 1] (a scaling error?)")
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))), int(sr)


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    g = np.gcd(int(orig), int(new))
    return AF.resample(wav, int(orig) // g, int(new) // g)


# How MPEG audio starts: an ID3 tag or a frame sync (11 set bits). Other formats libsndfile names by their magic.
_MPEG_START = (b"ID3",)
_CONTAINER_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff", b".snd")


def _decode(fn, ref: AudioRef):
    """``fn(ref.open())``; for a ``.mp3`` path that does not start like MPEG audio, with file descriptor 2 silenced.

    libsndfile hands an unrecognised ``.mp3`` file to libmpg123, which writes its resync notes straight to the
    process's stderr (not through Python); the one-line error raised afterwards says what matters.
    """
    if not _suspect_mp3(ref):
        return fn(ref.open())
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            return fn(ref.open())
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _head(ref: AudioRef, n: int = 512) -> bytes:
    if ref.data is not None:
        return bytes(ref.data[:n])
    try:
        with open(ref.path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _suspect_mp3(ref: AudioRef) -> bool:
    if ref.path is None or not ref.path.lower().endswith(".mp3") or not os.path.isfile(ref.path):
        return False
    head = _head(ref, 4)
    mpeg = head.startswith(_MPEG_START) or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    return not mpeg and not head.startswith(_CONTAINER_MAGIC)


def _unreadable(ref: AudioRef, e: Exception) -> AudioError:
    """The one-line error for a file the decoder refused: ``not audio (...)`` when it is no audio format at all."""
    why = _short(e)
    regular = ref.data is not None or (ref.path is not None and os.path.isfile(ref.path))
    # libsndfile reports an .mp3 it cannot parse as "not a regular file (possibly a pipe?)", whatever it holds.
    if regular and ("Format not recognised" in why or "possibly a pipe" in why):
        head = _head(ref)
        if not head:
            what = "empty file"
        elif b"\0" not in head and _is_text(head):
            what = "a text file"
        else:
            what = "format not recognised"
        return AudioError(f"{ref.name}: not audio ({what})")
    return AudioError(f"{ref.name}: unreadable audio ({why})")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # a character cut at the end of the sample
    return True


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


@lru_cache(maxsize=1)
def supported_extensions() -> tuple[str, ...]:
    return tuple(f".{ext.lower()}" for ext in sf.available_formats())
