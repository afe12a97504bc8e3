"""Spoken slot filling: audio files -> transcripts (CTC or attention checkpoint) -> words, slot tags and intent.

Usage: rnnlab predict --ckpt SLOTS.ckpt --asr SPEECH.ckpt FILE|DIR... [--beam N] [--lm ARPA] [--json]

A cascade: the speech model transcribes each file (the decoding of ``rnnlab transcribe``: greedy, or a prefix
beam with an optional word LM), the transcript becomes slot-tagger tokens (:func:`data.synth.slot_words`:
lower-case words, ``saint`` -> ``st.``; numbers stay words; a slot model trained on spoken form,
``data.spoken_form``, gets the lower-case words as they are) and the slot model tags them. Prints
``path<TAB>word/TAG ...<TAB>intent`` per file, or with ``--json`` one object per file: ``path, transcript,
words, tags, intent``, or ``path, error`` (the reason) for a file that could not be read, in its place. Exit
status 1 when some inputs were skipped (each named on stderr), 2 for an error to fix.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from pipelines.commands._common import ArgumentParser, load_checkpoint
from pipelines.commands.transcribe import add_decoding_args, audio_inputs, make_decoder, read_audio


def tag_transcripts(slot_model, transcripts: Sequence[str]) -> list[dict]:
    """Tags transcripts with a slot model: one ``{"transcript", "words", "tags", "intent"}`` per transcript.

    A model trained on spoken form (``data.spoken_form``) gets the recogniser's words as they are; any other
    gets :func:`data.synth.slot_words` (``saint`` -> ``st.``). An empty transcript (nothing recognised) gets no
    words, no tags and intent ``None``.
    """
    from data.synth.sentences import slot_words
    from data.synth.texts import normalize_text

    as_words = (lambda t: normalize_text(t).split()) if getattr(slot_model, "spoken_form", False) else slot_words
    words = [as_words(t) for t in transcripts]
    tagged = iter(slot_model.tag_sentences([" ".join(w) for w in words if w]) if any(words) else [])
    out = []
    for text, w in zip(transcripts, words, strict=True):
        res = next(tagged) if w else {"words": [], "tags": [], "intent": None}
        out.append({"transcript": text, "words": res["words"], "tags": res["tags"], "intent": res["intent"]})
    return out


def load_cascade(command: str, args: argparse.Namespace):
    """``(slot_model, speech_model, decoder)`` from ``args.ckpt``, ``args.asr`` and the decoding options."""
    slot_model = load_checkpoint(command, args.ckpt, kind="slots")
    speech_model = load_checkpoint(command, args.asr, kind="speech", device=args.device)
    return slot_model, speech_model, make_decoder(command, speech_model, args)


def main(argv: list[str]) -> int:
    """``rnnlab predict --ckpt SLOTS.ckpt --asr SPEECH.ckpt FILE|DIR...`` (see the module docstring)."""
    ap = ArgumentParser(prog="rnnlab predict", description="Spoken slot filling: transcribe audio with a speech "
                        "checkpoint (--asr), then tag the words with a slot checkpoint (--ckpt).")
    ap.add_argument("--ckpt", required=True, help="slot filling checkpoint")
    ap.add_argument("--asr", required=True, help="speech checkpoint (CTC or attention)")
    ap.add_argument("inputs", nargs="+", help="audio files or directories (searched recursively)")
    add_decoding_args(ap)
    ap.add_argument("--json", action="store_true", help="one JSON object per file: {path, transcript, words, tags, "
                    "intent}, or {path, error} for a file that was skipped")
    args = ap.parse_args(argv)

    slot_model, speech_model, decoder = load_cascade("predict", args)
    files, empty = audio_inputs("predict", args.inputs)
    wavs, errors = read_audio("predict", files, speech_model.hparams.sample_rate)
    texts = speech_model.transcribe_waveforms(list(wavs.values()), decoder=decoder, batch_size=args.batch_size)
    results = dict(zip(wavs, tag_transcripts(slot_model, texts), strict=True))
    for f in files:  # in input order, skipped files in their place
        if f not in results:
            if args.json:
                print(json.dumps({"path": str(f), "error": str(errors[f]).removeprefix(f"{f}: ")}))
        elif args.json:
            print(json.dumps({"path": str(f), **results[f]}))
        else:
            res = results[f]
            pairs = " ".join(f"{w}/{t}" for w, t in zip(res["words"], res["tags"], strict=True))
            print(f"{f}\t{pairs}\t{res['intent'] or ''}")
    return 1 if errors or empty else 0
