"""The embedded default speech corpus: text generation and eSpeak NG synthesis.

rnnlab's default CTC recipe needs speech without a network or any files, so this module makes some.
It has three parts:

* :func:`synthesize` speaks a line of text with eSpeak NG, called through ``ctypes`` on the shared
  library bundled in the ``espeakng-loader`` wheel. It returns float32 mono audio, its sample rate and
  word timings taken from eSpeak's word events.
* :func:`generate_texts` (and :class:`TextGenerator`) is a small, seeded text generator: connected digit
  strings, numbers and years read as words, and short sentences from a grammar; about 400 words in all. All
  text is lower-case ``a-z``, apostrophes and single spaces.
* :func:`build_corpus` writes a Hugging Face ``audiofolder`` corpus (FLAC files plus a
  ``metadata.jsonl`` per split), varying voice, rate, pitch, noise, gain and padding, using worker
  processes. :func:`ensure_default_corpus` builds it once into the user cache and then reuses it.

Held-out text. Every generated utterance has a *combination key*: the whole text for digit strings,
numbers and years, and for sentences the template plus its two main slot fillers (for example
``("animals", "lazy", "fox")`` or ``("travel", "boston", "monday")``). Keys only use words that are in
the text, so one text always has one key. ``crc32`` of the key modulo 10
assigns the key to a split: 0 is validation, 1 is test, anything else train. Train never contains a
validation or test combination, so validation/test sentences pair words in ways the training set never
shows (every word itself still occurs in training), and digit strings and numbers in validation/test are
never in train. As a last guard, evaluation texts identical to a training text are dropped.

Reproducibility. The texts, voices, rates, pitches, noise, gain and padding are a pure function of the
seed and do not depend on the number of workers. eSpeak NG keeps a little state between calls (such as
the phase of its pitch flutter), so the waveforms themselves are not bit-identical from run to run.

Command line: ``python -m data.synth --out DIR --n-train 3000 ...`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import logging
import math
import multiprocessing
import os
import random
import re
import shutil
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "CORPUS_VERSION",
    "VOICES",
    "TextGenerator",
    "WordTiming",
    "build_corpus",
    "default_corpus_dir",
    "ensure_default_corpus",
    "espeak_sample_rate",
    "generate_texts",
    "load_corpus",
    "load_metadata",
    "normalize_text",
    "number_to_words",
    "resample",
    "synthesize",
    "vocabulary",
]

#: Bump when the corpus recipe changes so that cached corpora are rebuilt.
CORPUS_VERSION = 1

#: Voices used by :func:`build_corpus`: accents bundled with eSpeak NG, some with a voice variant
#: (``+m3`` male 3, ``+f2`` female 2, ``+klatt`` the Klatt formant synthesiser, ...). Every entry is
#: checked to load as named (a missing variant makes :func:`synthesize` raise).
VOICES: tuple[str, ...] = (
    "en-us",
    "en-us+m3",
    "en-us+f2",
    "en-us+f4",
    "en-us+klatt",
    "en",
    "en+m1",
    "en+f5",
    "en-gb-x-rp",
    "en-gb-x-rp+m7",
    "en-gb-scotland+f3",
    "en-us-nyc+m2",
)

WordTiming = tuple[str, float, float]

_ALLOWED_TEXT = re.compile(r"^[a-z']+( [a-z']+)*$")

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


# --------------------------------------------------------------------------------------------------
# Text generation
# --------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lower-cases and keeps only ``a-z``, apostrophes and single spaces."""
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


def _year_to_words(y: int) -> str:
    hi, lo = divmod(y, 100)
    if 2000 <= y < 2010:
        return "two thousand" + ("" if lo == 0 else " and " + _ONES[lo])
    if lo == 0:
        return number_to_words(hi) + " hundred"
    return number_to_words(hi) + " " + ("oh " + _ONES[lo] if lo < 10 else number_to_words(lo))


def _w(s: str) -> tuple[str, ...]:
    return tuple(s.split(","))


_ADJECTIVES = _w(
    "red,big,small,lazy,quick,brown,happy,quiet,old,young,little,black,white,green,yellow,hungry,"
    "sleepy,tiny,clever,grumpy,fuzzy,jolly,proud,wild"
)
_ANIMALS = _w(
    "cat,dog,fox,horse,zebra,bird,mouse,rabbit,duck,goat,sheep,cow,pig,lion,tiger,bear,monkey,frog,owl,"
    "snake,whale,wolf,jaguar,squirrel,penguin,kitten,puppy,ox"
)
_ANIMAL_VERBS = _w(
    "sees,chases,likes,watches,follows,hears,finds,knows,jumps over,hides from,waits for,visits,"
    "ignores,annoys,helps,loves"
)
_DEVICES = _w("lights,lamp,heater,fan,radio,television,oven,kettle,music,computer,dishwasher,projector")
_ROOMS = _w("kitchen,bedroom,bathroom,garage,hallway,office,living room,garden,basement,attic,study,nursery")
_OPENABLES = _w("window,door,curtains,blinds,fridge,gate,box,drawer")
_CITIES = _w(
    "boston,london,paris,tokyo,denver,chicago,seattle,dallas,madrid,berlin,vienna,zurich,quebec,jakarta,"
    "oslo,dublin,sydney,toronto,miami,phoenix,houston,lisbon,geneva,prague,cairo,rome,amsterdam,kyoto"
)
_DAYS = _w("monday,tuesday,wednesday,thursday,friday,saturday,sunday")
_MONTHS = _w("january,february,march,april,may,june,july,august,september,october,november,december")
_WHEN = _w(
    "today,tomorrow,tonight,this morning,this evening,this afternoon,next week,on the weekend,"
    "later today,tomorrow morning"
)
_PEOPLE = _w(
    "my mother,my father,my sister,my brother,the doctor,the office,james,sarah,peter,emma,oliver,sophie,"
    "jack,olivia,max,zoe,victor,quentin,julia,kevin,grandma,the plumber"
)
_CONTACT = _w("call,text,email,phone,message,remind,visit,thank")
_ITEMS = _w(
    "apples,bananas,eggs,bread,milk,cheese,butter,coffee,tea,juice,pizza,onions,carrots,potatoes,tomatoes,"
    "yoghurt,rice,sugar,lemons,oranges,biscuits,jam,soap,batteries,envelopes,grapes,peaches,walnuts"
)
_OBJECTS = _w(
    "keys,phone,wallet,glasses,umbrella,jacket,passport,ticket,book,laptop,charger,map,hat,bag,pencil,"
    "scissors,box,jigsaw puzzle,violin,backpack"
)
_PEOPLE_SUBJ = _w("she,he,my friend,the teacher,our neighbour,my boss,the child,the pilot,the queen,the boy")
_WEATHER = _w("cold,warm,windy,foggy,sunny,rainy,quiet,busy,dark,bright,freezing,humid")
_MUSIC = _w("jazz,rock,classical music,the news,the radio,a podcast,some piano music,country music")
_ORDINALS = _w(
    "first,second,third,fourth,fifth,sixth,seventh,eighth,ninth,tenth,eleventh,twelfth,fifteenth,"
    "twentieth,twenty first,thirtieth"
)
_MINUTES = _w("o'clock,fifteen,thirty,forty five,oh five,ten,twenty,fifty")


def _hour(rng: random.Random) -> str:
    return _ONES[rng.randint(1, 12)]


def _t_animals(rng: random.Random) -> tuple[str, tuple]:
    adj, animal = rng.choice(_ADJECTIVES), rng.choice(_ANIMALS)
    det2 = rng.choice(("the", "a", "a", "every", "that"))
    obj = rng.choice(_ANIMALS)
    if rng.random() < 0.5:
        obj = rng.choice(_ADJECTIVES) + " " + obj
    if det2 == "a" and obj[0] in "aeiou":
        det2 = "an"
    text = f"the {adj} {animal} {rng.choice(_ANIMAL_VERBS)} {det2} {obj}"
    return text, ("animals", adj, animal)


def _t_home(rng: random.Random) -> tuple[str, tuple]:
    device, room = rng.choice(_DEVICES), rng.choice(_ROOMS)
    state = rng.choice(("on", "off"))
    form = rng.randrange(4)
    please = "please " if rng.random() < 0.3 else ""
    if form == 0:
        text = f"{please}turn the {device} {state} in the {room}"
    elif form == 1:
        text = f"{please}switch {state} the {device} in the {room}"
    elif form == 2:
        text = f"is the {device} in the {room} {state}"
    else:
        text = f"can you turn {state} the {device} in the {room}"
    return text, ("home", device, room)


def _t_open(rng: random.Random) -> tuple[str, tuple]:
    thing, room = rng.choice(_OPENABLES), rng.choice(_ROOMS)
    verb = rng.choice(("open", "close", "lock", "check"))
    return f"{verb} the {thing} in the {room}", ("open", thing, room)


def _t_travel(rng: random.Random) -> tuple[str, tuple]:
    city, day = rng.choice(_CITIES), rng.choice(_DAYS)
    form = rng.randrange(5)
    if form == 0:
        text = f"i will arrive in {city} on {day}"
    elif form == 1:
        text = f"we are flying to {city} next {day}"
    elif form == 2:
        text = f"the train to {city} leaves at {_hour(rng)} {rng.choice(_MINUTES)} on {day}"
    elif form == 3:
        text = f"book a table in {city} for {day} evening"
    else:
        text = f"she won't be back from {city} until {day}"
    return text, ("travel", city, day)


def _t_date(rng: random.Random) -> tuple[str, tuple]:
    city, month = rng.choice(_CITIES), rng.choice(_MONTHS)
    form = rng.randrange(3)
    if form == 0:
        text = f"my flight to {city} is on the {rng.choice(_ORDINALS)} of {month}"
    elif form == 1:
        text = f"we moved to {city} in {month} {_year_to_words(rng.randint(1950, 2029))}"
    else:
        text = f"the festival in {city} starts in {month}"
    return text, ("date", city, month)


def _t_weather(rng: random.Random) -> tuple[str, tuple]:
    city, when = rng.choice(_CITIES), rng.choice(_WHEN)
    form = rng.randrange(4)
    if form == 0:
        text = f"what is the weather like in {city} {when}"
    elif form == 1:
        text = f"is it going to rain in {city} {when}"
    elif form == 2:
        text = f"it's very {rng.choice(_WEATHER)} in {city} {when}"
    else:
        other = rng.choice(_CITIES)
        return f"how far is {city} from {other}", ("distance", city, other)
    return text, ("weather", city, when)


def _t_contact(rng: random.Random) -> tuple[str, tuple]:
    verb, person = rng.choice(_CONTACT), rng.choice(_PEOPLE)
    please = "please " if rng.random() < 0.3 else ""
    tail = rng.choice(_WHEN) if rng.random() < 0.6 else f"at {_hour(rng)} {rng.choice(_MINUTES)}"
    return f"{please}{verb} {person} {tail}", ("contact", verb, person)


def _t_shopping(rng: random.Random) -> tuple[str, tuple]:
    item = rng.choice(_ITEMS)
    form = rng.randrange(4)
    if form == 0:
        count = number_to_words(rng.randint(2, 24))
        text = f"i need {count} {item} from the shop"
        key = ("shop", item, count)
    elif form == 1:
        other = rng.choice(_ITEMS)
        text = f"add {item} and {other} to my shopping list"
        key = ("shop", item, other)
    elif form == 2:
        text = f"we don't have any {item} left"
        key = ("shop", item, "left")
    else:
        who = rng.choice(_PEOPLE_SUBJ)
        text = f"{who} doesn't like {item}"
        key = ("shop", item, who)
    return text, key


def _t_objects(rng: random.Random) -> tuple[str, tuple]:
    who, obj = rng.choice(_PEOPLE_SUBJ), rng.choice(_OBJECTS)
    form = rng.randrange(4)
    if form == 0:
        text = f"{who} can't find the {obj}"
    elif form == 1:
        text = f"{who} left the {obj} in the {rng.choice(_ROOMS)}"
    elif form == 2:
        text = f"where did {who} put my {obj}"
    else:
        text = f"{who} bought a new {obj} yesterday"
    return text, ("objects", who, obj)


def _t_alarm(rng: random.Random) -> tuple[str, tuple]:
    hour, minute = _hour(rng), rng.choice(_MINUTES)
    form = rng.randrange(3)
    if form == 0:
        text = f"set an alarm for {hour} {minute}"
    elif form == 1:
        text = f"wake me up at {hour} {minute} {rng.choice(_WHEN[:3])}"
    else:
        text = f"set a timer for {number_to_words(rng.randint(2, 90))} minutes"
        return text, ("timer", text)
    return text, ("alarm", hour, minute)


def _t_media(rng: random.Random) -> tuple[str, tuple]:
    music, room = rng.choice(_MUSIC), rng.choice(_ROOMS)
    form = rng.randrange(3)
    if form == 0:
        text = f"play {music} in the {room}"
    elif form == 1:
        text = f"turn the volume up to {number_to_words(rng.randint(1, 10))} in the {room}"
        return text, ("volume", text)
    else:
        text = f"stop playing {music}"
        return text, ("stop", music)
    return text, ("media", music, room)


_TEMPLATES: tuple[Callable[[random.Random], tuple[str, tuple]], ...] = (
    _t_animals,
    _t_home,
    _t_open,
    _t_travel,
    _t_date,
    _t_weather,
    _t_contact,
    _t_shopping,
    _t_objects,
    _t_alarm,
    _t_media,
)


def _digits(rng: random.Random) -> tuple[str, tuple]:
    k = rng.randint(3, 9)
    words = [
        ("oh" if rng.random() < 0.3 else "zero") if d == 0 else _DIGITS[d]
        for d in (rng.randrange(10) for _ in range(k))
    ]
    text = " ".join(words)
    return text, ("digits", text)


def _number(rng: random.Random) -> tuple[str, tuple]:
    r = rng.random()
    if r < 0.2:
        text = _year_to_words(rng.randint(1900, 2039))
        return text, ("number", text)
    if r < 0.45:
        n = rng.randint(0, 99)
    elif r < 0.8:
        n = rng.randint(100, 999)
    else:
        n = rng.randint(1000, 99999)
    text = number_to_words(n, british_and=rng.random() < 0.6)
    return text, ("number", text)  # keyed by the words: 2005 read as a year or a number is one text


_SPLIT_CODES = {"train": None, "validation": 0, "test": 1}


def _key_split(key: tuple) -> str:
    h = zlib.crc32(repr(key).encode()) % 10
    return "validation" if h == 0 else "test" if h == 1 else "train"


class TextGenerator:
    """Seeded generator of short transcripts.

    Mix: 25 % connected digit strings (3-9 digits, zero also read "oh"), 20 % numbers and years in
    words, 55 % sentences from 11 templates. Each :meth:`sample` for a given ``split`` draws only
    combination keys belonging to that split (see the module docstring), so evaluation sentences are
    held-out combinations.

    Args:
        seed: Makes the sequence deterministic; different splits use independent streams.
        split: ``"train"``, ``"validation"`` or ``"test"``.
    """

    def __init__(self, seed: int = 0, split: str = "train") -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {list(_SPLIT_CODES)}, not {split!r}")
        self.split = split
        self.rng = random.Random(f"rnnlab-synth-text-{seed}-{split}")

    def _draw(self) -> tuple[str, str, tuple]:
        r = self.rng.random()
        if r < 0.25:
            return "digits", *_digits(self.rng)
        if r < 0.45:
            return "number", *_number(self.rng)
        return "sentence", *self.rng.choice(_TEMPLATES)(self.rng)

    def sample_with_kind(self) -> tuple[str, str]:
        """Returns ``(text, kind)`` with kind ``"digits"``, ``"number"`` or ``"sentence"``."""
        for _ in range(10_000):
            kind, text, key = self._draw()
            if _key_split(key) == self.split:
                text = " ".join(text.split())
                assert _ALLOWED_TEXT.match(text), text
                return text, kind
        raise RuntimeError("text generator found no text for split " + self.split)  # pragma: no cover

    def sample(self) -> str:
        return self.sample_with_kind()[0]


def generate_texts(
    n: int, *, seed: int = 0, split: str = "train", exclude: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """``n`` transcripts for ``split``, deterministic given ``seed``; texts in ``exclude`` are skipped."""
    return [t for t, _k in _generate_with_kinds(n, seed=seed, split=split, exclude=exclude)]


def _generate_with_kinds(
    n: int, *, seed: int, split: str, exclude: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    gen = TextGenerator(seed, split)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        text, kind = gen.sample_with_kind()
        if text not in exclude:
            out.append((text, kind))
    return out


def vocabulary(n_samples: int = 20_000, seed: int = 0) -> list[str]:
    """The words the generator produces (sorted), collected from ``n_samples`` training draws."""
    words: set[str] = set()
    gen = TextGenerator(seed, "train")
    for _ in range(n_samples):
        words.update(gen.sample().split())
    return sorted(words)


# --------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class _Job:
    split: str
    index: int
    text: str
    kind: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    snr_db: float
    noise_colour: float
    peak_dbfs: float
    lead_s: float
    trail_s: float
    noise_seed: int
    sample_rate: int


def _make_jobs(split: str, n: int, seed: int, sample_rate: int, exclude: set[str]) -> list[_Job]:
    texts = _generate_with_kinds(n, seed=seed, split=split, exclude=exclude)
    rng = random.Random(f"rnnlab-synth-params-{seed}-{split}")
    split_code = SPLITS.index(split)
    jobs = []
    for i, (text, kind) in enumerate(texts):
        jobs.append(
            _Job(
                split=split,
                index=i,
                text=text,
                kind=kind,
                voice=rng.choice(VOICES),
                rate=rng.randint(130, 210),
                pitch=rng.randint(30, 70),
                pitch_range=rng.randint(30, 80),
                snr_db=round(rng.uniform(15.0, 40.0), 2),
                noise_colour=round(rng.choice((0.0, rng.uniform(0.0, 0.95))), 3),
                peak_dbfs=round(rng.uniform(-20.0, -1.0), 2),
                lead_s=round(rng.uniform(0.05, 0.35), 3),
                trail_s=round(rng.uniform(0.05, 0.35), 3),
                noise_seed=(seed * 1_000_003 + split_code) * 10_000_019 + i,
                sample_rate=sample_rate,
            )
        )
    return jobs


def _render(job: _Job) -> tuple[np.ndarray, list[WordTiming]]:
    speech, sr, words = synthesize(
        job.text, voice=job.voice, rate=job.rate, pitch=job.pitch, pitch_range=job.pitch_range,
        sample_rate=job.sample_rate,
    )  # fmt: skip
    rng = np.random.default_rng(job.noise_seed)
    lead, trail = int(round(job.lead_s * sr)), int(round(job.trail_s * sr))
    audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
    n_fft = 1 << max(1, (len(audio) - 1).bit_length())  # a fast FFT length >= len(audio)
    noise = rng.standard_normal(n_fft).astype(np.float32)
    if job.noise_colour > 0:  # one-pole low-pass shaping (from white towards brown), applied in frequency
        spec = np.fft.rfft(noise)
        omega = np.linspace(0.0, math.pi, len(spec))
        spec /= np.abs(1.0 - job.noise_colour * np.exp(-1j * omega))
        noise = np.fft.irfft(spec, n=n_fft).astype(np.float32)
    noise = noise[: len(audio)]
    speech_power = float(np.mean(speech**2)) if speech.size else 0.0
    noise_power = float(np.mean(noise**2)) or 1.0
    if speech_power > 0:
        noise *= math.sqrt(speech_power / noise_power / 10 ** (job.snr_db / 10))
    else:
        noise *= 1e-4
    audio = audio + noise
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = np.clip(audio * (10 ** (job.peak_dbfs / 20) / peak), -1.0, 1.0).astype(np.float32)
    shift = lead / sr
    return audio, [(w, s + shift, e + shift) for w, s, e in words]


def _process(args: tuple[_Job, str]) -> dict:
    job, out_dir = args
    import soundfile as sf

    audio, words = _render(job)
    file_name = f"{job.index:06d}.flac"
    buf = io.BytesIO()  # encode in memory: one write() instead of many small ones
    sf.write(buf, audio, job.sample_rate, format="FLAC", subtype="PCM_16")
    with open(os.path.join(out_dir, job.split, file_name), "wb") as f:
        f.write(buf.getvalue())
    return {
        "file_name": file_name,
        "id": f"{job.split}-{job.index:06d}",
        "text": job.text,
        "duration": round(len(audio) / job.sample_rate, 4),
        "voice": job.voice,
        "words": [{"word": w, "start": round(s, 4), "end": round(e, 4)} for w, s, e in words],
        "kind": job.kind,
        "rate": job.rate,
        "pitch": job.pitch,
        "snr_db": job.snr_db,
    }


def _params(n_train: int, n_validation: int, n_test: int, seed: int, sample_rate: int) -> dict:
    return {
        "version": CORPUS_VERSION,
        "n_train": int(n_train),
        "n_validation": int(n_validation),
        "n_test": int(n_test),
        "seed": int(seed),
        "sample_rate": int(sample_rate),
    }


MARKER = ".complete"


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(root: Path) -> None:
    for p in root.parent.glob(f"{root.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def build_corpus(
    root: str | Path,
    *,
    n_train: int = 3000,
    n_validation: int = 200,
    n_test: int = 200,
    seed: int = 0,
    sample_rate: int = 16000,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Synthesises a speech corpus in Hugging Face ``audiofolder`` layout and returns ``root``.

    Layout: ``root/{train,validation,test}/NNNNNN.flac`` (16-bit FLAC, mono) and a ``metadata.jsonl``
    per split with ``file_name, id, text, duration, voice, words`` (``words``: ``{"word", "start",
    "end"}`` in seconds), plus ``kind, rate, pitch, snr_db``. Load it with
    ``datasets.load_dataset("audiofolder", data_dir=root)``.

    Each utterance gets a random voice from :data:`VOICES`, rate 130-210 wpm, pitch 30-70, pitch range
    30-80, 0.05-0.35 s of leading and trailing silence, white or low-passed Gaussian noise at 15-40 dB
    SNR, and a peak level of -20 to -1 dBFS.

    The corpus is built in ``root.tmp-<pid>`` and renamed into place, finishing with ``root/.complete``
    (JSON of the parameters). If that marker already holds the same parameters, nothing is done.
    ``workers`` does not change the result (only how fast it comes).

    Raises:
        FileExistsError: When ``root`` exists, is not empty and is not a corpus built here.
    """
    root = Path(root).expanduser().absolute()
    params = _params(n_train, n_validation, n_test, seed, sample_rate)
    marker = _read_marker(root)
    if marker is not None and marker.get("params") == params:
        return root
    if root.exists() and marker is None and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not an rnnlab synthetic corpus (no {MARKER}); pick another directory"
        )
    for name, n in (("n_train", n_train), ("n_validation", n_validation), ("n_test", n_test)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    if sample_rate < 4000:
        raise ValueError(f"sample_rate too low: {sample_rate}")

    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for split in SPLITS:
        (tmp / split).mkdir(parents=True)

    counts = {"train": n_train, "validation": n_validation, "test": n_test}
    jobs: list[_Job] = []
    train_texts: set[str] = set()
    for split in SPLITS:
        split_jobs = _make_jobs(
            split, counts[split], seed, sample_rate, exclude=train_texts if split != "train" else set()
        )
        if split == "train":
            train_texts = {j.text for j in split_jobs}
        jobs.extend(split_jobs)

    total = len(jobs)
    say = _reporter(progress)
    say(f"synthesising {total} utterances into {root} with {max(1, workers)} worker(s)")
    t0 = time.perf_counter()
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    try:
        args = [(job, str(tmp)) for job in jobs]
        step = max(1, total // 10)
        if workers <= 1 or total < 2:
            results = map(_process, args)
            pool = None
        else:
            with _single_threaded_children():
                pool = multiprocessing.get_context("spawn").Pool(min(workers, total))
            results = pool.imap(_process, args, chunksize=16)
        try:
            for k, (job, row) in enumerate(zip(jobs, results, strict=True), 1):
                rows[job.split].append(row)
                if k % step == 0 and k < total:
                    el = time.perf_counter() - t0
                    say(f"  {k}/{total} utterances ({k / el:.0f}/s)")
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        elapsed = time.perf_counter() - t0
        stats = {
            "seconds": round(elapsed, 2),
            "utterances_per_second": round(total / elapsed, 1) if elapsed > 0 else None,
            "hours_of_audio": round(sum(r["duration"] for s in SPLITS for r in rows[s]) / 3600, 3),
            "mean_duration": round(float(np.mean([r["duration"] for s in SPLITS for r in rows[s]])), 3)
            if total
            else 0.0,
            "workers": workers,
        }
        for split in SPLITS:
            with open(tmp / split / "metadata.jsonl", "w", encoding="utf-8") as f:
                for row in rows[split]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / MARKER).write_text(
            json.dumps({"params": params, "stats": stats, "voices": list(VOICES)}, indent=1)
        )
        _move_into_place(tmp, root, params)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(
        f"synthesised {total} utterances ({stats['hours_of_audio']:.2f} h, mean {stats['mean_duration']:.2f} s) "
        f"in {elapsed:.1f} s ({stats['utterances_per_second']}/s) into {root}"
    )
    return root


@contextlib.contextmanager
def _single_threaded_children():
    """Spawned workers inherit one BLAS/OpenMP thread each (small matmuls are much slower threaded)."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    for k in names:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _move_into_place(tmp: Path, root: Path, params: dict) -> None:
    old = None
    if root.exists():
        if (root / MARKER).exists():  # an earlier corpus built here with other parameters
            old = root.parent / f"{root.name}.old-{os.getpid()}"
            os.rename(root, old)
        elif root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process finished the same corpus first: keep theirs.
        marker = _read_marker(root)
        if marker is not None and marker.get("params") == params:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _reporter(progress: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        log.info(msg)
        if progress:
            print(msg, file=sys.stderr, flush=True)

    return say


def default_corpus_dir() -> Path:
    """``$RNNLAB_CACHE/embedded_speech_v{N}``, else ``~/.cache/rnnlab/embedded_speech_v{N}``."""
    base = os.environ.get("RNNLAB_CACHE")
    cache = Path(base).expanduser() if base else Path.home() / ".cache" / "rnnlab"
    return cache / f"embedded_speech_v{CORPUS_VERSION}"


def ensure_default_corpus(root: str | Path | None = None, **kwargs) -> Path:
    """Builds the default corpus (see :func:`build_corpus` for ``kwargs``) unless cached; returns its root."""
    return build_corpus(default_corpus_dir() if root is None else root, **kwargs)


def load_metadata(root: str | Path, split: str) -> list[dict]:
    """The rows of ``root/split/metadata.jsonl``."""
    with open(Path(root) / split / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_corpus(root: str | Path, splits: Sequence[str] = SPLITS):
    """Loads a corpus built by :func:`build_corpus` as a ``datasets.DatasetDict``.

    The columns are those ``load_dataset("audiofolder", data_dir=root)`` gives (``audio`` first, then
    the metadata), with ``audio`` as ``datasets.Audio(decode=False)`` holding absolute paths: read them
    with ``soundfile``. Unlike ``audiofolder`` this needs no ``torchcodec`` (``datasets`` 5.x imports
    it to *encode* audio examples even when decoding is off). Empty splits are left out.
    """
    import datasets

    root = Path(root).expanduser().absolute()
    out = {}
    for split in splits:
        rows = [
            {"audio": str(root / split / row.pop("file_name")), **row} for row in load_metadata(root, split)
        ]
        if rows:
            ds = datasets.Dataset.from_list(rows, split=datasets.Split(split))
            out[split] = ds.cast_column("audio", datasets.Audio(decode=False))
    return datasets.DatasetDict(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data.synth", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=None, help=f"output directory (default {default_corpus_dir()})"
    )
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-validation", type=int, default=200)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--say", metavar="TEXT", help="synthesise TEXT to --out (a .flac or .wav file) and exit")
    p.add_argument("--voice", default="en-us", help="voice for --say")
    a = p.parse_args(argv)
    if a.say is not None:
        import soundfile as sf

        if a.out is None:
            p.error("--say needs --out FILE")
        audio, sr, words = synthesize(a.say, voice=a.voice, sample_rate=a.sample_rate)
        sf.write(str(a.out), audio, sr)
        for w, s, e in words:
            print(f"{s:7.3f} {e:7.3f} {w}")
        return 0
    build_corpus(
        a.out if a.out is not None else default_corpus_dir(),
        n_train=a.n_train, n_validation=a.n_validation, n_test=a.n_test, seed=a.seed,
        sample_rate=a.sample_rate, workers=a.workers, progress=not a.quiet,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
