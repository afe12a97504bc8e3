"""``rnnlab predict --ckpt``: any checkpoint on raw inputs (sentences, words or audio files).

Usage: rnnlab predict --ckpt CKPT [INPUT...] [--json] [--beam N]
       rnnlab predict --ckpt SLOTS.ckpt --asr SPEECH.ckpt AUDIO... [--json] [--beam N] [--lm ARPA]

Slot filling and G2P read lines from files or stdin (``-``); speech models take audio files/directories (the
same as ``rnnlab transcribe``); ``--asr`` speaks to a slot model through a speech model (spoken slot filling,
:mod:`pipelines.commands.spoken`). Without ``--ckpt`` this is LightningCLI's ``predict`` over a config's data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.commands._common import fail, load_checkpoint, warn


def main(argv: list[str]) -> int:
    if not any(a.split("=")[0] == "--ckpt" for a in argv):
        from pipelines.cli.lightning import run

        return run(["predict", *argv])
    if any(a.split("=")[0] == "--asr" for a in argv):
        from pipelines.commands.spoken import main as spoken

        return spoken(argv)
    ap = argparse.ArgumentParser(prog="rnnlab predict", description="Run a trained checkpoint on raw inputs: "
                                 "sentences (slot filling), words (G2P, one per line) or audio files (speech).")
    ap.add_argument("--ckpt", required=True, help="checkpoint of an rnnlab run")
    ap.add_argument("inputs", nargs="*", default=["-"], help="text files (or - for stdin), or audio files/dirs")
    ap.add_argument("--json", action="store_true", help="print one JSON object per input")
    ap.add_argument("--beam", type=int, default=None, help="beam size for attention/CTC decoding (default: model's)")
    ap.add_argument("--asr", help="speech checkpoint: transcribe audio inputs, then tag them with the slot --ckpt")
    args, rest = ap.parse_known_args(argv)

    model = load_checkpoint("predict", args.ckpt)
    if hasattr(model, "transcribe_waveforms"):
        from pipelines.commands.transcribe import main as transcribe

        extra = (["--json"] if args.json else []) + (["--beam", str(args.beam)] if args.beam else [])
        return transcribe(["--ckpt", args.ckpt, *args.inputs, *extra, *rest])
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    lines: list[str] = []
    for item in args.inputs or ["-"]:
        if item == "-":
            lines += sys.stdin.read().splitlines()
            continue
        try:
            lines += Path(item).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            fail("predict", f"cannot read {item}: {e.strerror}")
    lines = [ln for ln in (x.strip() for x in lines) if ln]
    if hasattr(model, "pronounce"):
        return _pronounce(model, lines, as_json=args.json, beam=args.beam)
    if not hasattr(model, "tag_sentences"):
        fail("predict", f"{args.ckpt}: no predictor for a {type(model).__name__} checkpoint")
    for res in model.tag_sentences(lines):
        if args.json:
            print(json.dumps(res))
        else:
            print(" ".join(f"{w}/{t}" for w, t in zip(res["words"], res["tags"], strict=True)) + f"\t{res['intent']}")
    return 0


def _pronounce(model, words: list[str], *, as_json: bool, beam: int | None) -> int:
    """Prints ``word<TAB>PHONEMES`` per word; a word that cannot be read is named on stderr and skipped."""
    good, failed = [], 0
    for w in words:
        try:
            model.check_word(w)
            good.append(w)
        except ValueError as e:
            failed += 1
            warn("predict", f"skipped {e}")
    prons = model.pronounce(good, beam_size=beam) if good else []
    for w, p in zip(good, prons, strict=True):
        print(json.dumps({"word": w, "phonemes": p}) if as_json else f"{w}\t{p}")
    return 1 if failed else 0
