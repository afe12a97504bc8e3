"""``rnnlab transcribe``: speech files (WAV/FLAC/OGG, any rate) to text with a CTC or attention checkpoint.

Usage: rnnlab transcribe --ckpt CKPT FILE|DIR... [--beam N] [--lm ARPA] [--json] [--stream [--chunk-ms MS]]

Prints ``path<TAB>text`` per file (``--json``: one object per file) and the real-time factor on stderr. Exit
status 1 when some files could not be read (each is named on stderr), 2 for an error to fix (see
:mod:`pipelines.commands._common`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from pipelines.commands._common import fail, load_checkpoint, warn


def find_audio(inputs: list[str]) -> list[Path]:
    """Files given directly, plus every audio file under given directories (sorted).

    Raises:
        FileNotFoundError: an input that does not exist.
    """
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
            raise FileNotFoundError(f"no such file or directory: {p}")
    return out


def add_decoding_args(ap: argparse.ArgumentParser) -> None:
    """The decoding options of a speech checkpoint: ``--beam --lm --lm-weight --word-bonus --batch-size --device``."""
    ap.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    ap.add_argument("--lm", default=None, help="word n-gram language model (ARPA, optionally .gz)")
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--word-bonus", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")


def make_decoder(command: str, model, args: argparse.Namespace):
    """``model.make_decoder`` from the options of :func:`add_decoding_args`, or a one-line exit (status 2)."""
    if args.lm and not Path(args.lm).is_file():
        fail(command, f"language model not found: {args.lm}")
    try:
        return model.make_decoder(beam_size=args.beam, lm_path=args.lm, lm_weight=args.lm_weight,
                                  word_bonus=args.word_bonus)
    except ValueError as e:
        fail(command, str(e))


def read_audio(command: str, files: list[Path], sample_rate: int) -> tuple[list, list[Path], list[tuple[Path, str]]]:
    """``(waveforms, their files, skipped)``: each file at ``sample_rate``; an unreadable one is warned about
    on stderr and listed in ``skipped`` as ``(file, reason)``."""
    from data.audio import AudioError, AudioRef, load_audio

    wavs, ok, skipped = [], [], []
    for f in files:
        try:
            wavs.append(load_audio(AudioRef(path=str(f)), sample_rate))
            ok.append(f)
        except AudioError as e:
            skipped.append((f, str(e)))
            warn(command, f"skipped {e}")
    return wavs, ok, skipped


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rnnlab transcribe", description="Transcribe audio with a CTC or attention (LAS) checkpoint.")
    ap.add_argument("--ckpt", required=True, help="checkpoint of a CTC or seq2seq run")
    ap.add_argument("inputs", nargs="+", help="audio files or directories (searched recursively)")
    add_decoding_args(ap)
    ap.add_argument("--json", action="store_true", help="one JSON object per file")
    ap.add_argument("--stream", action="store_true",
                    help="unidirectional CTC models: feed each file in chunks, showing the text as it grows on "
                         "stderr; the final line equals offline decoding of the file alone")
    ap.add_argument("--chunk-ms", type=float, default=200.0, help="chunk length for --stream (default 200 ms)")
    args = ap.parse_args(argv)
    if args.chunk_ms <= 0:
        fail("transcribe", f"--chunk-ms must be positive, got {args.chunk_ms:g}")

    model = load_checkpoint("transcribe", args.ckpt, kind="speech", device=args.device)
    decoder = make_decoder("transcribe", model, args)
    try:
        files = find_audio(args.inputs)
    except FileNotFoundError as e:
        fail("transcribe", str(e))
    if args.stream:
        streamer = make_streamer(model, args.ckpt)
        return stream_files(model, streamer, files, decoder=decoder, chunk_ms=args.chunk_ms, as_json=args.json)
    wavs, ok, skipped = read_audio("transcribe", files, model.hparams.sample_rate)
    failed = len(skipped)
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


def make_streamer(model, ckpt: str):
    """A :class:`modules.streaming.StreamingTranscriber` for ``model``, or a one-line exit (status 2)."""
    from modules.streaming import StreamingTranscriber
    from pipelines.ctc import CTCSpeechRecognizer

    if not isinstance(model, CTCSpeechRecognizer):
        fail("transcribe", f"--stream needs a CTC checkpoint; {ckpt} is a {type(model).__name__} checkpoint")
    try:
        return StreamingTranscriber(model)
    except ValueError as e:
        fail("transcribe", f"--stream: {e}")


def stream_files(model, streamer, files: list[Path], *, decoder=None, chunk_ms: float = 200.0,
                 as_json: bool = False) -> int:
    """Streams each file through ``streamer`` in ``chunk_ms`` chunks.

    The growing hypothesis goes to stderr (rewritten in place on a terminal, one ``[partial]`` line per change
    otherwise); stdout gets the same final line per file as offline transcription. With a beam ``decoder`` the
    final line is the beam search over the final log-probabilities.
    """
    import torch

    from data.audio import AudioError, AudioRef, load_audio
    from modules.streaming import stream_file_chunks

    rate = model.hparams.sample_rate
    chunk = max(1, round(chunk_ms * rate / 1000))
    tty = sys.stderr.isatty()
    clear = "\r\033[K" if tty else ""  # erases the partial line on a terminal
    failed, done, audio_s, elapsed = 0, 0, 0.0, 0.0
    for f in files:
        try:
            wav = load_audio(AudioRef(path=str(f)), rate)
        except AudioError as e:
            failed += 1
            warn("transcribe", f"skipped {e}")
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
            warn("transcribe", f"skipped {f}: {e}")
            continue
        if decoder is not None:
            lp = streamer.log_probs
            ids = decoder.decode(lp[None].float().cpu(), torch.tensor([lp.size(0)]))[0]
            text = model.tokenizer.decode(ids)
        elapsed += time.perf_counter() - t0
        audio_s += wav.numel() / rate
        done += 1
        print(clear, end="", file=sys.stderr, flush=True)
        print(json.dumps({"path": str(f), "text": text}) if as_json else f"{f}\t{text}", flush=True)
    if audio_s > 0:
        print(f"[rnnlab] streamed {done} files in {chunk_ms:g} ms chunks, {audio_s:.1f}s of audio in {elapsed:.2f}s "
              f"(RTF {elapsed / audio_s:.3f})" + (f", {failed} skipped" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
