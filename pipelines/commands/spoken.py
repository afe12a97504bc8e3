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

import json

from pipelines.commands._common import ArgumentParser
from pipelines.commands._speech import add_decoding_args, audio_inputs, load_cascade, read_audio
from pipelines.inference.slots import tag_transcripts


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
    entries, skipped = audio_inputs("predict", args.inputs)
    wavs, errors = read_audio("predict", [f for f in entries if f not in skipped], speech_model.sample_rate)
    texts = speech_model.transcribe_waveforms(list(wavs.values()), decoder=decoder, batch_size=args.batch_size)
    results = dict(zip(wavs, tag_transcripts(slot_model, texts), strict=True))
    for f in entries:  # in input order, skipped files and directories in their place
        if f not in results:
            if args.json:
                why = skipped[f] if f in skipped else str(errors[f]).removeprefix(f"{f}: ")
                print(json.dumps({"path": str(f), "error": why}))
        elif args.json:
            print(json.dumps({"path": str(f), **results[f]}))
        else:
            res = results[f]
            pairs = " ".join(f"{w}/{t}" for w, t in zip(res["words"], res["tags"], strict=True))
            print(f"{f}\t{pairs}\t{res['intent'] or ''}")
    return 1 if errors or skipped else 0
