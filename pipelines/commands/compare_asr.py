"""``rnnlab compare-asr``: an rnnlab checkpoint beside a peer recogniser (pocketsphinx) on the same corpora.

Usage::

    rnnlab compare-asr --ckpt CKPT --data NAME=DIR [NAME=DIR ...] [--split validation] [--limit N]
                       [--beam N] [--lm ARPA] [--conditions clean,noise:10,codec,reverb:0.6] [--json OUT]
    python -m pipelines.commands.compare_asr ...   # the same, without the rnnlab entry point

Each ``DIR`` is an audiofolder (``<split>/metadata.jsonl`` with ``file_name`` and ``text``). Every file is
transcribed by both systems; references and hypotheses are normalised alike (``asr_chars``), and the
Markdown table on stdout gives per corpus and system the CER, WER and real-time factor (decoding seconds
over audio seconds; model loading is not timed). Without ``--ckpt`` only the peer runs. ``--conditions`` scores
every corpus also degraded (:func:`modules.augment.degrade`, the same draw for every system): ``noise:DB`` (real
background noise, Speech Commands' validation ``silence`` clips by default, at DB dB SNR), ``codec`` (telephone
channel), ``reverb:RT60`` (a simulated room); rows are named ``corpus/condition``. The peer needs
the optional extra: ``pip install 'rnnlab[peers]'`` (``make install-peers``). Exit status 1 when some files
could not be read (each is named on stderr), 2 for an error to fix (see :mod:`pipelines.commands._common`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.commands._common import (
    ArgumentParser,
    at_least,
    fail,
    load_checkpoint,
    named_dirs,
    warn,
)
from pipelines.inference.errors import first_line

COMMAND = "compare-asr"
SAMPLE_RATE = 16000  # pocketsphinx's en-us model and the shared corpora are 16 kHz
INSTALL_HINT = "pip install 'rnnlab[peers]' (or make install-peers)"


@dataclass
class Corpus:
    """One split of one corpus, decoded once and shared by every system."""

    name: str
    ids: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    waveforms: list = field(default_factory=list)  # float32 (S,) tensors at SAMPLE_RATE

    @property
    def audio_s(self) -> float:
        return sum(w.numel() for w in self.waveforms) / SAMPLE_RATE


class RnnlabRecogniser:
    """A CTC or attention checkpoint behind the peer interface: ``transcribe(waveforms) -> texts``."""

    def __init__(self, ckpt: str, *, beam: int = 1, lm: str | None = None, lm_weight: float = 0.5,
                 word_bonus: float = 0.0, batch_size: int = 8, device: str = "cpu") -> None:
        try:
            self.model = load_checkpoint(COMMAND, ckpt, kind="speech", device=device)
        except RuntimeError as e:  # e.g. --device cuda on a machine without CUDA
            fail(COMMAND, f"{ckpt}: cannot load on {device}: {first_line(e)}")
        try:
            kw = {"lm_weight": lm_weight, "word_bonus": word_bonus} if lm else {}
            self.decoder = self.model.make_decoder(beam_size=beam, lm_path=lm, **kw)
        except ValueError as e:
            fail(COMMAND, str(e))
        settings = [f"beam {beam}"] * (beam > 1) + ["LM"] * bool(lm)
        self.name = "rnnlab" + (f" ({', '.join(settings)})" if settings else "")
        self.batch_size = batch_size

    def transcribe(self, waveforms: list) -> list[str]:
        from data.audio import resample

        rate = self.model.sample_rate
        if rate != SAMPLE_RATE:
            waveforms = [resample(w, SAMPLE_RATE, rate) for w in waveforms]
        return self.model.transcribe_waveforms(waveforms, decoder=self.decoder, batch_size=self.batch_size)


# Filler words (<sil>, [NOISE]) and alternate-pronunciation marks (read(2)) are not words of the transcript;
# left in, normalize_text would keep their letters and spell the digit.
_FILLERS = re.compile(r"<[^>]*>|\[[^\]]*\]|\(\d+\)")


class PocketSphinx:
    """pocketsphinx 5 with the en-us acoustic model, language model and dictionary its wheel bundles."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            fail(COMMAND, f"pocketsphinx is not installed; install the peer recognisers with {INSTALL_HINT}")
        self.decoder = Decoder(loglevel="FATAL")  # the default config is the bundled en-us model

    def transcribe(self, waveforms: list) -> list[str]:
        texts = []
        for w in waveforms:
            pcm = (w.clamp(-1.0, 1.0) * 32767).round().short().numpy().tobytes()  # 16-bit PCM, 16 kHz
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            texts.append(_FILLERS.sub(" ", hyp.hypstr) if hyp is not None else "")
        return texts


PEERS = {"pocketsphinx": PocketSphinx}


def load_corpus(name: str, root: Path, split: str, limit: int | None) -> tuple[Corpus, list[str]]:
    """The split's audio (16 kHz mono) and ``asr_chars`` transcripts, plus one warning per skipped row."""
    from data.audio import AudioError, AudioRef, load_audio
    from data.sources import DataSourceError, load_split
    from data.text import normalize_text

    try:
        rows = load_split(None, split, data_dir=root)
    except DataSourceError as e:
        fail(COMMAND, str(e))
    if "text" not in rows.column_names:
        fail(COMMAND, f"{root}/{split}: metadata has no 'text' column (has {rows.column_names})")
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    corpus, skipped = Corpus(name), []
    for row in rows:
        ref = normalize_text(str(row["text"] or ""), "asr_chars")
        if not ref:
            skipped.append(f"{root}/{split}/{row['file_name']}: empty transcript")
            continue
        try:
            wav = load_audio(AudioRef(path=row["audio"]), SAMPLE_RATE)
        except AudioError as e:
            skipped.append(str(e))
            continue
        corpus.ids.append(row["file_name"])
        corpus.refs.append(ref)
        corpus.waveforms.append(wav)
    if not corpus.refs:
        fail(COMMAND, f"{root}/{split}: no usable utterances")
    return corpus, skipped


def evaluate(system, corpus: Corpus) -> dict:
    """Transcribes ``corpus`` with ``system`` (timed) and scores it against the references."""
    from data.text import normalize_text
    from pipelines.training.metrics import wer_cer

    t0, c0 = time.perf_counter(), time.process_time()
    hyps = system.transcribe(corpus.waveforms)
    decode_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    hyps = [normalize_text(h.lower(), "asr_chars") for h in hyps]
    audio_s = corpus.audio_s
    return {"corpus": corpus.name, "system": system.name, "utterances": len(corpus.refs),
            "audio_hours": audio_s / 3600, **wer_cer(hyps, corpus.refs), "decode_s": decode_s,
            # CPU seconds beside wall seconds: on a shared machine the wall-clock RTF also counts waiting.
            "cpu_s": cpu_s, "rtf": decode_s / audio_s, "cpu_rtf": cpu_s / audio_s,
            "hypotheses": dict(zip(corpus.ids, hyps, strict=True))}


def markdown_table(results: list[dict]) -> str:
    """One row per corpus and system: utterances, hours, CER and WER (%) and real-time factor."""
    lines = ["| corpus | system | utterances | hours | CER % | WER % | RTF |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['corpus']} | {r['system']} | {r['utterances']} | {r['audio_hours']:.3f} | "
                     f"{100 * r['cer']:.1f} | {100 * r['wer']:.1f} | {r['rtf']:.3f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog=f"rnnlab {COMMAND}", description="An rnnlab speech checkpoint beside a peer recogniser "
                        "(pocketsphinx en-us): CER, WER and real-time factor per corpus.")
    ap.add_argument("--ckpt", default=None, help="CTC or attention checkpoint (without it only the peer runs)")
    ap.add_argument("--data", nargs="+", action="extend", required=True, metavar="NAME=DIR",
                    help="audiofolder corpora with <split>/metadata.jsonl (file_name, text); repeatable")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--limit", type=int, default=None, help="first N utterances of each corpus")
    ap.add_argument("--beam", type=at_least(1, "1 = greedy"), default=1, help="rnnlab beam size (1 = greedy)")
    ap.add_argument("--lm", default=None, help="word n-gram LM (ARPA) for the rnnlab CTC beam search")
    ap.add_argument("--lm-weight", type=float, default=0.5, help="weight of the LM's log-probability")
    ap.add_argument("--word-bonus", type=float, default=0.0, help="score added per word (with --lm)")
    ap.add_argument("--batch-size", type=at_least(1), default=8, help="rnnlab decoding batch size")
    ap.add_argument("--device", default="cpu", help="device for the rnnlab model (pocketsphinx runs on the CPU)")
    ap.add_argument("--peer", choices=[*sorted(PEERS), "none"], default="pocketsphinx",
                    help="the peer beside the checkpoint (none: the checkpoint alone)")
    ap.add_argument("--conditions", default="clean", help="comma-separated: clean, noise:DB, codec, reverb:RT60")
    ap.add_argument("--noise-dir", default="../shared/data/speech_commands",
                    help="corpus whose validation 'silence' clips are the noise of noise:DB")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the results (and hypotheses) as JSON")
    return ap


def parse_conditions(text: str) -> list[tuple[str, str, float]]:
    """``clean,noise:10,codec,reverb:0.6`` -> ``[(name, kind, value)]`` (a one-line exit when malformed)."""
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        kind, _, value = item.partition(":")
        if kind == "clean" and not value:
            out.append((item, "clean", 0.0))
            continue
        if kind not in ("noise", "codec", "reverb") or (kind == "codec") != (not value):
            fail(COMMAND, f"--conditions: {item!r} is not one of clean, noise:DB, codec, reverb:RT60")
        try:
            v = float(value) if value else 0.0
        except ValueError:
            fail(COMMAND, f"--conditions: {item!r}: {value!r} is not a number")
        if kind == "reverb" and v <= 0:
            fail(COMMAND, f"--conditions: {item!r}: RT60 must be positive")
        out.append((item, kind, v))
    if not out:
        fail(COMMAND, "--conditions: give at least one condition")
    return out


def degraded(corpus: Corpus, name: str, kind: str, value: float, noise, seed: int = 0) -> Corpus:
    """``corpus`` with every waveform degraded by ``kind`` (the same draws whatever the system)."""
    import torch

    from modules.augment import degrade

    if kind == "clean":
        return Corpus(f"{corpus.name}/{name}" if name != "clean" else corpus.name, corpus.ids, corpus.refs,
                      corpus.waveforms)
    gen = torch.Generator().manual_seed(seed)
    waves = [degrade(w, SAMPLE_RATE, kind, snr=value, rt60=value, noise=noise, generator=gen)
             for w in corpus.waveforms]
    return Corpus(f"{corpus.name}/{name}", corpus.ids, corpus.refs, waves)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        fail(COMMAND, f"--limit must be at least 1, got {args.limit}")
    if args.beam < 1:
        fail(COMMAND, f"--beam must be at least 1, got {args.beam}")
    if args.lm and not Path(args.lm).is_file():
        fail(COMMAND, f"language model not found: {args.lm}")
    if args.lm and not args.ckpt:
        fail(COMMAND, "--lm applies to the rnnlab checkpoint: give --ckpt too")
    data = named_dirs(COMMAND, args.data)
    conditions = parse_conditions(args.conditions)
    noise = None
    if any(kind == "noise" for _, kind, _ in conditions):
        from data.errors import DataError
        from data.noise import load_noise_clips

        try:
            noise = load_noise_clips(args.noise_dir, split="validation", sample_rate=SAMPLE_RATE)
        except DataError as e:
            fail(COMMAND, str(e))
    # Both systems are loaded before any corpus is read, so a missing install or bad checkpoint fails at once.
    systems = ([RnnlabRecogniser(args.ckpt, beam=args.beam, lm=args.lm, lm_weight=args.lm_weight,
                                 word_bonus=args.word_bonus, batch_size=args.batch_size,
                                 device=args.device)]
               if args.ckpt else []) + ([PEERS[args.peer]()] if args.peer != "none" else [])
    if not systems:
        fail(COMMAND, "nothing to compare: give --ckpt, a --peer, or both")
    results, skipped = [], 0
    for name, root in data:
        corpus, warnings = load_corpus(name, root, args.split, args.limit)
        for w in warnings:
            warn(COMMAND, f"skipped {w}")
        skipped += len(warnings)
        for cond, kind, value in conditions:
            version = degraded(corpus, cond, kind, value, noise)
            for system in systems:
                r = evaluate(system, version)
                results.append(r)
                print(f"[rnnlab] {version.name}: {system.name}: {r['utterances']} files, CER {100 * r['cer']:.1f}%, "
                      f"WER {100 * r['wer']:.1f}%, RTF {r['rtf']:.3f} (CPU {r['cpu_rtf']:.3f})",
                      file=sys.stderr, flush=True)
    print(markdown_table(results))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {"split": args.split, "limit": args.limit, "ckpt": args.ckpt, "beam": args.beam, "lm": args.lm,
                  "conditions": args.conditions, "results": results}
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"[rnnlab] wrote {out}", file=sys.stderr)
    return 1 if skipped else 0


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison: 0 done, 1 done with skipped files (named on stderr); errors exit with status 2."""
    return run(build_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
