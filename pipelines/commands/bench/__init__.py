"""``rnnlab bench``: the project's benchmark, every comparison side by side in one process (shared machines are
noisy, so the ratios matter more than the absolute numbers).

Usage: ``rnnlab bench [--only train,flops,...] [--quick] [--out runs/bench/bench.json]`` (``make bench``).

Sections (``--only`` picks some, in this order; one module each in this package):

- ``train``: training throughput of :class:`~pipelines.ctc.CTCSpeechRecognizer` through ``lightning.Trainer.fit``
  (fixed steps, no validation, logger or checkpointing) vs a bare PyTorch loop (same model, optimiser and gradient
  clipping) on the same in-memory batches; repetitions alternate and the median counts.
- ``flops``: achieved FLOP rate of the encoder's training step (LSTM FLOPs counted analytically) vs a dense
  ``torch.mm`` on the same device.
- ``data``: data pipeline throughput (decode + resample + collate + log-mel frontend) vs the model's step throughput.
- ``padding``: padding fraction of random vs length-bucketed batches on a LibriSpeech-like length distribution.
- ``rtf``: batch-1 CPU real-time factor of the default CTC model: greedy, prefix beam search, exported backends.
- ``memory``: peak memory of a training step of the default CTC model, measured in a fresh process.
- ``encoder``: exact length handling (``reverse``, ``packed``) vs torch's padded bidirectional ``nn.LSTM``
  (:func:`~pipelines.commands.bench.encoder.bench_encoder`).
- ``slots`` (only when named in ``--only``): time per training step and per decoded batch of each
  ``make compare-slots`` variant of the slot tagger (its config file in configs/slots-variants/) on the same ATIS
  batches (``--slots-data``), ratio to the plain one.
- ``data-scale`` (only when named in ``--only``: minutes): a hub-shaped parquet corpus of ``--scale-sizes`` rows
  loaded through the real SpeechDataModule, cold and warm, as one rank and as 2 simulated ranks: peak RSS growth
  and time to the first batch against corpus size.
- ``serve`` (only when named in ``--only``: real-time streams, minutes): the ``rnnlab serve`` app on a loopback
  uvicorn server with concurrent real-time WebSocket streams: per-frame latency and per-stream real-time factor
  at 1, 4 and 16 streams, the streams held at p95 <= 300 ms, cold start and RSS with every model loaded.
- ``decode`` (only when named in ``--only``): speech checkpoints (``--decode-ckpt NAME=CKPT``, e.g. CTC against
  transducer) side by side at batch 1 on one thread: greedy, beam search and streaming real-time factors.

Each section module has ``TITLE``, ``run(ctx) -> dict`` and ``show(result)``; they share one
:class:`~pipelines.commands.bench.context.BenchContext`. Exit status: 0, 1 when a section failed (its error is in
the JSON and on stderr), 2 for a bad option (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipelines.commands._common import ArgumentParser, CommandError, fail
from pipelines.commands.bench import (
    data,
    data_scale,
    decode,
    encoder,
    flops,
    memory,
    padding,
    rtf,
    serve,
    slots,
    train,
)
from pipelines.commands.bench.common import DEFAULT_DATA_DIR
from pipelines.commands.bench.context import BenchContext
from pipelines.commands.bench.models import MODEL_CONFIGS
from pipelines.inference.errors import first_line

PROG = "rnnlab bench"
SECTION_MODULES = {"train": train, "flops": flops, "data": data, "padding": padding, "rtf": rtf, "memory": memory,
                   "encoder": encoder, "slots": slots, "data-scale": data_scale, "serve": serve,
                   "decode": decode}
SECTIONS = tuple(SECTION_MODULES)
# data-scale and serve take minutes, slots needs the slot data and decode checkpoints: they are asked for by name.
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s not in ("data-scale", "slots", "serve", "decode"))


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = ArgumentParser(prog=PROG, description="The project's benchmark: " + ", ".join(SECTIONS)
                 + " (tables printed, all numbers in one JSON file).")
    ap.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                    help=f"comma-separated sections ({','.join(SECTIONS)}; default all but slots, data-scale, serve, decode)")
    ap.add_argument("--scale-sizes", type=int, nargs="+", default=None,
                    help="corpus sizes of the data-scale section (default 10000 30000 100000; 500 1000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes everywhere (seconds; for tests)")
    ap.add_argument("--out", default="runs/bench/bench.json")
    ap.add_argument("--model-size", choices=list(MODEL_CONFIGS), default=None,
                    help="model of the train/flops/data sections (default arctic; tiny with --quick)")
    ap.add_argument("--data-dir", default=None,
                    help=f"audiofolder with train/ and validation/ (default {DEFAULT_DATA_DIR} if present, else the "
                         f"embedded synthetic corpus)")
    ap.add_argument("--slots-data", default=None,
                    help=f"slot data (train/validation.jsonl) of the slots section (default {slots.DEFAULT_SLOTS_DATA})")
    ap.add_argument("--serve-seconds", type=float, default=None,
                    help="audio per stream of the serve section, sent in real time (default 5; 1 with --quick)")
    ap.add_argument("--serve-cap", type=int, default=None,
                    help="most concurrent streams the serve section tries (default 64; 2 with --quick)")
    ap.add_argument("--ckpt", default=None, help="trained CTC checkpoint for the rtf section (default: random weights)")
    ap.add_argument("--decode-ckpt", action="append", default=None, metavar="NAME=CKPT",
                    help="a speech checkpoint (or shipped name) for the decode section; repeat to compare several")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 16; 4 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per repetition (default 8)")
    ap.add_argument("--warmup-steps", type=int, default=None, help="steps of each warm-up run (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="repetitions per measurement (default 3)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the data section (configs: 0)")
    ap.add_argument("--data-batches", type=int, default=None, help="batches the data section times (default 16)")
    ap.add_argument("--max-batch-seconds", type=float, default=200.0,
                    help="max_tokens (padded seconds per batch) of the padding section")
    ap.add_argument("--beam", type=int, default=10, help="prefix beam width of the rtf section")
    ap.add_argument("--rtf-utterances", type=int, default=None, help="utterances of the rtf section (default 10)")
    ap.add_argument("--matmul-size", type=int, default=None, help="n of the n x n torch.mm (default 2048)")
    ap.add_argument("--flops-batches", type=int, default=None,
                    help="training batches the flops section times the encoder on (default 4)")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    enc = ap.add_argument_group("encoder section")
    enc.add_argument("--layers", type=int, default=None, help="default 4")
    enc.add_argument("--hidden", type=int, default=None, help="default 320")
    enc.add_argument("--encoder-input", type=int, default=None, help="default 240")
    enc.add_argument("--max-frames", type=int, default=None, help="frames after stacking (default 300)")
    enc.add_argument("--iters", type=int, default=None, help="default 3")
    a = ap.parse_args(argv)
    quick = a.quick
    defaults = {"model_size": ("arctic", "tiny"), "batch": (16, 4), "steps": (8, 3), "warmup_steps": (2, 1),
                "repeats": (3, 2), "data_batches": (16, 2), "rtf_utterances": (10, 2), "matmul_size": (2048, 256),
                "flops_batches": (4, 3), "layers": (4, 1), "hidden": (320, 16), "encoder_input": (240, 24),
                "max_frames": (300, 20), "iters": (3, 1), "scale_sizes": ([10000, 30000, 100000], [500, 1000]),
                "serve_seconds": (5.0, 1.0), "serve_cap": (64, 2)}
    for k, (full, small) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, small if quick else full)
    return a


def _check(a: argparse.Namespace) -> str | None:
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        return f"--only: unknown section(s) {', '.join(bad) or '(none)'}; choose from {','.join(SECTIONS)}"
    a.sections = [s for s in SECTIONS if s in sections]
    if a.ckpt and not Path(a.ckpt).is_file():
        return f"--ckpt: checkpoint not found: {a.ckpt}"
    if "decode" in a.sections and not a.decode_ckpt:
        return "the decode section needs --decode-ckpt NAME=CHECKPOINT (one or more)"
    for spec in a.decode_ckpt or []:
        if not all(spec.partition("=")[::2]):
            return f"--decode-ckpt takes NAME=CHECKPOINT, got {spec!r}"
    if a.data_dir and not Path(a.data_dir).is_dir():
        return f"--data-dir: not a directory: {a.data_dir}"
    if a.beam < 2:
        return f"--beam must be >= 2 (a prefix beam search), got {a.beam}"
    for name in ("batch", "steps", "repeats", "data_batches", "rtf_utterances", "matmul_size", "iters",
                 "flops_batches", "layers", "hidden", "encoder_input", "max_frames", "serve_cap"):
        if getattr(a, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}"
    if not 0.2 <= a.serve_seconds <= 600:
        return f"--serve-seconds must be from 0.2 to 600, got {a.serve_seconds:g}"
    if a.workers < 0 or a.warmup_steps < 0:
        return "--workers and --warmup-steps must be >= 0"
    return None


def _header(ctx: BenchContext) -> dict:
    import lightning

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = {"device": str(ctx.device), "cpu": cpu, "threads": torch.get_num_threads(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available(), "precisions": ctx.precisions}
    if ctx.device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(ctx.device)
    return meta


def run_bench(args: argparse.Namespace) -> dict:
    """Runs the selected sections, printing a table after each; returns every number (also on section errors)."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
        ctx = BenchContext(args, Path(tmp))
        meta = _header(ctx)
        print(f"rnnlab bench: device {meta['device']}{' (' + meta['gpu'] + ')' if 'gpu' in meta else ''}, CPU "
              f"{meta['cpu']}, {meta['threads']} torch thread(s) on {meta['cpu_affinity']} core(s), torch "
              f"{meta['torch']}, lightning {meta['lightning']}, python {meta['python']}"
              + ("" if meta["cuda"] else "; no CUDA: bf16-mixed rows skipped"))
        out = {"meta": meta}
        for name in args.sections:
            section = SECTION_MODULES[name]
            print(f"\n== {section.TITLE} ==", flush=True)
            t0 = time.perf_counter()
            try:
                res = section.run(ctx)
            except Exception as e:  # noqa: BLE001 - one failing section must not lose the others' numbers
                res = {"error": first_line(e)}
                print(f"[rnnlab] {name}: error: {res['error']}")
            else:
                section.show(res)
            res["section_wall_s"] = time.perf_counter() - t0
            ctx.results[name] = res
            out[name] = res
            print(f"({res['section_wall_s']:.1f} s)", flush=True)
        meta["data"] = dict(ctx.data_info)
        meta["args"] = {k: v for k, v in vars(args).items()}
        return out


def main(argv: list[str]) -> int:
    """``rnnlab bench [options]``: 0 when every section ran, 1 when one failed, 2 for a bad option."""
    try:
        args = _parse(argv)
        problem = _check(args)
        if problem:
            fail("bench", problem)
    except CommandError as e:  # its one line is already printed
        return int(e.code)
    res = run_bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n[rnnlab] written {out}")
    errors = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    if errors:
        print(f"{PROG}: error: section(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0
