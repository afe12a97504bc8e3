"""``rnnlab bench`` section ``memory``: peak memory of a training step of the default CTC model, measured in a
fresh Python process per precision (:func:`memory_main` is that process)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pipelines.commands.bench.common import (
    BF16_SKIPPED,
    PRECISIONS,
    REPO,
    lightning_quiet,
    measured,
    print_notes,
    sync,
    table,
    to_device,
)
from pipelines.commands.bench.models import build_model, gradient_clipping, optimizers, train_step

TITLE = "6. peak memory of a training step"
_CHILD = ("import sys; from pipelines.commands.bench.memory import memory_main; "
          "sys.exit(memory_main(sys.argv[1:]))")


def run(ctx) -> dict:
    """Peak memory of training steps of the default model, in a fresh Python process per precision."""
    a = ctx.args
    longest = max(ctx.train_batches(), key=lambda b: b["waveforms"].numel())
    path = ctx.tmp / "memory-batch.pt"
    torch.save({k: longest[k] for k in ("waveforms", "lengths", "targets", "target_lengths")}, path)
    size = "tiny" if a.quick else "default"
    out = {"model_size": size, "batch": {"utterances": int(longest["lengths"].numel()),
                                         "padded_s": longest["waveforms"].size(1) / ctx.dm.hparams.sample_rate},
           "steps": 2, "measured": "a fresh process: imports, model, optimiser and batch first; then 2 training "
                                   "steps (the first allocates the optimiser state)", "precision": {}}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for precision in PRECISIONS:
        if precision not in ctx.precisions:
            out["precision"][precision] = {"skipped": BF16_SKIPPED}
            continue
        cmd = [sys.executable, "-c", _CHILD, "--batch", str(path), "--size", size, "--device", ctx.device.type,
               "--precision", precision, "--threads", str(torch.get_num_threads())]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"memory child process failed ({proc.returncode}): {tail}")
        out["precision"][precision] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def show(r: dict) -> None:
    """Prints the section's table."""
    b = r["batch"]
    print(f"{r['model_size']} CTC model, the longest training batch ({b['utterances']} utterances, padded to "
          f"{b['padded_s']:.1f} s), {r['steps']} steps in a fresh process")
    rows, notes = [], []
    for p, v in measured(r["precision"], notes):
        rows.append([f"{p} CPU RSS", v["rss_before_mb"], v.get("peak_rss_mb"), v.get("step_peak_rss_mb"),
                     v["ru_maxrss_delta_mb"], v["params_mb"]])
        if "cuda_step_peak_mb" in v:
            rows.append([f"{p} CUDA allocated", v["cuda_before_mb"], v["cuda_peak_mb"], v["cuda_step_peak_mb"], "",
                         v["params_mb"]])
    print(table(["memory (MB)", "before", "peak", "step peak - before", "ru_maxrss delta", "parameters"], rows))
    notes.append(next(v["method"] for v in r["precision"].values() if "method" in v))
    print_notes(notes)


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def memory_main(argv: list[str]) -> int:
    """Child process of the memory section: prints one JSON line with the peak memory of 2 training steps."""
    import gc
    import resource

    ap = argparse.ArgumentParser(prog="rnnlab bench memory child")
    ap.add_argument("--batch", required=True)
    ap.add_argument("--size", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import pipelines.ctc  # noqa: F401 - every import before the baseline
    from modules.ctc import ctc_loss_checked  # noqa: F401

    device = torch.device(a.device)
    model = build_model(a.size).to(device).train()
    opt, _ = optimizers(model)
    batch = to_device(torch.load(a.batch, weights_only=True), device)
    batch["ids"] = [str(i) for i in range(batch["lengths"].numel())]
    clip_val, clip_algo = gradient_clipping()
    gc.collect()
    params_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_before = _proc_status_mb("VmRSS")
    hwm_reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
        hwm_reset = True
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated() / 2**20
    with lightning_quiet():
        for i in range(2):
            train_step(model, batch, opt, batch_idx=i, clip_val=clip_val, clip_algorithm=clip_algo, device=device,
                       precision=a.precision)
    sync(device)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"params_mb": params_mb, "rss_before_mb": rss_before if rss_before is not None else maxrss_before,
           "maxrss_before_mb": maxrss_before, "maxrss_after_mb": maxrss_after,
           "ru_maxrss_delta_mb": maxrss_after - maxrss_before, "threads": torch.get_num_threads()}
    if hwm_reset and rss_before is not None:
        peak = _proc_status_mb("VmHWM")
        res.update({"peak_rss_mb": peak, "step_peak_rss_mb": peak - rss_before,
                    "method": "peak RSS (VmHWM, reset before the steps through /proc/self/clear_refs) minus RSS "
                              "before; the ru_maxrss delta is a lower bound (Linux carries the parent's peak RSS "
                              "over exec into ru_maxrss)"})
    else:
        res.update({"peak_rss_mb": maxrss_after, "step_peak_rss_mb": maxrss_after - maxrss_before,
                    "method": "ru_maxrss before/after: a lower bound (Linux carries the parent's peak RSS over "
                              "exec into ru_maxrss, and imports may have peaked higher)"})
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        res.update({"cuda_before_mb": cuda_before, "cuda_peak_mb": peak, "cuda_step_peak_mb": peak - cuda_before})
    print(json.dumps(res))
    return 0
