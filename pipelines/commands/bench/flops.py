"""``rnnlab bench`` section ``flops``: the encoder's achieved FLOP rate in training vs a dense ``torch.mm``.

The encoder's FLOPs are counted analytically (:func:`encoder_training_flops`) and divided by the measured time of
its forward + backward pass over the training batches' features; a dense matmul on the same device is the ceiling.
"""

from __future__ import annotations

import statistics
import time

import torch

from pipelines.commands.bench.common import BF16_SKIPPED, PRECISIONS, measured, print_notes, sync, table
from pipelines.commands.bench.models import autocast, build_model, model_name

TITLE = "2. encoder FLOP rate vs dense matmul"
GATES = {"lstm": 4, "gru": 3, "elman": 1}


def encoder_training_flops(encoder, frame_lengths: torch.Tensor, padded_frames: int) -> tuple[float, float]:
    """``(valid, padded)`` FLOPs of one training step (forward + backward) of a fused RecurrentEncoder.

    Per layer, direction and time step: ``2 * G * H * (I + H)`` for the forward matmuls (G gates: 4 LSTM, 3 GRU,
    1 Elman) and twice that for the backward pass, i.e. ``2 * G * H * (I + H) * 3``. ``valid`` counts each
    utterance's own frames, ``padded`` the batch's ``B * T`` (what the ``reverse`` kernels execute: both
    directions run over the padded length). Biases, nonlinearities and the projection are left out.
    """
    gates = GATES[encoder.cell]
    lengths = frame_lengths.detach().cpu().long()
    steps = int(padded_frames)
    batch = int(lengths.numel())
    valid = padded = 0.0
    for index, layer in enumerate(encoder.layers):
        for rnn in layer:
            per_step = 2 * gates * rnn.hidden_size * (rnn.input_size + rnn.hidden_size) * 3
            valid += per_step * float(lengths.sum())
            padded += per_step * batch * steps
        if index < encoder.num_layers - 1 and encoder._halves_after(index):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            steps = (steps + 1) // 2
    return valid, padded


def matmul_rate(device: torch.device, *, n: int = 2048, dtype: torch.dtype = torch.float32, iters: int = 5) -> dict:
    """Measured FLOP/s of a dense ``n x n`` ``torch.mm`` (median of ``iters`` timings after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    torch.mm(a, b)
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": sec, "flops": 2.0 * n ** 3,
            "flop_per_s": 2.0 * n ** 3 / sec}


def run(ctx) -> dict:
    """Encoder fwd+bwd FLOP rate (analytic FLOPs / measured time) vs a dense matmul on the same device."""
    a = ctx.args
    batches = ctx.train_batches()[: a.flops_batches]
    model = build_model(a.model_size).to(ctx.device)
    frontend, encoder = model.model.frontend, model.model.encoder
    feats = []
    valid = padded = 0.0
    with torch.no_grad():
        frontend.eval()
        for b in batches:
            x, n = frontend(b["waveforms"].to(ctx.device), b["lengths"].to(ctx.device))
            feats.append((x, n))
            v, p = encoder_training_flops(encoder, n, x.size(1))
            valid, padded = valid + v, padded + p
    encoder.train()
    out = {"model": {"size": a.model_size, "name": model_name(model)}, "batches": len(batches),
           "flops_per_pass": {"valid_frames": valid, "padded_frames": padded},
           "flop_formula": "per layer, direction and step: 2 * gates * H * (I + H) * 3 (forward 1x, backward 2x)",
           "frames": "valid: each utterance's own frames; padded: B x T per batch (executed by the reverse "
                     "kernels). The encoder's input needs no gradient, so the first layer's backward is a "
                     "little cheaper than counted.",
           "precision": {}}
    for precision in PRECISIONS:
        if precision not in ctx.precisions:
            out["precision"][precision] = {"skipped": BF16_SKIPPED}
            continue
        out["precision"][precision] = _rate(ctx, model, feats, precision, valid, padded)
    return out


def _rate(ctx, model, feats: list, precision: str, valid: float, padded: float) -> dict:
    a = ctx.args
    frontend, encoder = model.model.frontend, model.model.encoder

    def run_encoder(feats=feats):
        for x, n in feats:
            encoder.zero_grad(set_to_none=True)
            with autocast(ctx.device, precision):
                y, _ = encoder(x, n)
            y.float().sum().backward()
        sync(ctx.device)

    run_encoder(feats=feats[:1])  # warm-up
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        run_encoder()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    mm = matmul_rate(ctx.device, n=a.matmul_size, dtype=dtype, iters=3 if a.quick else 5)
    res = {"encoder_seconds": times, "encoder_median_s": sec,
           "achieved_flop_per_s_valid": valid / sec, "achieved_flop_per_s_padded": padded / sec, "matmul": mm}
    res["fraction_of_matmul_valid"] = res["achieved_flop_per_s_valid"] / mm["flop_per_s"]
    res["fraction_of_matmul_padded"] = res["achieved_flop_per_s_padded"] / mm["flop_per_s"]
    train = ctx.results.get("train", {}).get("precision", {}).get(precision, {})
    if "bare" in train and ctx.results["train"]["model"]["size"] == a.model_size:
        # Encoder FLOPs of all the train section's batches over its bare loop's median time.
        all_valid = sum(encoder_training_flops(
            encoder, frontend.output_lengths(b["lengths"]),
            int(frontend.output_lengths(torch.tensor([b["waveforms"].size(1)]))[0]))[0]
            for b in ctx.train_batches())
        step_s = train["bare"]["median_s"]
        rate = all_valid / step_s
        res["whole_step"] = {"bare_s": step_s, "flops_valid": all_valid, "flop_per_s_valid": rate,
                             "fraction_of_matmul_valid": rate / mm["flop_per_s"],
                             "encoder_share_of_step": rate / res["achieved_flop_per_s_valid"],
                             "note": "encoder FLOPs of the train section's batches / its bare loop median; "
                                     "encoder share = that rate / the encoder-only rate"}
    return res


def show(r: dict) -> None:
    """Prints the section's table."""
    print(f"encoder of {r['model']['name']}, fwd+bwd over the {r['batches']} training batches; "
          f"FLOPs {r['flop_formula']}")
    rows, notes = [], []
    for p, res in measured(r["precision"], notes):
        mm = res["matmul"]
        rows.append([f"{p} torch.mm {mm['n']}x{mm['n']} {mm['dtype']}", mm["seconds"], mm["flop_per_s"] / 1e9, 1.0, ""])
        rows.append([f"{p} encoder fwd+bwd, valid frames", res["encoder_median_s"],
                     res["achieved_flop_per_s_valid"] / 1e9, res["fraction_of_matmul_valid"], ""])
        rows.append([f"{p} encoder fwd+bwd, padded frames", res["encoder_median_s"],
                     res["achieved_flop_per_s_padded"] / 1e9, res["fraction_of_matmul_padded"], ""])
        if "whole_step" in res:
            w = res["whole_step"]
            rows.append([f"{p} whole bare training step, valid", w["bare_s"], w["flop_per_s_valid"] / 1e9,
                         w["fraction_of_matmul_valid"], w["encoder_share_of_step"]])
    print(table(["FLOP rate", "s", "GFLOP/s", "fraction of matmul", "encoder share of step"], rows))
    notes.append("valid = useful work (each utterance's own frames); padded = B x T frames the kernels execute")
    print_notes(notes)
