"""Connected-digit strings built on the fly from the Free Spoken Digit Dataset (FSDD), for CTC.

Each item concatenates 2-7 isolated-digit recordings of ONE speaker (random digits), each trimmed of a little
leading/trailing silence, with short random pauses of low noise between them (and at both ends), resampled to the
model's rate: text ``"three seven zero"``. Compositions are drawn up front from ``(seed, stream, epoch, index)``,
so every item's length is known before any batch is built (the length-bucketing sampler needs ``lengths``).

FSDD's ``train`` split (indices 5-49) feeds training, its ``test`` split (indices 0-4) validation and test (the
same speakers, disjoint recordings), with different streams so validation and test strings differ.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from data.audio import resample
from data.errors import DataError
from data.sources import load_split

log = logging.getLogger(__name__)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_FSDD_DIR = "../shared/data/fsdd"
# DataModule split -> (FSDD split, stream): the stream separates validation from test strings on the same recordings.
SPLITS = {"train": ("train", 0), "val": ("test", 1), "test": ("test", 2)}


@dataclass(frozen=True)
class DigitRecording:
    """One FSDD recording: an isolated spoken digit."""

    path: str
    label: int
    speaker: str


@dataclass(frozen=True)
class Composition:
    """What item ``i`` is made of: recordings (indices into the dataset's pool), pauses and noise level.

    ``pauses`` has one more entry than ``recordings`` (before, between and after them); ``pauses`` and ``length``
    (the item's total) are in samples at the dataset's ``sample_rate``.
    """

    speaker: str
    recordings: tuple[int, ...]
    labels: tuple[int, ...]
    pauses: tuple[int, ...]
    noise_std: float
    length: int

    @property
    def text(self) -> str:
        return " ".join(DIGIT_WORDS[d] for d in self.labels)


def load_fsdd(data_dir: str | Path, split: str) -> list[DigitRecording]:
    """FSDD recordings of one split (audiofolder ``<split>/metadata.jsonl``) through :func:`data.sources.load_split`.

    Raises:
        DataError: when the directory, the split or one of its columns (label, speaker) is missing.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"FSDD copy not found at {root} (expected train/ and test/ audiofolders; set data.data_dir)")
    rows = load_split(None, split, data_dir=root)
    missing = [c for c in ("audio", "label", "speaker") if c not in rows.column_names]
    if missing:
        raise DataError(f"{root / split}/metadata.jsonl: missing column(s) {missing} (has {rows.column_names})")
    recs = [DigitRecording(str(a), int(lab), str(spk))
            for a, lab, spk in zip(rows["audio"], rows["label"], rows["speaker"], strict=True)]
    bad = [r for r in recs if not 0 <= r.label <= 9]
    if bad:
        raise DataError(f"{root / split}/metadata.jsonl: label {bad[0].label} of {bad[0].path} is not a digit 0-9")
    return recs


@lru_cache(maxsize=8192)
def decode_trimmed(path: str, trim_db: float, margin_s: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples with leading/trailing silence trimmed (energy-based, 10 ms frames), read-only."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError("zero-length audio")
    if not np.isfinite(data).all():
        raise ValueError("audio contains NaN or infinite samples")
    return trim_silence(np.ascontiguousarray(data.mean(axis=1)), int(sr), trim_db, margin_s), int(sr)


def trim_silence(wav: np.ndarray, sr: int, trim_db: float, margin_s: float) -> np.ndarray:
    """Mono samples with leading/trailing audio quieter than ``trim_db`` under the loudest 10 ms frame cut (a
    ``margin_s`` margin kept) and 5 ms fades at both ends; read-only."""
    wav = np.array(wav, dtype=np.float32)
    hop = max(1, sr // 100)
    n_frames = len(wav) // hop
    if n_frames >= 3 and trim_db > 0:
        rms = np.sqrt((wav[: n_frames * hop].reshape(n_frames, hop) ** 2).mean(axis=1))
        peak = float(rms.max())
        if peak > 0:
            loud = np.flatnonzero(rms >= peak * 10 ** (-trim_db / 20))
            margin = int(margin_s * sr)
            start = max(0, int(loud[0]) * hop - margin)
            end = min(len(wav), (int(loud[-1]) + 1) * hop + margin)
            wav = wav[start:end].copy()
    fade = min(len(wav) // 4, sr // 200)  # 5 ms ramps: no click where a cut edge meets the pause noise
    if fade > 1:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        wav[:fade] *= ramp
        wav[-fade:] *= ramp[::-1]
    wav.flags.writeable = False
    return wav


class ConnectedDigitsDataset(Dataset):
    """Connected-digit strings from isolated FSDD recordings, composed deterministically from ``(seed, epoch, i)``.

    Every recording is decoded and trimmed once up front (cached in memory: FSDD is ~10 MB) and resampled to
    ``sample_rate`` on first use (cached too), so compositions and their exact lengths are known up front.
    Pauses are low white noise; the same noise runs under the digits, so the noise floor is even. With ``redraw_per_epoch`` (training), :meth:`set_epoch` draws new
    compositions for that epoch (and ``lengths`` changes with them); otherwise the composition is fixed.

    Args:
        recordings: The pool (e.g. from :func:`load_fsdd`); each item uses recordings of one speaker.
        tokenizer: Encodes the text (needs lower-case letters and space).
        num_utterances: Items per epoch.
        digits: Inclusive range of digits per item.
        pause: Range (seconds) of each pause before, between and after the digits.
        noise: Range of the pause noise's standard deviation (drawn log-uniformly per item).
        sample_rate: Output rate; recordings are resampled to it.
        seed: Base seed; ``stream`` separates datasets drawn from the same pool (validation vs test).
        redraw_per_epoch: New compositions per :meth:`set_epoch` (training) instead of fixed ones.
        trim_db: Frames this many dB below a recording's loudest 10 ms frame are trimmed from its ends (0: none).
        trim_margin: Seconds kept around the trimmed span.
        name: Prefix of the item ids.
        skips: Optional counter with ``skip(reason, message)`` for unreadable recordings (also logged).

    Raises:
        DataError: on an empty pool, a bad digit range or no readable recording.
    """

    def __init__(self, recordings: Sequence[DigitRecording], tokenizer, *, num_utterances: int,
                 digits: tuple[int, int] = (2, 7), pause: tuple[float, float] = (0.05, 0.3),
                 noise: tuple[float, float] = (1e-4, 3e-3), sample_rate: int = 16000, seed: int = 0, stream: int = 0,
                 redraw_per_epoch: bool = False, trim_db: float = 30.0, trim_margin: float = 0.02,
                 name: str = "digits", skips=None) -> None:
        lo, hi = (int(d) for d in digits)
        if not 1 <= lo <= hi:
            raise DataError(f"digits per utterance must be 1 <= min <= max, got {tuple(digits)}")
        if num_utterances < 1:
            raise DataError(f"num_utterances must be >= 1, got {num_utterances}")
        if not recordings:
            raise DataError(f"{name}: no FSDD recordings to compose digit strings from")
        self.tokenizer = tokenizer
        self.num_utterances = int(num_utterances)
        self.digits = (lo, hi)
        self.pause = (float(pause[0]), float(pause[1]))
        self.noise = (float(noise[0]), float(noise[1]))
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        self.stream = int(stream)
        self.redraw_per_epoch = redraw_per_epoch
        self.name = name
        self.recordings: list[DigitRecording] = []
        self._audio: list[np.ndarray] = []
        self.base_rate = 0
        for rec in recordings:
            try:
                wav, sr = decode_trimmed(rec.path, float(trim_db), float(trim_margin))
            except Exception as e:  # noqa: BLE001 - one unreadable file is skipped, named and counted
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                msg = f"{rec.path}: unreadable audio ({why})"
                log.warning("%s: skipped %s", name, msg)
                if skips is not None:
                    skips.skip("unreadable", msg)
                continue
            if not self.base_rate:
                self.base_rate = sr
            if sr != self.base_rate:
                wav = resample(torch.from_numpy(wav.copy()), sr, self.base_rate).numpy()
            self.recordings.append(rec)
            self._audio.append(wav)
        if not self.recordings:
            raise DataError(f"{name}: none of the {len(recordings)} FSDD recordings could be read")
        # speaker -> digit -> pool indices
        self._by_speaker: dict[str, dict[int, list[int]]] = {}
        for j, rec in enumerate(self.recordings):
            self._by_speaker.setdefault(rec.speaker, {}).setdefault(rec.label, []).append(j)
        self.speakers = sorted(self._by_speaker)
        # Length of each recording once resampled (what resample returns: ceil(n * new / orig)), and the cache.
        self._out_len = [-(-len(a) * self.sample_rate // self.base_rate) for a in self._audio]
        self._resampled: dict[int, torch.Tensor] = {}
        self.epoch = 0
        self._compositions = self._compose(0)

    # -- composition --------------------------------------------------------------------------------------------
    def _rng(self, epoch: int, i: int, part: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stream, epoch, i, part])

    def _compose(self, epoch: int) -> list[Composition]:
        lo, hi = self.digits
        out = []
        for i in range(self.num_utterances):
            rng = self._rng(epoch, i, 0)
            speaker = self.speakers[int(rng.integers(len(self.speakers)))]
            pool = self._by_speaker[speaker]
            available = sorted(pool)
            k = int(rng.integers(lo, hi + 1))
            labels = [available[int(x)] for x in rng.integers(len(available), size=k)]
            recs: list[int] = []
            for d in labels:  # distinct recordings within an item while the pool allows
                choices = [j for j in pool[d] if j not in recs] or pool[d]
                recs.append(choices[int(rng.integers(len(choices)))])
            pauses = rng.uniform(self.pause[0], self.pause[1], size=k + 1) * self.sample_rate
            pauses = tuple(int(p) for p in pauses)
            noise_std = float(np.exp(rng.uniform(np.log(self.noise[0]), np.log(self.noise[1]))))
            length = sum(pauses) + sum(self._out_len[j] for j in recs)
            out.append(Composition(speaker, tuple(recs), tuple(labels), pauses, noise_std, length))
        return out

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch; with ``redraw_per_epoch`` the compositions (and ``lengths``) are redrawn for it."""
        epoch = int(epoch)
        if self.redraw_per_epoch and epoch != self.epoch:
            self._compositions = self._compose(epoch)
        self.epoch = epoch

    @property
    def compositions(self) -> list[Composition]:
        return self._compositions

    def composition(self, i: int) -> Composition:
        return self._compositions[i]

    # -- Dataset ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_utterances

    @property
    def lengths(self) -> list[int]:
        """Each item's waveform length in samples at ``sample_rate`` (current epoch), known without decoding."""
        return [c.length for c in self._compositions]

    def _recording(self, j: int) -> torch.Tensor:
        wav = self._resampled.get(j)
        if wav is None:
            wav = torch.from_numpy(self._audio[j].copy())
            if self.base_rate != self.sample_rate:
                wav = resample(wav, self.base_rate, self.sample_rate)
            self._resampled[j] = wav
        return wav

    def text(self, i: int) -> str:
        return self._compositions[i].text

    def __getitem__(self, i: int) -> dict:
        c = self._compositions[i]
        epoch = self.epoch if self.redraw_per_epoch else 0
        noise_rng = self._rng(epoch, i, 1)
        wav = torch.from_numpy((noise_rng.standard_normal(c.length) * c.noise_std).astype(np.float32))
        pos = c.pauses[0]
        for j, pause in zip(c.recordings, c.pauses[1:], strict=True):
            audio = self._recording(j)
            wav[pos: pos + audio.numel()] += audio
            pos += audio.numel() + pause
        text = c.text
        return {"id": f"{self.name}-e{epoch}-{i:05d}-{c.speaker}", "waveform": wav, "text": text,
                "tokens": self.tokenizer.encode(text)}


def fsdd_digits_dataset(name: str, tokenizer, *, data_dir: str | Path | None = None, sizes: Sequence[int],
                        digits: tuple[int, int] = (2, 7), sample_rate: int = 16000, seed: int = 0,
                        skips=None, holdout_speakers: Sequence[str] = ()) -> ConnectedDigitsDataset:
    """The DataModule's ``train``/``val``/``test`` dataset: FSDD train for training, FSDD test for the others.

    With ``holdout_speakers`` (leave-speakers-out validation) those speakers never occur in training, and
    validation/test strings are composed from every recording of theirs (FSDD train and test: 50 per digit).

    Args:
        name: ``train``, ``val`` or ``test``.
        sizes: Items in train/val/test.
        data_dir: The FSDD copy (``train/`` and ``test/`` audiofolders); default ``../shared/data/fsdd``.
        holdout_speakers: Speakers kept out of training and used alone for validation and test.

    Raises:
        DataError: on an unknown split or a held-out speaker FSDD does not have.
    """
    if name not in SPLITS:
        raise DataError(f"fsdd-digits has no split {name!r} (expected one of {sorted(SPLITS)})")
    split, stream = SPLITS[name]
    n = list(sizes)[["train", "val", "test"].index(name)]
    root = data_dir or DEFAULT_FSDD_DIR
    recs = load_fsdd(root, split)
    held = set(holdout_speakers)
    if held:
        known = {r.speaker for r in recs}
        unknown = sorted(held - known)
        if unknown:
            raise DataError(f"data.holdout_speakers: {unknown} not in FSDD {split} (speakers: {sorted(known)})")
        if name == "train":
            recs = [r for r in recs if r.speaker not in held]
        else:
            recs = [r for r in load_fsdd(root, "train") + recs if r.speaker in held]
        if not recs:
            raise DataError(f"data.holdout_speakers: {sorted(held)} leaves no speaker to train on")
    return ConnectedDigitsDataset(recs, tokenizer, num_utterances=int(n), digits=tuple(digits),
                                  sample_rate=sample_rate, seed=seed, stream=stream,
                                  redraw_per_epoch=name == "train", name=f"fsdd-digits-{name}", skips=skips)
