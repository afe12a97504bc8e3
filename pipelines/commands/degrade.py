"""``rnnlab degrade``: a degraded copy of an audiofolder split (noise at an SNR, telephone codec, reverberation),
to measure how a recogniser holds up on rooms and microphones it never heard.

Usage: rnnlab degrade DIR --out OUT --kind noise|codec|reverb [--snr DB] [--rt60 S] [--noise-dir DIR]
                      [--split validation] [--seed 0]

Reads ``DIR/<split>/metadata.jsonl`` and writes ``OUT/<split>/``: every file degraded (16-bit FLAC at the input's
rate, mono) and the metadata rows with their new ``file_name``, so ``OUT`` is a corpus every command reads
(``rnnlab compare-asr --data NAME=OUT``). Deterministic for a seed. ``noise`` mixes clips of real background
noise (``--noise-dir``: the ``silence`` clips of a corpus, by default Speech Commands' *validation* split, which
training never uses) at ``--snr`` dB; ``codec`` is a telephone channel (300-3400 Hz band, 8 kHz, 8-bit mu-law,
back to the input rate); ``reverb`` convolves a simulated room impulse response of ``--rt60`` seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from modules.augment import degrade
from pipelines.commands._common import ArgumentParser, fail, warn

COMMAND = "degrade"
DEFAULT_NOISE = "../shared/data/speech_commands"


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog=f"rnnlab {COMMAND}", description="Write a degraded copy of an audiofolder split.")
    ap.add_argument("data", help="audiofolder corpus (DIR/<split>/metadata.jsonl)")
    ap.add_argument("--out", required=True, help="output corpus folder (OUT/<split>/ is written)")
    ap.add_argument("--kind", required=True, choices=["noise", "codec", "reverb"])
    ap.add_argument("--snr", type=float, default=10.0, help="noise: signal-to-noise ratio in dB (default 10)")
    ap.add_argument("--rt60", type=float, default=0.5, help="reverb: reverberation time in seconds (default 0.5)")
    ap.add_argument("--noise-dir", default=DEFAULT_NOISE, help="noise: corpus whose 'silence' clips are the noise")
    ap.add_argument("--noise-split", default="validation", help="noise: that corpus's split (default validation)")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.rt60 <= 0:
        fail(COMMAND, f"--rt60 must be positive, got {args.rt60:g}")
    import soundfile as sf
    import torch

    from data.audio import AudioError, AudioRef, load_audio
    from data.errors import DataError

    meta = Path(args.data) / args.split / "metadata.jsonl"
    if not meta.is_file():
        fail(COMMAND, f"no {meta} (an audiofolder split with metadata.jsonl)")
    noise: dict[int, list] = {}  # by sample rate

    def noise_at(rate: int) -> list | None:
        if args.kind != "noise":
            return None
        if rate not in noise:
            from data.noise import load_noise_clips

            try:
                noise[rate] = load_noise_clips(args.noise_dir, split=args.noise_split, sample_rate=rate)
            except DataError as e:
                fail(COMMAND, str(e))
        return noise[rate]

    if args.kind == "noise":
        noise_at(16000)  # a missing noise corpus stops before any file is written
    out_dir = Path(args.out) / args.split
    if out_dir.resolve() == meta.parent.resolve():
        fail(COMMAND, "--out must differ from the input corpus")
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    rows, skipped = [], 0
    lines = meta.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            src = meta.parent / row["file_name"]
            info = sf.info(str(src))
            wav = load_audio(AudioRef(path=str(src)), info.samplerate)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            skipped += 1
            warn(COMMAND, f"skipped {meta} line {n}: {type(e).__name__}")
            continue
        except (AudioError, RuntimeError) as e:
            skipped += 1
            warn(COMMAND, f"skipped {meta} line {n}: {str(e).splitlines()[0]}")
            continue
        out = degrade(wav, info.samplerate, args.kind, snr=args.snr, rt60=args.rt60,
                          noise=noise_at(info.samplerate), generator=gen)
        name = str(Path(row["file_name"]).with_suffix(".flac"))
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out_dir / name, out.numpy(), info.samplerate, subtype="PCM_16")
        rows.append({**row, "file_name": name})
    (out_dir / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    what = {"noise": f"noise at {args.snr:g} dB SNR", "codec": "telephone codec (8 kHz mu-law)",
            "reverb": f"reverberation RT60 {args.rt60:g} s"}[args.kind]
    print(f"[rnnlab] {len(rows)} files with {what} in {out_dir}" + (f", {skipped} skipped" if skipped else ""))
    return 1 if skipped else 0
