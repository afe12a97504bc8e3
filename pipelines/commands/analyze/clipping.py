"""``rnnlab analyze loss-surface --clipping``: the same adding-problem model trained with and without gradient-norm
clipping; loss spikes, divergence and gradient norms side by side (a section of the loss-surface report)."""

from __future__ import annotations

import math

from pipelines.commands.analyze.common import CELL_LABELS, fmt, pyplot, train_on_adding
from pipelines.commands.analyze.report import Report


def run(args, report: Report) -> None:
    """Trains each ``--cell`` with and without clipping; adds a plot, numbers and a Markdown section to ``report``."""
    from modules.analysis import count_spikes, hidden_for_budget

    length = args.clip_length or args.length
    runs: dict[str, dict[str, dict]] = {}
    for cell in args.cell:
        hidden = hidden_for_budget(cell, args.budget, input_size=2)
        runs[cell] = {}
        for clip in (None, args.clip_norm):
            _, history = train_on_adding(
                cell,
                hidden=hidden,
                length=length,
                steps=args.clip_steps,
                batch=64,
                lr=args.clip_lr,
                seed=args.seed,
                data_seed=args.seed + 11,
                clip_norm=clip,
                optimizer=args.clip_optimizer,
            )
            losses = history["loss"]
            spikes = count_spikes(losses)
            finite = [v for v in losses if math.isfinite(v)]
            tail = losses[-max(1, len(losses) // 10) :]
            key = "none" if clip is None else f"clip {clip:g}"
            runs[cell][key] = {
                "spikes": len(spikes),
                "spike_steps": spikes,
                "diverged": len(finite) < len(losses),
                "final_loss": sum(tail) / len(tail),
                "max_loss": max(finite) if finite else float("nan"),
                "max_grad_norm": max(
                    (g for g in history["grad_norm"] if math.isfinite(g)), default=float("nan")
                ),
                "steps_grad_norm_over_clip": sum(g > args.clip_norm for g in history["grad_norm"]),
                "loss": losses,
                "grad_norm": history["grad_norm"],
            }
            print(
                f"[rnnlab] clipping {cell:>4} {key:>8}: {len(spikes)} spike(s), final loss "
                f"{runs[cell][key]['final_loss']:.4f}, max grad norm {runs[cell][key]['max_grad_norm']:.3g}",
                flush=True,
            )

    plt = pyplot()
    fig, axes = plt.subplots(2, len(runs), figsize=(4.3 * len(runs), 6), squeeze=False, sharex=True)
    for col, (cell, by_clip) in enumerate(runs.items()):
        for key, r in by_clip.items():
            steps = list(range(len(r["loss"])))
            loss = [v if math.isfinite(v) else float("nan") for v in r["loss"]]
            (line,) = axes[0][col].plot(steps, loss, lw=0.8, label=f"{key}: {r['spikes']} spike(s)")
            if r["spike_steps"]:
                axes[0][col].plot(
                    r["spike_steps"],
                    [loss[s] if math.isfinite(loss[s]) else float("nan") for s in r["spike_steps"]],
                    "v",
                    color=line.get_color(),
                    ms=5,
                )
            gn = [v if math.isfinite(v) else float("nan") for v in r["grad_norm"]]
            axes[1][col].plot(steps, gn, lw=0.8, color=line.get_color(), label=key)
        axes[1][col].axhline(args.clip_norm, color="k", ls=":", lw=1)
        for row in (0, 1):
            axes[row][col].set_yscale("log")
            axes[row][col].grid(True, which="both", alpha=0.3)
        axes[0][col].set_title(f"{CELL_LABELS[cell]}, T = {length}", fontsize=9)
        axes[0][col].legend(fontsize=7)
        axes[1][col].set_xlabel("step")
    axes[0][0].set_ylabel("training MSE")
    axes[1][0].set_ylabel("gradient norm (before clipping)")
    report.figure("clipping", fig)

    summary = {
        cell: {
            key: {k: v for k, v in r.items() if k not in ("loss", "grad_norm", "spike_steps")}
            for key, r in by_clip.items()
        }
        for cell, by_clip in runs.items()
    }
    report.results["summary"]["clipping"] = summary
    report.results["clipping"] = runs
    table = [
        "| cell | clipping | loss spikes | diverged | final loss | max loss | max grad norm | "
        f"steps with grad norm > {args.clip_norm:g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell, by_clip in summary.items():
        for key, r in by_clip.items():
            table.append(
                f"| {CELL_LABELS[cell]} | {key} | {r['spikes']} | {'yes' if r['diverged'] else 'no'} | "
                f"{fmt(r['final_loss'], 4)} | {fmt(r['max_loss'])} | {fmt(r['max_grad_norm'])} | "
                f"{r['steps_grad_norm_over_clip']} |"
            )
    report.lines += [
        "## Gradient clipping",
        "",
        f"The same model (same initialisation, same data stream) trained {args.clip_steps} steps on the "
        f"adding "
        f"problem (T = {length}, batch 64, {args.clip_optimizer} lr {args.clip_lr}"
        + (", momentum 0.9" if args.clip_optimizer == "sgd" else "")
        + f") without clipping and with the global gradient norm clipped to {args.clip_norm:g}. A loss spike "
        "starts at a step whose loss is more than 3 x the median of the previous 20 steps (a non-finite loss "
        "counts); 'diverged' means the loss became NaN/inf (the maxima are then over the finite steps).",
        "",
        *table,
        "",
    ]
