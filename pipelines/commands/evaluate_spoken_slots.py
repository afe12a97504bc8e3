"""``rnnlab evaluate-spoken-slots``: slot F1 and intent accuracy from synthesised speech against from text.

Usage: rnnlab evaluate-spoken-slots --ckpt SLOTS.ckpt --asr SPEECH.ckpt --data SPLIT.jsonl [--limit N]
       [--beam N --lm ARPA] [--json] [--out F.json]

Each sentence of a slot JSONL split (``tokens, tags, intent``) is spoken by eSpeak NG in its spoken form
(:func:`data.synth.spoken_form`: numbers as words) with one of the evaluation voices
(:data:`data.synth.EVAL_VOICES`, which corpora built for training with ``voices="train"`` never use), cached
beside the embedded corpus. The speech model transcribes the audio and the slot model tags the transcripts
(:mod:`pipelines.commands.spoken`); the same slot model also tags the reference sentences. The table gives, for
text and for speech, the WER between them, slot F1 and intent accuracy.

Slot F1 from speech cannot align tags token by token (the recognised words differ from the reference words),
so both rows are scored on slot values, as spoken slot filling is usually scored: per sentence the multiset of
``(slot type, value)`` pairs, the value being the slot's words in spoken form (``"5 pm"`` and ``"five pm"``
are one value); a predicted pair is correct when the reference holds it, counted with multiplicity; precision,
recall and F1 are summed over the corpus (:func:`value_f1`). The text row also gives the usual conlleval chunk
F1 (type and boundaries); the value score differs from it only where it ignores positions (a right value
tagged at the wrong place of the sentence still counts), so on text the two are close. A slot model trained on
spoken form (``data.spoken_form``) tags the spoken form of the reference words, and its conlleval references
are their tags spread over the spoken words (:func:`data.slots.spoken_tokens`); the value score is the same
for both kinds of model, values being compared in spoken form.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipelines.commands._common import ArgumentParser, at_least, fail
from pipelines.commands._speech import add_decoding_args, load_cascade, read_audio


def slot_values(words: Sequence[str], tags: Sequence[str]) -> Counter:
    """The multiset of ``(type, value)`` of a tagged sentence: conlleval chunks, values in spoken form.

    Example:
        >>> sorted(slot_values(["from", "st.", "louis", "at", "5", "pm"],
        ...                    ["O", "B-from", "I-from", "O", "B-time", "I-time"]).items())
        [(('from', 'saint louis'), 1), (('time', 'five pm'), 1)]
    """
    from data.spoken import spoken_form
    from pipelines.training.metrics import bio_chunks

    return Counter((type_, " ".join(spoken_form(words[start:end]))) for type_, start, end in bio_chunks(tags))


def value_f1(refs: Sequence[Counter], hyps: Sequence[Counter]) -> dict[str, float]:
    """Corpus precision, recall and F1 (percent) of predicted ``(type, value)`` multisets against references.

    Each sentence contributes ``|ref & hyp|`` correct pairs (multiset intersection), ``|hyp|`` predicted and
    ``|ref|`` reference pairs; each score is 0 where its denominator is 0.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(hyps)} predicted sentences but {len(refs)} references")
    correct = sum(sum((r & h).values()) for r, h in zip(refs, hyps, strict=True))
    predicted, gold = sum(sum(h.values()) for h in hyps), sum(sum(r.values()) for r in refs)
    return {"precision": 100 * correct / predicted if predicted else 0.0,
            "recall": 100 * correct / gold if gold else 0.0,
            "f1": 200 * correct / (predicted + gold) if predicted + gold else 0.0}


def _read_split(path: str, limit: int | None) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if len(row["tokens"]) != len(row["tags"]) or not row["tokens"]:
                        raise ValueError("tokens and tags differ in length or are empty")
                except (ValueError, KeyError, TypeError) as e:
                    fail("evaluate-spoken-slots", f"{path}:{n}: expected tokens, tags and intent ({e})")
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    break
    except OSError as e:
        fail("evaluate-spoken-slots", f"cannot read {path}: {e.strerror}")
    if not rows:
        fail("evaluate-spoken-slots", f"{path}: no sentences")
    return rows


def synthesise(rows: list[dict], *, seed: int, workers: int, root: str | None = None) -> list[Path]:
    """Speaks every row (spoken form, evaluation voices) into a cached corpus; returns the audio files in order."""
    from data.spoken import spoken_form
    from data.synth import EVAL_VOICES, build_corpus, default_corpus_dir, load_metadata
    from data.synth.sentences import texts_digest

    sentences = [" ".join(spoken_form(r["tokens"])) for r in rows]
    if root is None:
        base = default_corpus_dir()
        root = base.with_name(f"{base.name}_eval-{texts_digest(sentences)}-seed{seed}")
    root = build_corpus(root, texts={"validation": sentences}, voices=EVAL_VOICES, seed=seed, workers=workers,
                        progress=False)
    return [Path(root) / "validation" / m["file_name"] for m in load_metadata(root, "validation")]


def evaluate(slot_model, speech_model, decoder, rows: list[dict], files: list[Path], *,
             batch_size: int = 8) -> dict:
    """Scores the cascade on ``files`` (the spoken ``rows``) and the slot model on the rows' text."""
    from data.spoken import spoken_form
    from pipelines.inference.slots import tag_transcripts
    from pipelines.training.metrics import SlotF1, wer_cer

    refs = [" ".join(spoken_form(r["tokens"])) for r in rows]
    wavs, errors = read_audio("evaluate-spoken-slots", files, speech_model.sample_rate)
    if errors:
        first = next(iter(errors.values()))
        fail("evaluate-spoken-slots", f"{len(errors)} synthesised files could not be read, e.g. {first}")
    hyps = speech_model.transcribe_waveforms(list(wavs.values()), decoder=decoder, batch_size=batch_size)
    spoken = tag_transcripts(slot_model, hyps)
    text = slot_model.tag_sentences([" ".join(r["tokens"]) for r in rows])
    gold = [slot_values(r["tokens"], r["tags"]) for r in rows]
    conll = SlotF1()
    ref_tags = [r["tags"] for r in rows]
    if getattr(slot_model, "spoken_form", False):  # it tagged the spoken words: score against their tags
        from data.slots import spoken_tokens

        ref_tags = [spoken_tokens(r["tokens"], r["tags"])[1] for r in rows]
    conll.update([t["tags"] for t in text], ref_tags)
    n = len(rows)
    errors = wer_cer(hyps, refs)
    return {
        "sentences": n,
        "text": {"wer": 0.0, "slot_value": value_f1(gold, [slot_values(t["words"], t["tags"]) for t in text]),
                 "slot_conlleval": {k: 100 * float(v) for k, v in conll.compute().items()},
                 "intent_acc": 100 * sum(t["intent"] == r["intent"] for t, r in zip(text, rows, strict=True)) / n},
        "speech": {"wer": 100 * errors["wer"], "cer": 100 * errors["cer"],
                   "slot_value": value_f1(gold, [slot_values(s["words"], s["tags"]) for s in spoken]),
                   "intent_acc": 100 * sum(s["intent"] == r["intent"] for s, r in zip(spoken, rows, strict=True)) / n},
        "examples": [{"reference": ref, "transcript": s["transcript"], "words": s["words"], "tags": s["tags"],
                      "intent": s["intent"], "gold_intent": r["intent"]} for ref, s, r in list(zip(refs, spoken, rows, strict=True))[:5]],
    }


def table(result: dict) -> str:
    """The Markdown table of :func:`evaluate`'s result."""
    t, s = result["text"], result["speech"]
    lines = [
        "| input | WER % | slot F1 (type, value) | slot F1 (conlleval) | intent acc % |",
        "|---|---|---|---|---|",
        f"| text (reference words) | 0.0 | {t['slot_value']['f1']:.2f} | {t['slot_conlleval']['f1']:.2f} "
        f"| {t['intent_acc']:.2f} |",
        f"| speech (eSpeak NG, evaluation voices) | {s['wer']:.1f} | {s['slot_value']['f1']:.2f} | - "
        f"| {s['intent_acc']:.2f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``rnnlab evaluate-spoken-slots`` (see the module docstring)."""
    from data.synth import EVAL_VOICES

    ap = ArgumentParser(prog="rnnlab evaluate-spoken-slots", description="Slot F1, intent accuracy and WER of a "
                        "speech -> slot cascade on synthesised speech, beside the same slot model on the text. "
                        f"Evaluation voices: {', '.join(EVAL_VOICES)}.")
    ap.add_argument("--ckpt", required=True, help="slot filling checkpoint")
    ap.add_argument("--asr", required=True, help="speech checkpoint (CTC or attention)")
    ap.add_argument("--data", required=True, help="slot JSONL split (tokens, tags, intent), e.g. validation.jsonl")
    ap.add_argument("--limit", type=at_least(1), default=None, help="only the first N sentences")
    ap.add_argument("--seed", type=int, default=0, help="seed of voices, rates, pitches and noise")
    ap.add_argument("--workers", type=at_least(1), default=2, help="synthesis processes")
    ap.add_argument("--synth-dir", default=None, help="where the audio is cached (default: beside the embedded corpus)")
    add_decoding_args(ap)
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    ap.add_argument("--out", default=None, help="also write the result as JSON to this file")
    args = ap.parse_args(argv)

    slot_model, speech_model, decoder = load_cascade("evaluate-spoken-slots", args)
    rows = _read_split(args.data, args.limit)
    try:
        files = synthesise(rows, seed=args.seed, workers=args.workers, root=args.synth_dir)
    except (FileExistsError, ValueError, RuntimeError) as e:
        fail("evaluate-spoken-slots", str(e))
    result = evaluate(slot_model, speech_model, decoder, rows, files, batch_size=args.batch_size)
    result.update(data=args.data, ckpt=args.ckpt, asr=args.asr, voices=list(EVAL_VOICES), beam=args.beam, lm=args.lm)
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        except OSError as e:
            fail("evaluate-spoken-slots", f"cannot write {args.out}: {e.strerror}")
    print(json.dumps(result) if args.json else table(result), file=sys.stdout)
    return 0
