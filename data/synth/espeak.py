"""eSpeak NG speech synthesis through ctypes: :func:`synthesize` speaks one line with word timings.

The shared library and voice data come from the ``espeakng-loader`` wheel (no system package needed).
:func:`synthesize` returns float32 mono audio, its sample rate and word timings taken from eSpeak's word
events; :func:`resample` changes the rate in numpy, so corpus worker processes need not import torch.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import threading
from pathlib import Path

import numpy as np

__all__ = ["WordTiming", "espeak_sample_rate", "resample", "synthesize"]

WordTiming = tuple[str, float, float]

# --------------------------------------------------------------------------------------------------
# eSpeak NG through ctypes (speak_lib.h)
# --------------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT``; ``audio_position`` is in ms, ``text_position`` is 1-based in characters."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _VoiceStruct(ctypes.Structure):
    """``espeak_VOICE``."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Engine:
    """One initialised eSpeak NG library per process; every call must hold :data:`_LOCK`."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "eSpeak NG is not available: install the 'espeakng-loader' package (pip install espeakng-loader)"
            ) from e
        lib_path = espeakng_loader.get_library_path()
        try:
            data_path = espeakng_loader.get_data_path()
            lib = ctypes.CDLL(lib_path)
        except (OSError, RuntimeError) as e:
            raise RuntimeError(
                f"cannot load eSpeak NG from the 'espeakng-loader' package ({lib_path}): {e}; "
                "reinstall it with pip install --force-reinstall espeakng-loader"
            ) from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_GetCurrentVoice.argtypes = []
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_VoiceStruct)
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int

        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with voice data at {data_path}")
        self.lib = lib
        self.sample_rate = int(rate)
        self.data_path = Path(data_path)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []  # (text_position, length, audio_position ms)
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: the library holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        if events:
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                ev = events[i]
                if ev.type == _EVENT_WORD:
                    self._events.append((ev.text_position, ev.length, ev.audio_position))
                i += 1
        return 0  # continue synthesis

    def set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        self._voice = None
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"unknown eSpeak NG voice {voice!r} (voices live in {self.data_path})")
        if "+" in voice:
            # A missing variant is silently ignored by eSpeak; the loaded identifier tells.
            current = self.lib.espeak_GetCurrentVoice()
            ident = (current.contents.identifier or b"").decode(errors="replace") if current else ""
            variant = voice.split("+", 1)[1]
            if not ident.lower().endswith("+" + variant.lower()):
                raise ValueError(f"unknown eSpeak NG voice variant {variant!r} in {voice!r}")
        self._voice = voice

    def speak(self, text: str) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        self._chunks, self._events = [], []
        buf = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        events = self._events
        self._chunks, self._events = [], []
        return audio, events


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _reset_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a lock held by another thread at fork time would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _engine() -> _Engine:
    """Returns the process's engine, initialising it on first use (caller holds :data:`_LOCK`)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def espeak_sample_rate() -> int:
    """The sample rate eSpeak NG synthesises at (22050 Hz for the bundled voices)."""
    with _LOCK:
        return _engine().sample_rate


# --------------------------------------------------------------------------------------------------
# Signal helpers
# --------------------------------------------------------------------------------------------------


def _sinc_kernel(orig: int, new: int, width: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """Windowed-sinc (Hann) polyphase kernels, as in ``torchaudio.functional.resample``."""
    base = min(orig, new) * rolloff
    pad = int(math.ceil(width * orig / base))
    idx = np.arange(-pad, pad + orig, dtype=np.float64)[None, :] / orig
    t = np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx
    t = np.clip(t * base, -width, width)
    window = np.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, 1.0, np.sin(t) / np.where(t == 0, 1.0, t))
    return (kernels * window * (base / orig)).astype(np.float32), pad


_KERNELS: dict[tuple[int, int], tuple[np.ndarray, int]] = {}


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float signal in numpy.

    Numerically matches ``torchaudio.functional.resample`` with its defaults (sinc interpolation, Hann
    window, 6 zero crossings, rolloff 0.99) without importing torch in the worker processes.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == new_sr or audio.size == 0:
        return audio.copy()
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    if (orig, new) not in _KERNELS:
        _KERNELS[(orig, new)] = _sinc_kernel(orig, new)
    kernel, pad = _KERNELS[(orig, new)]
    padded = np.pad(audio, (pad, pad + orig))
    frames = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig])
    out = (frames @ kernel.T).reshape(-1)  # (n_frames, new) -> interleaved output samples
    return out[: int(math.ceil(new * audio.size / orig))].astype(np.float32)


def _frame_rms(audio: np.ndarray, hop: int) -> np.ndarray:
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    return np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1))


def _active_frames(audio: np.ndarray, hop: int, rel_db: float = -40.0) -> np.ndarray:
    rms = _frame_rms(audio, hop)
    if rms.size == 0 or rms.max() <= 0:
        return np.zeros(rms.shape, dtype=bool)
    return rms > max(rms.max() * 10 ** (rel_db / 20), 1e-4)


# --------------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------------


def _word_spans(text: str) -> list[tuple[str, int, int]]:
    """(word, 1-based start char, 1-based end char inclusive), matching eSpeak's text_position."""
    return [(m.group(), m.start() + 1, m.end()) for m in re.finditer(r"\S+", text)]


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    word_gap: int = 0,
    sample_rate: int | None = None,
    trim: bool = True,
) -> tuple[np.ndarray, int, list[WordTiming]]:
    """Speaks ``text`` with eSpeak NG.

    Args:
        text: The text, one line. Words are whitespace-separated tokens.
        voice: An eSpeak NG voice name, optionally with a variant: ``"en-us"``, ``"en-gb-x-rp+f2"``.
        rate: Speaking rate in words per minute (eSpeak accepts about 80-450).
        pitch: Base pitch, 0-100.
        pitch_range: Pitch range (intonation), 0-100; 0 is monotone.
        word_gap: Extra pause between words, in units of 10 ms.
        sample_rate: Resample to this rate; ``None`` keeps eSpeak's own (22050 Hz).
        trim: Cut leading and trailing silence (keeping 10 ms before and 30 ms after speech).

    Returns:
        ``(audio, sample_rate, words)``: float32 mono audio in [-1, 1], its sample rate and one
        ``(word, start_s, end_s)`` per token of ``text``, in order. Starts come from eSpeak's word
        events; a word ends where its last non-silent 10 ms frame before the next word's start ends
        (so pauses between words are excluded), the last word at the end of speech.

    Raises:
        ValueError: For empty text or an unknown voice. RuntimeError: When eSpeak NG cannot be loaded.
    """
    if not text or not text.strip():
        raise ValueError("cannot synthesise empty text")
    if "\n" in text or "\r" in text:
        text = " ".join(text.split())
    with _LOCK:
        eng = _engine()
        eng.set_voice(voice)
        lib = eng.lib
        for param, value in (
            (_PARAM_RATE, rate),
            (_PARAM_PITCH, pitch),
            (_PARAM_RANGE, pitch_range),
            (_PARAM_WORDGAP, word_gap),
            (_PARAM_VOLUME, 100),
        ):
            if lib.espeak_SetParameter(param, int(value), 0) != _EE_OK:
                raise ValueError(f"eSpeak NG rejected parameter {param} = {value}")
        raw, events = eng.speak(text)
        sr = eng.sample_rate

    audio = raw.astype(np.float32) / 32768.0
    n = len(audio)
    spans = _word_spans(text)

    # Map each word event to the token containing its character position; the first event wins.
    starts: list[float | None] = [None] * len(spans)
    for pos, _length, ms in events:
        for k, (_w, a, b) in enumerate(spans):
            if a <= pos <= b:
                if starts[k] is None:
                    starts[k] = min(ms / 1000.0, n / sr)
                break
    starts = _fill_missing_starts(starts, spans, n / sr)

    hop = max(1, int(round(0.01 * sr)))
    active = _active_frames(audio, hop)
    if active.any():
        speech_start = int(np.argmax(active)) * hop
        speech_end = min(n, (len(active) - int(np.argmax(active[::-1]))) * hop)
    else:
        speech_start, speech_end = 0, n

    # Word ends: the last active frame before the next word starts.
    ends: list[float] = []
    for k, s in enumerate(starts):
        limit = starts[k + 1] if k + 1 < len(starts) else speech_end / sr
        f0, f1 = int(math.floor(s * sr / hop)), int(math.ceil(limit * sr / hop))
        seg = active[f0:f1]
        end = limit
        if seg.any():
            end = min(limit, (f0 + len(seg) - int(np.argmax(seg[::-1]))) * hop / sr)
        ends.append(max(end, min(s + 0.01, limit)))

    offset = 0
    if trim:
        lo = max(0, speech_start - int(0.01 * sr))
        hi = min(n, speech_end + int(0.03 * sr))
        audio = audio[lo:hi]
        offset = lo
    dur = len(audio) / sr
    shift = offset / sr
    timings = []
    for (w, _a, _b), s, e in zip(spans, starts, ends, strict=True):
        s2 = min(max(s - shift, 0.0), dur)
        e2 = min(max(e - shift, s2), dur)
        timings.append((w, s2, e2))

    if sample_rate is not None and sample_rate != sr:
        audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(sr), timings


def _fill_missing_starts(
    starts: list[float | None], spans: list[tuple[str, int, int]], total: float
) -> list[float]:
    """Interpolates starts of words eSpeak sent no event for, by character position; keeps order."""
    known = [(spans[k][1], s) for k, s in enumerate(starts) if s is not None]
    if not known:
        known = [(1, 0.0)]
    end_char = spans[-1][2] + 1
    anchors_c = [c for c, _ in known] + ([end_char] if known[-1][0] < end_char else [])
    anchors_t = [t for _, t in known] + ([total] if known[-1][0] < end_char else [])
    out: list[float] = []
    prev = 0.0
    for k, s in enumerate(starts):
        if s is None:
            s = float(np.interp(spans[k][1], anchors_c, anchors_t))
        s = max(s, prev)
        out.append(s)
        prev = s
    return out
