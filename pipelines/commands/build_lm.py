"""``rnnlab build-lm``: a word n-gram language model (Kneser-Ney, ARPA) from transcripts, for beam search.

Usage: rnnlab build-lm TEXT|JSONL... --out LM.arpa[.gz] [--order 3] [--field text] [--normalizer asr_chars]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.commands._common import fail


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rnnlab build-lm", description="Build a word n-gram LM (ARPA) from text.")
    ap.add_argument("inputs", nargs="+", help="text files (one sentence a line) or metadata/manifest .jsonl files")
    ap.add_argument("--field", default="text", help="transcript field of .jsonl inputs")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--normalizer", default="asr_chars", choices=["asr_chars", "lower", "none"])
    ap.add_argument("--out", required=True, help="output ARPA file (.gz to compress)")
    args = ap.parse_args(argv)
    from data.text import normalize_text
    from modules.ngram_lm import train_ngram

    sentences = []
    for item in args.inputs:
        p = Path(item)
        if not p.is_file():
            fail("build-lm", f"no such file: {p}")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if p.suffix == ".jsonl":
                try:
                    line = json.loads(line)[args.field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    fail("build-lm", f"{p}:{n}: no '{args.field}' field")
            text = normalize_text(str(line), args.normalizer)
            if text:
                sentences.append(text)
    if not sentences:
        fail("build-lm", "no sentences found")
    lm = train_ngram(sentences, order=args.order)
    lm.to_arpa(args.out)
    print(f"[rnnlab] {args.order}-gram LM from {len(sentences)} sentences ({len(lm.vocab)} words) -> {args.out}",
          file=sys.stderr)
    return 0
