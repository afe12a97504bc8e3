"""The one audio reader of commands and the server: files, directories and uploaded bytes, any rate, mono float32."""

from __future__ import annotations

from pathlib import Path

import torch

from data.audio import AudioError, AudioRef, load_audio, supported_extensions
from pipelines.inference.errors import InferenceError


def _audio_in(item: str | Path) -> list[Path]:
    p = Path(item)
    if p.is_dir():
        exts = set(supported_extensions())
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
    if p.exists():
        return [p]
    raise FileNotFoundError(f"no such file or directory: {p}")


def find_audio(inputs: list[str]) -> list[Path]:
    """Files given directly, plus every audio file under given directories (sorted).

    Raises:
        FileNotFoundError: an input that does not exist.
    """
    return [f for item in inputs for f in _audio_in(item)]


def audio_files(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """``(entries, empty)``: the audio files of ``inputs`` in input order, with each input that holds none (a
    directory) in its place, and those inputs.

    Raises:
        InferenceError: a missing input, or no audio file at all (one line saying where it looked).
    """
    entries, empty = [], []
    for item in inputs:
        try:
            found = _audio_in(item)
        except FileNotFoundError as e:
            raise InferenceError(str(e)) from None
        if not found:
            empty.append(Path(item))
        entries += found or [Path(item)]
    if len(empty) == len(entries):
        exts = ", ".join(sorted({e.lstrip(".") for e in supported_extensions()} & {"wav", "flac", "ogg", "mp3"}))
        raise InferenceError(f"no audio files in {', '.join(map(str, empty))} (looked for {exts}, ...)")
    return entries, empty


def read_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Mono float32 ``(S,)`` at ``sample_rate``.

    Raises:
        AudioError: not readable audio, empty or non-finite (one line naming the file).
    """
    return load_audio(AudioRef(path=str(path)), sample_rate)


def read_audio_bytes(data: bytes, sample_rate: int, name: str = "upload") -> torch.Tensor:
    """Mono float32 ``(S,)`` at ``sample_rate`` from an encoded file's bytes (an upload).

    Raises:
        AudioError: not readable audio, empty or non-finite (one line naming ``name``).
    """
    if not data:
        raise AudioError(f"{name}: empty file")
    return load_audio(AudioRef(data=bytes(data), label=name), sample_rate)
