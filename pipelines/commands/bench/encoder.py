"""``rnnlab bench`` section ``encoder``: exact length handling (``reverse``, ``packed``) of RecurrentEncoder vs
torch's padded bidirectional ``nn.LSTM`` (:func:`bench_encoder`, usable on its own)."""

from __future__ import annotations

import torch

from pipelines.commands.bench.common import sync, table, time_calls

TITLE = "7. encoder length handling: exact modes vs padded nn.LSTM"


def bench_encoder(*, layers: int = 4, hidden: int = 320, input_size: int = 240, batch: int = 16,
                  max_frames: int = 300, iters: int = 3, warmup: int = 1, seed: int = 0,
                  device: torch.device | str = "cpu") -> dict:
    """Seconds per fwd+bwd batch of padded ``nn.LSTM`` vs RecurrentEncoder ``reverse`` and ``packed``.

    Runs on ``device`` (CPU or GPU).
    """
    from modules.encoders import RecurrentEncoder

    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(max_frames * 0.7), max_frames + 1, (batch,), generator=g)
    lengths[0] = max_frames
    x = torch.randn(batch, max_frames, input_size, generator=g).to(device)
    lengths = lengths.to(device)
    results = {}
    baseline = torch.nn.LSTM(input_size, hidden, num_layers=layers, bidirectional=True, batch_first=True).to(device)

    def timed(fn) -> float:
        def step():
            fn()
            sync(device)
        sync(device)
        return time_calls(step, warmup=warmup, iters=iters)

    def run_baseline():
        out, _ = baseline(x)
        out.sum().backward()

    results["nn.LSTM padded (inexact)"] = timed(run_baseline)
    for mode in ("reverse", "packed"):
        enc = RecurrentEncoder(input_size=input_size, hidden_size=hidden, num_layers=layers, cell="lstm",
                               bidirectional=True, length_handling=mode).to(device)

        def run_mode(enc=enc):
            out, _ = enc(x, lengths)
            out.sum().backward()

        results[f"RecurrentEncoder {mode} (exact)"] = timed(run_mode)
    base = results["nn.LSTM padded (inexact)"]
    return {"config": {"layers": layers, "hidden": hidden, "input_size": input_size, "batch": batch,
                       "max_frames": max_frames, "threads": torch.get_num_threads(), "device": str(device)},
            "seconds_per_batch": results,
            "utterances_per_s": {k: batch / v for k, v in results.items()},
            "ratio_vs_padded_nn_lstm": {k: base / v for k, v in results.items()}}


def run(ctx) -> dict:
    """:func:`bench_encoder` with the encoder options (``--layers``, ``--hidden``, ...) on the run's device."""
    a = ctx.args
    return bench_encoder(layers=a.layers, hidden=a.hidden, batch=a.batch, max_frames=a.max_frames, iters=a.iters,
                         input_size=a.encoder_input, device=ctx.device)


def show(res: dict) -> None:
    """Prints the section's table."""
    c = res["config"]
    where = "GPU" if c.get("device", "cpu").startswith("cuda") else "CPU"
    print(f"fwd+bwd on {where}, {c['layers']}x BiLSTM-{c['hidden']}, batch {c['batch']}, up to {c['max_frames']} "
          f"frames, {c['threads']} threads")
    print(table(["method", "s/batch", "utt/s", "vs padded nn.LSTM"],
                [[k, v, res["utterances_per_s"][k], res["ratio_vs_padded_nn_lstm"][k]]
                 for k, v in res["seconds_per_batch"].items()]))
