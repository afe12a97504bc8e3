"""``rnnlab predict --ckpt``: any checkpoint on raw inputs (sentences, words or audio files).

Usage: rnnlab predict --ckpt CKPT [INPUT...] [--json] [--beam N]
       rnnlab predict --ckpt SLOTS.ckpt --asr SPEECH.ckpt AUDIO... [--json] [--beam N] [--lm ARPA]

Slot filling and G2P read lines from text files or stdin (``-``, the default); a ``.jsonl`` file is read as slot
data (each row's ``tokens``); speech models take audio files and
directories, as ``rnnlab transcribe`` does (with its options), and never stdin; ``--asr`` puts a speech model before
a slot model (spoken slot filling, :mod:`pipelines.commands.spoken`). Without ``--ckpt`` the CLI
runs LightningCLI's ``predict`` over a config's data instead (:func:`pipelines.cli.lightning.predict`).
"""

from __future__ import annotations

import json

from data.errors import DataError
from data.text import read_lines
from pipelines.commands._common import ArgumentParser, at_least, fail, load_checkpoint, warn


def main(argv: list[str]) -> int:
    if any(a.split("=")[0] == "--asr" for a in argv):
        from pipelines.commands.spoken import main as spoken

        return spoken(argv)
    ap = ArgumentParser(prog="rnnlab predict", description="Run a trained checkpoint on raw inputs: "
                        "sentences (slot filling), words (G2P, one per line) or audio files (speech).")
    ap.add_argument("--ckpt", required=True, help="checkpoint of an rnnlab run")
    ap.add_argument("inputs", nargs="*", default=["-"],
                    help="slot filling and G2P: text files, or - for stdin (the default); speech models: audio files "
                         "or directories")
    ap.add_argument("--json", action="store_true", help="print one JSON object per input")
    ap.add_argument("--beam", type=at_least(1, "1 = greedy"), default=None,
                    help="beam size for attention/CTC decoding (default: model's)")
    ap.add_argument("--asr", help="speech checkpoint: transcribe audio inputs, then tag them with the slot --ckpt")
    args, rest = ap.parse_known_args(argv)

    model = load_checkpoint("predict", args.ckpt)
    if hasattr(model, "transcribe_waveforms"):
        from pipelines.commands._speech import run_transcribe

        if "-" in args.inputs:
            fail("predict", f"{args.ckpt} is a speech model ({type(model).__name__}): give audio files or "
                            f"directories, not text on stdin ('-')")
        extra = (["--json"] if args.json else []) + (["--beam", str(args.beam)] if args.beam else [])
        return run_transcribe(["--ckpt", args.ckpt, *args.inputs, *extra, *rest], command="predict")
    if hasattr(model, "class_probabilities"):
        if rest:
            ap.error(f"unrecognized arguments: {' '.join(rest)}")
        return _classify(model, args)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    lines: list[str] = []
    skipped = 0
    for item in args.inputs or ["-"]:
        # Text inputs are UTF-8, from files and stdin alike: a line that is not is named and skipped (exit 1).
        try:
            good, problems = read_lines(item)
        except DataError as e:
            fail("predict", str(e))
        if item.endswith(".jsonl"):  # slot data (`tokens`, as training reads it), not raw JSON text
            good, more = _jsonl_tokens(good)
            problems = sorted(problems + more)
        lines += [text for _, text in good]
        for n, problem in problems:
            warn("predict", f"skipped {'<stdin>' if item == '-' else item} line {n}: {problem}")
        skipped += len(problems)
    lines = [ln for ln in (x.strip() for x in lines) if ln]
    if hasattr(model, "pronounce"):
        return max(_pronounce(model, lines, as_json=args.json, beam=args.beam), 1 if skipped else 0)
    if not hasattr(model, "tag_sentences"):
        fail("predict", f"{args.ckpt}: no predictor for a {type(model).__name__} checkpoint")
    for res in model.tag_sentences(lines):
        if args.json:
            print(json.dumps(res))
        else:
            print(" ".join(f"{w}/{t}" for w, t in zip(res["words"], res["tags"], strict=True)) + f"\t{res['intent']}")
    return 1 if skipped else 0


def _jsonl_tokens(lines: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """``(line, sentence)`` from JSON Lines rows with a ``tokens`` list of strings; the rest as ``(line, problem)``."""
    good, bad = [], []
    for n, text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            bad.append((n, f"not JSON ({e.msg})"))
            continue
        tokens = row.get("tokens") if isinstance(row, dict) else None
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            bad.append((n, "no 'tokens' list of words"))
            continue
        good.append((n, " ".join(tokens)))
    return good, bad


def _classify(model, args) -> int:
    """Prints ``path<TAB>label<TAB>probability`` per audio file (``--json``: ``{path, label, score, scores}``)."""
    from pipelines.commands._speech import audio_inputs, read_audio

    if "-" in args.inputs:
        fail("predict", f"{args.ckpt} is an audio classifier ({type(model).__name__}): give audio files or "
                        f"directories, not text on stdin ('-')")
    entries, skipped = audio_inputs("predict", args.inputs)
    wavs, errors = read_audio("predict", [f for f in entries if f not in skipped], model.sample_rate)
    probs = model.class_probabilities(list(wavs.values())) if wavs else None
    rows = dict(zip(wavs, probs, strict=True)) if wavs else {}
    for f in entries:  # in input order, skipped files and directories in their place
        if f not in rows:
            if args.json:
                why = skipped[f] if f in skipped else str(errors[f]).removeprefix(f"{f}: ")
                print(json.dumps({"path": str(f), "error": why}))
            continue
        p = rows[f]
        k = int(p.argmax())
        if args.json:
            print(json.dumps({"path": str(f), "label": model.labels[k], "score": round(float(p[k]), 4),
                              "scores": {lab: round(float(x), 4) for lab, x in zip(model.labels, p.tolist(),
                                                                                   strict=True)}}))
        else:
            print(f"{f}\t{model.labels[k]}\t{float(p[k]):.3f}")
    return 1 if errors or skipped else 0


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
