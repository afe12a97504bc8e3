"""``rnnlab transcribe``: speech files (WAV/FLAC/OGG, any rate) to text with a CTC or attention checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def find_audio(inputs: list[str]) -> list[Path]:
    """Files given directly, plus every audio file under given directories (sorted)."""
    from data.audio import supported_extensions

    exts = set(supported_extensions())
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts))
        elif p.exists():
            out.append(p)
        else:
            raise SystemExit(f"rnnlab transcribe: error: no such file or directory: {p}")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rnnlab transcribe", description="Transcribe audio with a CTC or attention (LAS) checkpoint.")
    ap.add_argument("--ckpt", required=True, help="checkpoint of a CTC or seq2seq run")
    ap.add_argument("inputs", nargs="+", help="audio files or directories (searched recursively)")
    ap.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    ap.add_argument("--lm", default=None, help="word n-gram language model (ARPA, optionally .gz)")
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--word-bonus", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="one JSON object per file")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from data.audio import AudioError, AudioRef, load_audio
    from pipelines.base import load_module

    try:
        model = load_module(args.ckpt, map_location=args.device)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"rnnlab transcribe: error: {e}") from None
    if not hasattr(model, "transcribe_waveforms"):
        raise SystemExit(f"rnnlab transcribe: error: {args.ckpt} is a {type(model).__name__} checkpoint, "
                         f"not a speech recogniser")
    if args.lm and not Path(args.lm).is_file():
        raise SystemExit(f"rnnlab transcribe: error: language model not found: {args.lm}")
    try:
        decoder = model.make_decoder(beam_size=args.beam, lm_path=args.lm, lm_weight=args.lm_weight,
                                     word_bonus=args.word_bonus)
    except ValueError as e:
        raise SystemExit(f"rnnlab transcribe: error: {e}") from None
    files = find_audio(args.inputs)
    wavs, ok, failed = [], [], 0
    for f in files:
        try:
            wavs.append(load_audio(AudioRef(path=str(f)), model.hparams.sample_rate))
            ok.append(f)
        except AudioError as e:
            failed += 1
            print(f"rnnlab transcribe: warning: skipped {e}", file=sys.stderr)
    t0 = time.perf_counter()
    texts = model.transcribe_waveforms(wavs, decoder=decoder, batch_size=args.batch_size)
    elapsed = time.perf_counter() - t0
    audio_s = sum(w.numel() for w in wavs) / model.hparams.sample_rate
    for f, text in zip(ok, texts, strict=True):
        print(json.dumps({"path": str(f), "text": text}) if args.json else f"{f}\t{text}")
    if audio_s > 0:
        print(f"[rnnlab] {len(ok)} files, {audio_s:.1f}s of audio in {elapsed:.2f}s (RTF {elapsed / audio_s:.3f})"
              + (f", {failed} skipped" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def build_lm_main(argv: list[str]) -> int:
    """``rnnlab build-lm TEXT... --out lm.arpa``: a word n-gram LM (Kneser-Ney) from transcripts."""
    ap = argparse.ArgumentParser(prog="rnnlab build-lm", description="Build a word n-gram LM (ARPA) from text.")
    ap.add_argument("inputs", nargs="+", help="text files (one sentence a line) or metadata/manifest .jsonl files")
    ap.add_argument("--field", default="text", help="transcript field of .jsonl inputs")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--normalizer", default="asr_chars", choices=["asr_chars", "lower", "none"])
    ap.add_argument("--out", required=True, help="output ARPA file (.gz to compress)")
    args = ap.parse_args(argv)
    from data.text import normalize_text
    from modules.ctc_decoding import train_ngram

    sentences = []
    for item in args.inputs:
        p = Path(item)
        if not p.is_file():
            raise SystemExit(f"rnnlab build-lm: error: no such file: {p}")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if p.suffix == ".jsonl":
                try:
                    line = json.loads(line)[args.field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise SystemExit(f"rnnlab build-lm: error: {p}:{n}: no '{args.field}' field") from None
            text = normalize_text(str(line), args.normalizer)
            if text:
                sentences.append(text)
    if not sentences:
        raise SystemExit("rnnlab build-lm: error: no sentences found")
    lm = train_ngram(sentences, order=args.order)
    lm.to_arpa(args.out)
    print(f"[rnnlab] {args.order}-gram LM from {len(sentences)} sentences ({len(lm.vocab)} words) -> {args.out}",
          file=sys.stderr)
    return 0
