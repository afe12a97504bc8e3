"""``rnnlab analyze long-range``: Elman vs LSTM vs GRU with an equal parameter budget on the adding problem at
several sequence lengths (test MSE against the chance baseline).

Usage: ``rnnlab analyze long-range [--lengths 20 50 100 200] [--seeds 0 1 2] --out reports/long-range``.
"""

from __future__ import annotations

import math
import time

import torch

from pipelines.commands.analyze import common
from pipelines.commands.analyze.common import positive, pyplot, usage_error
from pipelines.commands.analyze.report import Report


def add_parser(sub) -> None:
    """The ``long-range`` subcommand and its options."""
    p = sub.add_parser("long-range", help="Elman vs LSTM vs GRU on the adding problem at several lengths")
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 50, 100, 200])
    p.add_argument("--cells", nargs="+", choices=common.REGRESSOR_CELLS, default=list(common.REGRESSOR_CELLS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument(
        "--budget", type=int, default=common.DEFAULT_BUDGET, help="parameters per model (hidden sizes follow)"
    )
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--threshold", type=float, default=0.1, help="'learned' if test MSE < threshold x chance")
    common.add_common_options(p, "long-range")
    p.set_defaults(seed=None)


def run(args) -> Report:
    """Trains every ``--cells`` x ``--lengths`` x ``--seeds`` model on the adding problem and scores it."""
    from modules.analysis import (
        ADDING_CHANCE_MSE,
        adding_problem,
        constant_predictor_mse,
        hidden_for_budget,
        regressor_parameters,
    )

    if args.seed is not None:  # --seed N is short for --seeds N
        args.seeds = [args.seed]
    for name in ("--steps", "--batch", "--lr", "--budget", "--test-size", "--threshold"):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    if any(n < 2 for n in args.lengths):
        usage_error(f"--lengths must all be >= 2, found {args.lengths}")
    settings = {
        "task": "adding",
        "lengths": " ".join(map(str, args.lengths)),
        "cells": " ".join(args.cells),
        "seeds": " ".join(map(str, args.seeds)),
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "budget": args.budget,
        "test_size": args.test_size,
        "threshold": args.threshold,
    }
    report = Report("long-range", args.out, settings)
    sizes = {c: hidden_for_budget(c, args.budget, input_size=2) for c in args.cells}
    params = {c: regressor_parameters(c, input_size=2, hidden_size=h) for c, h in sizes.items()}

    chance: dict[int, dict[str, float]] = {}
    runs: list[dict] = []
    curves: dict[str, dict[int, list[float]]] = {c: {} for c in args.cells}
    t_start = time.perf_counter()
    for length in args.lengths:
        test_g = torch.Generator().manual_seed(10_000 + length)
        x_test, y_test, _ = adding_problem(args.test_size, length, generator=test_g)
        _, y_fit, _ = adding_problem(20_000, length, generator=torch.Generator().manual_seed(20_000 + length))
        chance[length] = {
            "analytic": ADDING_CHANCE_MSE,
            "empirical": constant_predictor_mse(y_fit, y_test),
            "empirical_large": constant_predictor_mse(y_fit, y_fit),
        }
        for cell in args.cells:
            for seed in args.seeds:
                t0 = time.perf_counter()
                model, history = common.train_on_adding(
                    cell,
                    hidden=sizes[cell],
                    length=length,
                    steps=args.steps,
                    batch=args.batch,
                    lr=args.lr,
                    seed=seed,
                    data_seed=1_000 * seed + length,
                )
                mse = _mse(model, x_test, y_test)
                tail = history["loss"][-max(1, args.steps // 10) :]
                run = {
                    "cell": cell,
                    "length": length,
                    "seed": seed,
                    "hidden": sizes[cell],
                    "params": params[cell],
                    "test_mse": mse,
                    "train_mse_last": sum(tail) / len(tail),
                    "ratio_to_chance": mse / ADDING_CHANCE_MSE,
                    "learned": bool(mse < args.threshold * ADDING_CHANCE_MSE),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                runs.append(run)
                curves[cell].setdefault(length, history["loss"])
                print(
                    f"[rnnlab] long-range {cell:>4} T={length:<4} seed {seed}: test MSE {mse:.4f} "
                    f"({run['ratio_to_chance']:.3f} x chance) in {run['seconds']} s",
                    flush=True,
                )

    summary: dict[str, dict] = {}
    for cell in args.cells:
        summary[cell] = {}
        for length in args.lengths:
            sel = [r for r in runs if r["cell"] == cell and r["length"] == length]
            mses = [r["test_mse"] for r in sel]
            summary[cell][str(length)] = {
                "test_mse": sum(mses) / len(mses),
                "test_mse_min": min(mses),
                "test_mse_max": max(mses),
                "ratio_to_chance": sum(mses) / len(mses) / ADDING_CHANCE_MSE,
                "learned": sum(r["learned"] for r in sel),
                "seeds": len(sel),
            }
    report.results.update(
        summary=summary,
        runs=runs,
        chance_mse=chance,
        hidden_sizes=sizes,
        parameters=params,
        seconds=round(time.perf_counter() - t_start, 1),
    )

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cell in args.cells:
        mean = [summary[cell][str(n)]["test_mse"] for n in args.lengths]
        lo = [m - summary[cell][str(n)]["test_mse_min"] for m, n in zip(mean, args.lengths, strict=True)]
        hi = [summary[cell][str(n)]["test_mse_max"] - m for m, n in zip(mean, args.lengths, strict=True)]
        ax.errorbar(
            args.lengths,
            mean,
            yerr=[lo, hi],
            marker="o",
            capsize=3,
            label=f"{common.CELL_LABELS[cell]} (H={sizes[cell]}, {params[cell]} params)",
        )
    ax.axhline(ADDING_CHANCE_MSE, color="k", ls="--", lw=1, label="chance: predict the mean (1/6)")
    ax.axhline(
        args.threshold * ADDING_CHANCE_MSE,
        color="gray",
        ls=":",
        lw=1,
        label=f"'learned' threshold ({args.threshold} x chance)",
    )
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xticks(args.lengths)
    ax.set_xticklabels([str(n) for n in args.lengths])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(f"test MSE ({args.test_size} sequences)")
    ax.set_title(
        f"Adding problem after {args.steps} steps (batch {args.batch}, Adam lr {args.lr})", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    report.figure("long-range", fig)

    fig, axes = plt.subplots(1, len(args.lengths), figsize=(3.2 * len(args.lengths), 3.2), squeeze=False)
    for ax, length in zip(axes[0], args.lengths, strict=True):
        for cell in args.cells:
            ax.plot(_smooth(curves[cell][length]), label=common.CELL_LABELS[cell], lw=1)
        ax.axhline(ADDING_CHANCE_MSE, color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"T = {length} (seed {args.seeds[0]})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("training MSE (smoothed)")
    axes[0][0].legend(fontsize=7)
    report.figure("long-range-training", fig)

    table = [
        "| cell | hidden | params | " + " | ".join(f"T={n}" for n in args.lengths) + " |",
        "|---|---|---|" + "---|" * len(args.lengths),
    ]
    for cell in args.cells:
        cells_md = []
        for n in args.lengths:
            s = summary[cell][str(n)]
            mark = (
                f"learned {s['learned']}/{s['seeds']}"
                if s["seeds"] > 1
                else ("learned" if s["learned"] else "not")
            )
            cells_md.append(f"{s['test_mse']:.4f} ({s['ratio_to_chance']:.3f}x, {mark})")
        table.append(
            f"| {common.CELL_LABELS[cell]} | {sizes[cell]} | {params[cell]} | " + " | ".join(cells_md) + " |"
        )
    chance_line = ", ".join(
        f"T={n}: {chance[n]['empirical']:.4f} (variance of the 20,000: {chance[n]['empirical_large']:.4f})"
        for n in args.lengths
    )
    report.lines += [
        "Task: the adding problem. Each step carries a value u ~ U(0, 1) and a marker; exactly two steps are "
        "marked, one in the first half and one in the second, and the target is the sum of the two marked "
        "values, read from the last step's output. One recurrent layer (fused nn.RNN tanh, nn.LSTM, nn.GRU) "
        f"and a linear readout, hidden sizes chosen for about {args.budget} parameters each; MSE loss, Adam, "
        f"a fresh batch of {args.batch} every step, {args.steps} steps, the same data stream for every cell.",
        "",
        f"Chance baseline: predicting the mean (1) gives MSE = Var(u1 + u2) = 2/12 = 1/6 = "
        f"{ADDING_CHANCE_MSE:.4f} analytically; empirically (the mean of 20,000 generated targets scored on "
        f"the {args.test_size} test sequences) {chance_line}.",
        "",
        f"Test MSE on {args.test_size} held-out sequences per length (mean over seeds {settings['seeds']}), "
        f"its ratio to chance, and whether it is below {args.threshold} x chance "
        f"(= {args.threshold * ADDING_CHANCE_MSE:.4f}, 'learned'):",
        "",
        *table,
        "",
        f"Total time: {report.results['seconds']} s.",
    ]
    return report


def _smooth(values: list[float], window: int = 25) -> list[float]:
    """Running mean over the last ``window`` values (for the training-curve plot)."""
    out, acc = [], 0.0
    finite = [v if math.isfinite(v) else float("nan") for v in values]
    for i, v in enumerate(finite):
        acc += v
        if i >= window:
            acc -= finite[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _mse(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test MSE of the regressor in eval mode."""
    model.eval()
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())
