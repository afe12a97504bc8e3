"""``rnnlab bench``: side-by-side speed checks in one process (ratios matter: shared machines are noisy).

Compares the encoder's exact length handling (``reverse``: unpacked kernel, backward direction reversed
within each length; ``packed``: PackedSequence) against torch's plain bidirectional ``nn.LSTM`` on padded
input (fast but inexact for padded rows), forward + backward, on batches of realistic length spread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _time(fn, *, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench_encoder(*, layers: int = 4, hidden: int = 320, input_size: int = 240, batch: int = 16,
                  max_frames: int = 300, iters: int = 3, warmup: int = 1, seed: int = 0) -> dict:
    from modules.encoders import RecurrentEncoder

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(max_frames * 0.7), max_frames + 1, (batch,), generator=g)
    lengths[0] = max_frames
    x = torch.randn(batch, max_frames, input_size, generator=g)
    results = {}
    baseline = torch.nn.LSTM(input_size, hidden, num_layers=layers, bidirectional=True, batch_first=True)

    def run_baseline():
        out, _ = baseline(x)
        out.sum().backward()

    results["nn.LSTM padded (inexact)"] = _time(run_baseline, warmup=warmup, iters=iters)
    for mode in ("reverse", "packed"):
        enc = RecurrentEncoder(input_size=input_size, hidden_size=hidden, num_layers=layers, cell="lstm",
                               bidirectional=True, length_handling=mode)

        def run(enc=enc):
            out, _ = enc(x, lengths)
            out.sum().backward()

        results[f"RecurrentEncoder {mode} (exact)"] = _time(run, warmup=warmup, iters=iters)
    base = results["nn.LSTM padded (inexact)"]
    return {"config": {"layers": layers, "hidden": hidden, "input_size": input_size, "batch": batch,
                       "max_frames": max_frames, "threads": torch.get_num_threads()},
            "seconds_per_batch": results,
            "utterances_per_s": {k: batch / v for k, v in results.items()},
            "ratio_vs_padded_nn_lstm": {k: base / v for k, v in results.items()}}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rnnlab bench", description="Encoder speed: exact length handling modes.")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-frames", type=int, default=300, help="frames after stacking (3 s at 100/s, stack 1)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", default="runs/bench/encoder.json")
    args = ap.parse_args(argv)
    res = bench_encoder(layers=args.layers, hidden=args.hidden, batch=args.batch, max_frames=args.max_frames,
                        iters=args.iters)
    print(f"fwd+bwd, {args.layers}x BiLSTM-{args.hidden}, batch {args.batch}, up to {args.max_frames} frames, "
          f"{res['config']['threads']} threads")
    print(f"{'method':32s} {'s/batch':>9s} {'utt/s':>8s} {'vs padded nn.LSTM':>18s}")
    for k, v in res["seconds_per_batch"].items():
        print(f"{k:32s} {v:9.3f} {res['utterances_per_s'][k]:8.1f} {res['ratio_vs_padded_nn_lstm'][k]:17.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[rnnlab] written {out}")
    return 0
