"""``rnnlab align``: word tokens cut from read sentences by CTC forced alignment, written as an audiofolder.

Usage::

    rnnlab align --ckpt english --data NAME=DIR [NAME=DIR ...] --split validation --out OUT
                 [--min-duration 0.5] [--min-letters 5] [--tail 0.06] [--max-gap 0.5] [--limit N] [--overwrite]

Each ``DIR`` is a speech corpus as the speech DataModules read it (an audiofolder ``<split>/metadata.jsonl``
with ``file_name`` and ``text``, or any layout :func:`data.sources.load_split` reads). Every transcript is
normalised as the model's training data was (``asr_chars``: lower-case, digits spelled, punctuation dropped)
and aligned to the model's CTC log-probabilities (:func:`torchaudio.functional.forced_align`); a word spans
its characters' frames plus up to ``--tail`` seconds of the blank frames after them (CTC emits a character
early in its sound and blanks the rest; docs/usage.md gives the measured effect). Words of at least
``--min-duration`` seconds and ``--min-letters`` letters are kept (0.5 s and 5 letters: the protocol of Kamper
et al.'s acoustic word embedding papers) unless more than ``--max-gap`` seconds separate two of their characters
(a pause inside the word, or audio that does not say what the transcript says). They are written to
``OUT/<split>/<NAME>/*.wav`` (16-bit PCM at the model's rate) with ``OUT/<split>/metadata.jsonl``: ``file_name,
word, speaker, corpus, source, start, end, duration, score`` (``speaker``: the corpus's speaker column, else
its name; ``source``: the utterance's ``file_name``; ``start``/``end`` in seconds of it; ``score``: the mean
log-probability per frame of the alignment over the word). ``rnnlab evaluate-retrieval --data OUT --split
<split> --label-column word`` scores embeddings on it. An utterance that cannot be used (unreadable audio,
characters the model lacks, a transcript longer than its frames allow) is named on stderr and skipped (exit
status 1); errors to fix exit with status 2 (see :mod:`pipelines.commands._common`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from pipelines.commands._common import ArgumentParser, at_least, fail, load_checkpoint, named_dirs, warn

COMMAND = "align"
CHUNK = 64  # utterances read, aligned and written at a time (the audio of one chunk is held)
PROGRESS_EVERY = 200


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog=f"rnnlab {COMMAND}", description="Cut word tokens out of read sentences by CTC forced "
                        "alignment and write them as an audiofolder (wav files + metadata.jsonl).")
    ap.add_argument("--ckpt", default="english", help="character CTC model: a shipped name or a checkpoint "
                                                      "(default: english)")
    ap.add_argument("--data", nargs="+", action="extend", required=True, metavar="NAME=DIR",
                    help="speech corpora (<split>/metadata.jsonl with file_name and text); a bare DIR is named after "
                         "its folder; repeatable")
    ap.add_argument("--split", default="validation", help="split of every corpus to read, and of the output")
    ap.add_argument("--out", required=True, help="output audiofolder: OUT/<split>/ is written")
    ap.add_argument("--min-duration", type=float, default=0.5, help="shortest word token kept, seconds (0.5)")
    ap.add_argument("--min-letters", type=at_least(1), default=5, help="fewest letters of a word token kept (5)")
    ap.add_argument("--tail", type=float, default=0.06,
                    help="seconds of blank frames after a word's last character that still belong to it (rounded to "
                         "frames; never past the next symbol): CTC emits a character early in its sound (0.06)")
    ap.add_argument("--max-gap", type=float, default=0.5,
                    help="drop a word with more than this many seconds between two of its characters: a pause inside "
                         "it, or audio that does not say what the transcript says (0.5)")
    ap.add_argument("--limit", type=at_least(1), default=None, help="first N utterances of each corpus")
    ap.add_argument("--text-column", default="text", help="transcript column (default text)")
    ap.add_argument("--speaker-column", default="speaker",
                    help="speaker column; a corpus without it gets its NAME as speaker ('' = always NAME)")
    ap.add_argument("--batch-size", type=at_least(1), default=8, help="utterances per forward pass")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--overwrite", action="store_true", help="replace an OUT/<split>/ this command wrote before")
    return ap


def prepare_out(out_split: Path, inputs: list[Path], overwrite: bool) -> None:
    """Makes ``out_split`` empty and ready, refusing to touch an input corpus or a folder it did not write."""
    resolved = out_split.resolve()
    if any(resolved == p.resolve() or p.resolve().is_relative_to(resolved) for p in inputs):
        fail(COMMAND, f"--out {out_split.parent} would overwrite an input corpus; choose another folder")
    if out_split.is_file() or out_split.parent.is_file():
        fail(COMMAND, f"--out: {out_split if out_split.is_file() else out_split.parent} is a file, not a folder")
    if out_split.is_dir() and any(out_split.iterdir()):
        if not overwrite:
            fail(COMMAND, f"{out_split} exists and is not empty (pass --overwrite to replace it)")
        if not _written_by_align(out_split / "metadata.jsonl"):
            fail(COMMAND, f"{out_split} holds no metadata.jsonl of word tokens; not replacing it (remove it yourself)")
        shutil.rmtree(out_split)
    try:
        out_split.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(COMMAND, f"cannot create {out_split}: {e.strerror}")


def _written_by_align(meta: Path) -> bool:
    try:
        with open(meta, encoding="utf-8") as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(first, dict) and {"word", "source", "start", "end"} <= set(first)


def read_rows(name: str, root: Path, split: str, text_column: str, limit: int | None):
    """The split's rows (audio column undecoded) and where messages name them, or a one-line exit."""
    from data.rows import no_decode
    from data.sources import DataSourceError, load_split, no_progress_bars, split_where

    where = split_where(root, None, split)
    try:
        with no_progress_bars():
            rows = load_split(None, split, data_dir=root)
    except DataSourceError as e:
        fail(COMMAND, str(e))
    columns = list(rows.column_names or [])
    for col in (text_column, "audio"):
        if col not in columns:
            fail(COMMAND, f"{where}: no {col!r} column (columns are {columns})"
                          + ("; set --text-column" if col == text_column else ""))
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return no_decode(rows, "audio", where), where


def safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "utt"


class Writer:
    """Writes the kept word tokens of every corpus under one split folder and collects their metadata rows."""

    def __init__(self, out_split: Path, sample_rate: int, min_duration: float, min_letters: int,
                 max_gap: float) -> None:
        self.out_split, self.rate = out_split, sample_rate
        self.min_duration, self.min_letters, self.max_gap = min_duration, min_letters, max_gap
        self.rows: list[dict] = []
        self.aligned_words = 0
        self.gapped = 0  # long enough words dropped for a pause (or misreading) between two of their characters

    def add(self, corpus: str, source: str, speaker: str, wav, words) -> int:
        """Writes the words of one utterance that pass the filters; returns how many."""
        import soundfile as sf

        self.aligned_words += len(words)
        kept = 0
        stem = safe_stem(str(Path(source).with_suffix("")))
        for k, w in enumerate(words):
            if w.duration + 1e-9 < self.min_duration or w.letters < self.min_letters:
                continue
            if w.gap > self.max_gap + 1e-9:
                self.gapped += 1
                continue
            name = f"{corpus}/{stem}_{k:03d}_{safe_stem(w.word)}.wav"
            path = self.out_split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav[w.start_sample:w.end_sample].clamp(-1.0, 1.0).numpy(), self.rate, subtype="PCM_16")
            self.rows.append({"file_name": name, "word": w.word, "speaker": speaker, "corpus": corpus,
                              "source": source, "start": round(w.start, 6), "end": round(w.end, 6),
                              "duration": round(w.duration, 6), "score": round(w.score, 4)})
            kept += 1
        return kept

    def finish(self) -> Path:
        meta = self.out_split / "metadata.jsonl"
        meta.write_text("".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")
        return meta


def align_corpus(aligner, writer: Writer, name: str, root: Path, args, skips: Counter) -> tuple[int, int, set]:
    """Aligns one corpus's split into ``writer``; returns ``(utterances read, aligned, speakers)``."""
    from data.audio import AudioError, audio_ref, load_audio
    from data.sources import row_place
    from pipelines.inference.align import AlignmentError

    rows, where = read_rows(name, root, args.split, args.text_column, args.limit)
    has_speaker = bool(args.speaker_column) and args.speaker_column in (rows.column_names or [])
    total, aligned, speakers, kept = len(rows), 0, set(), 0

    def skip(reason: str, i: int, source: str, message: str) -> None:
        skips[reason] += 1
        warn(COMMAND, f"skipped {where} {row_place(where, i)} ({source}): {message}")

    for start in range(0, total, CHUNK):
        batch = []  # (row number, source, speaker, text, wav)
        for i in range(start, min(start + CHUNK, total)):
            row = rows[i]
            source = str(row.get("file_name") or row.get("id") or f"row {i + 1}")
            raw = row.get(args.text_column)
            text = aligner.normalise(raw) if isinstance(raw, str) else ""
            if not text:
                skip("empty transcript", i, source, f"empty transcript after normalisation ({str(raw)[:40]!r})")
                continue
            bad = aligner.unknown_chars(text)
            if bad:
                skip("characters the model lacks", i, source, f"characters outside the model's vocabulary {bad!r}")
                continue
            try:
                wav = load_audio(audio_ref(row.get("audio")), aligner.sample_rate)
            except AudioError as e:
                skip("unreadable audio", i, source, str(e))
                continue
            speaker = str(row.get(args.speaker_column) or "").strip() if has_speaker else ""
            batch.append((i, source, speaker or name, text, wav))
        if not batch:
            continue
        emissions = aligner.emissions([b[4] for b in batch], batch_size=args.batch_size)
        for (i, source, speaker, text, wav), log_probs in zip(batch, emissions, strict=True):
            try:
                words = aligner.align(log_probs, text, num_samples=wav.numel(), tail=args.tail)
            except AlignmentError as e:
                skip("too short for its transcript", i, source, f"{e} ({wav.numel() / aligner.sample_rate:.2f} s)")
                continue
            aligned += 1
            n = writer.add(name, source, speaker, wav, words)
            kept += n
            if n:
                speakers.add(speaker)
        done = min(start + CHUNK, total)
        if done < total and done // PROGRESS_EVERY > start // PROGRESS_EVERY:
            print(f"[rnnlab] {name}: {done}/{total} utterances, {kept} word tokens", file=sys.stderr, flush=True)
    print(f"[rnnlab] {name} [{args.split}]: {total} utterances, {aligned} aligned, {kept} word tokens kept",
          file=sys.stderr, flush=True)
    return total, aligned, speakers


def run(args: argparse.Namespace) -> int:
    for option, value in (("--min-duration", args.min_duration), ("--tail", args.tail), ("--max-gap", args.max_gap)):
        if not value >= 0:  # NaN too
            fail(COMMAND, f"{option} must be a number >= 0, got {value:g}")
    data = named_dirs(COMMAND, args.data)
    out_split = Path(args.out) / args.split
    # The model and every corpus's split are checked before anything is written.
    from pipelines.inference import InferenceError
    from pipelines.inference.align import WordAligner

    model = load_checkpoint(COMMAND, args.ckpt, kind="speech", device=args.device)
    try:
        aligner = WordAligner(model)
    except InferenceError as e:
        fail(COMMAND, f"{args.ckpt}: {e}")
    for name, root in data:
        read_rows(name, root, args.split, args.text_column, args.limit)
    prepare_out(out_split, [root / args.split for _, root in data], args.overwrite)
    t0 = time.perf_counter()
    writer = Writer(out_split, aligner.sample_rate, args.min_duration, args.min_letters, args.max_gap)
    skips: Counter[str] = Counter()
    read = aligned = 0
    corpus_of: dict[str, str] = {}
    for name, root in data:
        r, a, speakers = align_corpus(aligner, writer, name, root, args, skips)
        read, aligned = read + r, aligned + a
        for s in sorted(speakers):
            if corpus_of.setdefault(s, name) != name:
                warn(COMMAND, f"speaker {s!r} occurs in both {corpus_of[s]} and {name}; they count as one speaker")
    if not writer.rows:
        fail(COMMAND, f"no word token of at least {args.min_duration:g} s and {args.min_letters} letters in "
                      f"{aligned} aligned utterances ({writer.aligned_words} words); nothing written")
    meta = writer.finish()
    skipped = sum(skips.values())
    why = f" ({', '.join(f'{n} {r}' for r, n in skips.most_common())})" if skipped else ""
    types = len({r["word"] for r in writer.rows})
    speakers = len({r["speaker"] for r in writer.rows})
    print(f"[rnnlab] align [{args.split}]: {read} utterances read, {aligned} aligned, {skipped} skipped{why}; "
          f"{len(writer.rows)} word tokens kept of {writer.aligned_words} aligned words (>= {args.min_duration:g} s, "
          f">= {args.min_letters} letters; {writer.gapped} more dropped for a gap > {args.max_gap:g} s inside), "
          f"{types} word types, {speakers} speakers -> {meta} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if skipped else 0


def main(argv: list[str] | None = None) -> int:
    """Aligns and writes: 0 done, 1 done with skipped utterances (named on stderr); errors exit with status 2."""
    return run(build_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
