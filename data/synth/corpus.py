"""Writes the synthetic speech corpus (Hugging Face ``audiofolder`` layout), caches it, loads it back.

:func:`build_corpus` speaks texts from :mod:`data.synth.texts` with :mod:`data.synth.espeak`, varying voice,
rate, pitch, noise, gain and padding, using worker processes. :func:`ensure_default_corpus` builds it once
into the user cache and then reuses it. :func:`main` is ``python -m data.synth``.

Reproducibility. The texts, voices, rates, pitches, noise, gain and padding are a pure function of the
seed and do not depend on the number of workers. eSpeak NG keeps a little state between calls (such as
the phase of its pitch flutter), so the waveforms themselves are not bit-identical from run to run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.synth.espeak import WordTiming, synthesize
from data.synth.texts import generate_with_kinds

log = logging.getLogger(__name__)

__all__ = [
    "CORPUS_VERSION",
    "EVAL_VOICES",
    "SPLITS",
    "TRAIN_VOICES",
    "VOICES",
    "build_corpus",
    "default_corpus_dir",
    "ensure_default_corpus",
    "ensure_text_corpus",
    "load_corpus",
    "load_metadata",
    "main",
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

#: Voices kept for evaluation only: corpora built from sentence files for training (``voices="train"``) never
#: use them, so a model is scored on voices it has not heard. Each is a variant of an accent that training keeps.
EVAL_VOICES: tuple[str, ...] = ("en-us+f4", "en+m1", "en-gb-x-rp+m7")
#: :data:`VOICES` without :data:`EVAL_VOICES`.
TRAIN_VOICES: tuple[str, ...] = tuple(v for v in VOICES if v not in EVAL_VOICES)

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


def _make_jobs(
    split: str, n: int, seed: int, sample_rate: int, exclude: set[str],
    given: Sequence[str] | None = None, voices: Sequence[str] = VOICES,
) -> list[_Job]:  # fmt: skip
    if given is None:
        texts = generate_with_kinds(n, seed=seed, split=split, exclude=exclude)
    else:
        texts = [(t, "file") for t in given]
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
                voice=rng.choice(voices),
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


def _params(n_train: int, n_validation: int, n_test: int, seed: int, sample_rate: int, **extra) -> dict:
    return {
        "version": CORPUS_VERSION,
        "n_train": int(n_train),
        "n_validation": int(n_validation),
        "n_test": int(n_test),
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        **{k: v for k, v in extra.items() if v is not None},  # only set for corpora of given texts
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
    texts: Mapping[str, Sequence[str]] | None = None,
    voices: Sequence[str] | None = None,
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

    ``texts`` (split -> sentences, e.g. from :func:`data.synth.sentences.read_sentences`) speaks those
    sentences instead of generated ones; the ``n_*`` sizes are then the lengths of its lists. ``voices``
    replaces :data:`VOICES` as the voices drawn from (e.g. :data:`TRAIN_VOICES` or :data:`EVAL_VOICES`).

    Raises:
        FileExistsError: When ``root`` exists, is not empty and is not a corpus built here.
    """
    root = Path(root).expanduser().absolute()
    voices = tuple(voices) if voices is not None else VOICES
    digest = None
    if texts is not None:
        from data.synth.sentences import texts_digest

        texts = {s: list(texts.get(s, ())) for s in SPLITS}
        n_train, n_validation, n_test = (len(texts[s]) for s in SPLITS)
        digest = texts_digest([t for s in SPLITS for t in texts[s]] + [str(len(texts[s])) for s in SPLITS])
    params = _params(n_train, n_validation, n_test, seed, sample_rate, texts=digest,
                     voices=list(voices) if voices != VOICES else None)
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
            split, counts[split], seed, sample_rate, exclude=train_texts if split != "train" else set(),
            given=None if texts is None else texts[split], voices=voices,
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
            json.dumps({"params": params, "stats": stats, "voices": list(voices)}, indent=1)
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


def ensure_text_corpus(
    path: str | Path, sizes: Sequence[int], *, voices: Sequence[str] = TRAIN_VOICES, root: str | Path | None = None,
    **kwargs,
) -> Path:
    """Speaks the sentences of a file (slot JSONL or text lines) once into a cached corpus; returns its root.

    ``sizes = (n_train, n_validation, n_test)``: validation is the file's last ``n_validation`` sentences,
    test the ``n_test`` before them and training the first ``n_train`` of the rest (all of it when
    ``n_train`` is larger), so the held-out sentences are fixed by the file. The cache directory
    (``root``, default beside :func:`default_corpus_dir`) is named after the file, its contents and the sizes.

    Raises:
        ValueError: When the file has fewer sentences than validation and test need.
    """
    from data.synth.sentences import read_sentences, texts_digest

    sentences = read_sentences(path)
    n_train, n_val, n_test = (int(n) for n in sizes)
    rest = len(sentences) - n_val - n_test
    if rest < 1 or min(n_train, n_val, n_test) < 0:
        raise ValueError(f"{path}: {len(sentences)} sentences cannot give {n_val} validation and {n_test} test")
    texts = {"train": sentences[: min(n_train, rest)], "test": sentences[rest : rest + n_test],
             "validation": sentences[rest + n_test :]}  # fmt: skip
    if root is None:
        base = default_corpus_dir()
        tag = "all" if tuple(voices) == VOICES else texts_digest(list(voices))[:6]
        root = base.with_name(
            f"{base.name}_{Path(path).stem}-{texts_digest(sentences)}_{len(texts['train'])}-{n_val}-{n_test}_{tag}"
        )
    return build_corpus(root, texts=texts, voices=voices, **kwargs)


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


def main(argv: Sequence[str] | None = None, prog: str = "python -m data.synth") -> int:
    """``rnnlab synth`` (``python -m data.synth``): builds a corpus (default: the cached default one) or, with
    ``--say``, one file."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="The embedded default speech corpus: text generation and eSpeak NG synthesis.",
    )
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
