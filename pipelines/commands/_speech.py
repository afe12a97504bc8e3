"""What the speech commands share (transcribe, predict on a speech model, the spoken cascade, embed): the audio
inputs, the decoding options, reading audio with each skipped file named, and the transcription run itself.

Not a command: commands import this module, never each other. The work itself is the inference layer's
(:mod:`pipelines.inference`); this module adds the command-line side (options, stderr lines, exit statuses).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from pipelines.commands._common import ArgumentParser, at_least, fail, load_checkpoint, warn


def audio_inputs(command: str, inputs: list[str]) -> tuple[list[Path], dict[Path, str]]:
    """``(entries, skipped)``: the audio files of ``inputs`` in input order, with each input that holds none (a
    directory) in its place, and why each of those is skipped (each also named by a warning). Records (``--json``)
    list the skipped inputs in their place.

    A missing input, or inputs holding no audio file at all, is a one-line exit (status 2).
    """
    from pipelines.inference import InferenceError, audio_files

    try:
        entries, empty = audio_files(inputs)
    except InferenceError as e:
        fail(command, str(e))
    skipped = {}
    for item in empty:
        skipped[item] = "no audio files in it"
        warn(command, f"skipped {item}: {skipped[item]}")
    return entries, skipped


def _record(path: Path, text: str | None = None, error: str | None = None, *, as_json: bool) -> None:
    """Prints one file's result: ``path<TAB>text``; with ``as_json`` also the skipped files, with their reason."""
    if as_json:
        print(json.dumps({"path": str(path), "text": text} if error is None else {"path": str(path), "error": error}),
              flush=True)
    elif error is None:
        print(f"{path}\t{text}", flush=True)


def _skip(command: str, path: Path, e: Exception, *, as_json: bool) -> None:
    """Names a file that could not be used on stderr (and, with ``as_json``, as a record on stdout)."""
    warn(command, f"skipped {e}")
    _record(path, error=_reason(path, e), as_json=as_json)


def _reason(path: Path, e: Exception) -> str:
    return str(e).removeprefix(f"{path}: ")


def add_decoding_args(ap: ArgumentParser) -> None:
    """The decoding options of a speech checkpoint: ``--beam --lm --lm-weight --word-bonus --batch-size --device``."""
    ap.add_argument("--beam", type=at_least(1, "1 = greedy"), default=1, help="beam size (1 = greedy)")
    ap.add_argument("--lm", default=None, help="word n-gram language model (ARPA, optionally .gz)")
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--word-bonus", type=float, default=0.0)
    ap.add_argument("--batch-size", type=at_least(1), default=8)
    ap.add_argument("--device", default="cpu")


def make_decoder(command: str, model, args):
    """The model's decoder from the options of :func:`add_decoding_args`, or a one-line exit (status 2)."""
    from pipelines.inference import InferenceError
    from pipelines.inference import make_decoder as build

    try:
        return build(model, beam=args.beam, lm=args.lm, lm_weight=args.lm_weight, word_bonus=args.word_bonus)
    except InferenceError as e:
        fail(command, str(e))


def read_audio(command: str, files: list[Path], sample_rate: int) -> tuple[dict, dict]:
    """``(waveforms, errors)``, both keyed by file: each file at ``sample_rate``, or the ``AudioError`` that
    kept it out (named on stderr)."""
    from data.audio import AudioError
    from pipelines.inference import read_audio as read

    wavs, errors = {}, {}
    for f in files:
        try:
            wavs[f] = read(f, sample_rate)
        except AudioError as e:
            errors[f] = e
            warn(command, f"skipped {e}")
    return wavs, errors


def load_cascade(command: str, args):
    """``(slot_model, speech_model, decoder)`` from ``args.ckpt``, ``args.asr`` and the decoding options."""
    slot_model = load_checkpoint(command, args.ckpt, kind="slots")
    speech_model = load_checkpoint(command, args.asr, kind="speech", device=args.device)
    return slot_model, speech_model, make_decoder(command, speech_model, args)


def run_transcribe(argv: list[str], command: str = "transcribe") -> int:
    """``rnnlab transcribe ARGV``; ``command`` names the command in messages (``predict`` on a speech model)."""
    ap = ArgumentParser(prog=f"rnnlab {command}",
                        description="Transcribe audio with a CTC or attention (LAS) checkpoint.")
    ap.add_argument("--ckpt", required=True, help="checkpoint of a CTC or seq2seq run")
    ap.add_argument("inputs", nargs="+", help="audio files or directories (searched recursively)")
    add_decoding_args(ap)
    ap.add_argument("--json", action="store_true",
                    help="one JSON object per file: {path, text}, or {path, error} for a file that was skipped")
    ap.add_argument("--stream", action="store_true",
                    help="unidirectional CTC models: feed each file in chunks, showing the text as it grows on "
                         "stderr; the final line equals offline decoding of the file alone")
    ap.add_argument("--chunk-ms", type=float, default=200.0, help="chunk length for --stream (default 200 ms)")
    args = ap.parse_args(argv)
    if args.chunk_ms <= 0:
        fail(command, f"--chunk-ms must be positive, got {args.chunk_ms:g}")

    model = load_checkpoint(command, args.ckpt, kind="speech", device=args.device)
    decoder = make_decoder(command, model, args)
    entries, skipped = audio_inputs(command, args.inputs)
    files = [f for f in entries if f not in skipped]
    if args.stream:
        from pipelines.inference import InferenceError, make_streamer

        try:
            streamer = make_streamer(model, str(args.ckpt), "--stream")
        except InferenceError as e:
            fail(command, str(e))
        return stream_files(model, streamer, entries, decoder=decoder, chunk_ms=args.chunk_ms, as_json=args.json,
                            command=command, skipped=skipped)
    wavs, errors = read_audio(command, files, model.sample_rate)
    t0 = time.perf_counter()
    texts = dict(zip(wavs, model.transcribe_waveforms(list(wavs.values()), decoder=decoder,
                                                      batch_size=args.batch_size), strict=True))
    elapsed = time.perf_counter() - t0
    audio_s = sum(w.numel() for w in wavs.values()) / model.sample_rate
    for f in entries:  # in input order, skipped files and directories in their place
        if f in texts:
            _record(f, texts[f], as_json=args.json)
        else:
            _record(f, error=skipped[f] if f in skipped else _reason(f, errors[f]), as_json=args.json)
    failed = len(skipped) + len(errors)
    if audio_s > 0:
        print(f"[rnnlab] {len(wavs)} files, {audio_s:.1f}s of audio in {elapsed:.2f}s (RTF {elapsed / audio_s:.3f})"
              + (f", {failed} skipped" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def stream_files(model, streamer, files: list[Path], *, decoder=None, chunk_ms: float = 200.0,
                 as_json: bool = False, command: str = "transcribe", skipped: dict[Path, str] | None = None) -> int:
    """Streams each file through ``streamer`` in ``chunk_ms`` chunks; the entries of ``skipped`` (inputs already
    named as skipped, with the reason) are only recorded, in their place.

    The growing hypothesis goes to stderr (rewritten in place on a terminal, one ``[partial]`` line per change
    otherwise); stdout gets the same final line per file as offline transcription. With a beam ``decoder`` the
    final line is the beam search over the final log-probabilities.
    """

    from data.audio import AudioError, AudioRef, load_audio
    from modules.streaming import stream_file_chunks

    rate = model.sample_rate
    chunk = max(1, round(chunk_ms * rate / 1000))
    tty = sys.stderr.isatty()
    clear = "\r\033[K" if tty else ""  # erases the partial line on a terminal
    skipped = skipped or {}
    done, audio_s, elapsed, failed = 0, 0.0, 0.0, len(skipped)
    for f in files:
        if f in skipped:
            _record(f, error=skipped[f], as_json=as_json)
            continue
        try:
            wav = load_audio(AudioRef(path=str(f)), rate)
        except AudioError as e:
            failed += 1
            _skip(command, f, e, as_json=as_json)
            continue
        streamer.reset()
        t0 = time.perf_counter()
        try:
            for piece in stream_file_chunks(wav, chunk):
                if streamer.accept(piece):
                    if tty:  # the end of the hypothesis, on one terminal line
                        line = f"{f.name}: {streamer.text}"[-(shutil.get_terminal_size().columns - 1):]
                        print(f"{clear}{line}", end="", file=sys.stderr, flush=True)
                    else:
                        print(f"[partial] {f}\t{streamer.text}", file=sys.stderr, flush=True)
            text = streamer.finish()
        except ValueError as e:
            failed += 1
            print(clear, end="", file=sys.stderr)
            _skip(command, f, ValueError(f"{f}: {e}"), as_json=as_json)
            continue
        if decoder is not None:
            text = streamer.decode_final(decoder)
        elapsed += time.perf_counter() - t0
        audio_s += wav.numel() / rate
        done += 1
        print(clear, end="", file=sys.stderr, flush=True)
        _record(f, text, as_json=as_json)
    if audio_s > 0:
        print(f"[rnnlab] streamed {done} files in {chunk_ms:g} ms chunks, {audio_s:.1f}s of audio in {elapsed:.2f}s "
              f"(RTF {elapsed / audio_s:.3f})" + (f", {failed} skipped" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
