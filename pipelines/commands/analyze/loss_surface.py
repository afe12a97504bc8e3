"""``rnnlab analyze loss-surface``: the loss along random filter-normalised directions and the gradient direction
(1-D slices, a 2-D grid) around trained weights: small adding-problem models or a checkpoint; ``--clipping`` adds
the clipping comparison (:mod:`~pipelines.commands.analyze.clipping`).

Usage: ``rnnlab analyze loss-surface [--clipping] --out reports/loss-surface`` or
``rnnlab analyze loss-surface --ckpt runs/X/checkpoints/best.ckpt``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from pipelines.commands.analyze import checkpoints, clipping, common
from pipelines.commands.analyze.common import fmt, positive, pyplot, usage_error
from pipelines.commands.analyze.report import Report


def add_parser(sub) -> None:
    """The ``loss-surface`` subcommand and its options."""
    p = sub.add_parser("loss-surface", help="1-D/2-D loss slices (filter-normalised directions); --clipping")
    common.add_source_options(
        p,
        ckpt_help="slot-filling or CTC checkpoint: its training loss on the --batch longest validation sequences "
        "(random input when the run's data cannot be read)",
        cells=common.REGRESSOR_CELLS,
        cell_help="small models trained on the adding problem (default: rnn lstm gru)",
    )
    p.add_argument(
        "--length", type=int, default=50, help="adding-problem length (checkpoint: random fallback)"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps before slicing")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument(
        "--batch", type=int, default=None, help="evaluation batch (default 256; 8 for a checkpoint)"
    )
    p.add_argument("--budget", type=int, default=common.DEFAULT_BUDGET)
    p.add_argument("--points", type=int, default=41, help="points per 1-D slice")
    p.add_argument("--grid", type=int, default=21, help="points per axis of the 2-D slice")
    p.add_argument("--span", type=float, default=1.0, help="slices cover alpha in [-span, span]")
    p.add_argument(
        "--clipping",
        action="store_true",
        help="also train each --cell with and without gradient clipping and count loss spikes",
    )
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--clip-steps", type=int, default=400)
    p.add_argument("--clip-lr", type=float, default=0.3, help="learning rate of the clipping runs")
    p.add_argument("--clip-optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--clip-length", type=int, default=None, help="adding-problem length (default: --length)")
    common.add_common_options(p, "loss-surface")


def _slices(model, loss_fn, *, points: int, grid: int, span: float, seed: int) -> dict:
    """1-D slices along two random filter-normalised directions and the gradient direction; a 2-D grid."""
    from modules.analysis import (
        filter_normalized_direction,
        gradient_direction,
        loss_slice_1d,
        loss_slice_2d,
    )

    before = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(model, generator=g)
    d2 = filter_normalized_direction(model, generator=g)
    dg, grad_norm = gradient_direction(model, loss_fn)
    alphas = torch.linspace(-span, span, points, dtype=torch.float64)
    one_d = {
        name: loss_slice_1d(model, loss_fn, d, alphas).tolist()
        for name, d in (("random 1", d1), ("random 2", d2), ("-gradient", dg))
    }
    axis = torch.linspace(-span, span, grid, dtype=torch.float64)
    two_d = loss_slice_2d(model, loss_fn, d1, d2, axis, axis)
    restored = all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    if not restored:
        raise RuntimeError("the weights were not restored after the slice evaluation")
    with torch.no_grad():
        model.eval()
        at_origin = float(loss_fn())
    stats = {}
    mid = points // 2
    for name, values in one_d.items():
        v = torch.tensor(values, dtype=torch.float64)
        finite = torch.isfinite(v)
        vmin = float(v[finite].min()) if finite.any() else float("nan")
        step = float(alphas[1] - alphas[0]) if points > 1 else float("nan")
        curvature = (
            (values[mid + 1] + values[mid - 1] - 2 * values[mid]) / step**2
            if points >= 3 and points % 2 == 1
            else float("nan")
        )
        stats[name] = {
            "min": vmin,
            "alpha_at_min": float(alphas[int(torch.where(finite, v, math.inf).argmin())]),
            "at_minus_span": values[0],
            "at_plus_span": values[-1],
            "curvature_at_0": curvature,
        }
    return {
        "loss_at_origin": at_origin,
        "gradient_norm": grad_norm,
        "weights_restored": restored,
        "alphas": alphas.tolist(),
        "slices_1d": one_d,
        "grid_axis": axis.tolist(),
        "grid_2d": two_d.tolist(),
        "slice_stats": stats,
    }


def run(args) -> Report:
    """1-D and 2-D loss slices around the trained weights of each ``--cell`` model or of ``--ckpt``."""
    from modules.analysis import adding_problem, hidden_for_budget, regressor_parameters

    if args.batch is None:
        args.batch = 8 if args.ckpt else 256
    for name in (
        "--points",
        "--grid",
        "--span",
        "--steps",
        "--length",
        "--batch",
        "--clip-norm",
        "--clip-steps",
    ):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.points < 3 or args.grid < 2:
        usage_error(f"--points must be >= 3 and --grid >= 2, found {args.points} and {args.grid}")
    bad = [c for c in args.cell if c not in common.REGRESSOR_CELLS]
    if bad:
        usage_error(f"--cell must be among {list(common.REGRESSOR_CELLS)}, found {bad}")
    settings = {"points": args.points, "grid": args.grid, "span": args.span, "seed": args.seed}
    if args.ckpt:
        settings.update(ckpt=args.ckpt, batch=args.batch, length=args.length)
    else:
        settings.update(
            cells=" ".join(args.cell),
            length=args.length,
            steps=args.steps,
            lr=args.lr,
            batch=args.batch,
            budget=args.budget,
        )
    if args.clipping:
        settings.update(
            clipping=True,
            clip_norm=args.clip_norm,
            clip_steps=args.clip_steps,
            clip_lr=args.clip_lr,
            clip_optimizer=args.clip_optimizer,
            clip_length=args.clip_length or args.length,
        )
    report = Report("loss-surface", args.out, settings)
    results: dict[str, dict] = {}
    notes: list[str] = []

    if args.ckpt:
        model = checkpoints.load_checkpoint(args.ckpt)
        kind = checkpoints.need_task_loss(model, args.ckpt)
        batch, source = checkpoints.checkpoint_batch(model, kind, args.ckpt, args.batch, args.length, args.seed)
        label = Path(args.ckpt).parent.parent.name or "checkpoint"
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(
            f"[rnnlab] loss-surface: {label} ({n_params} parameters), "
            f"{3 * args.points + args.grid**2} evaluations",
            flush=True,
        )
        results[label] = _slices(
            model,
            lambda: checkpoints.task_loss(model, kind, batch),
            points=args.points,
            grid=args.grid,
            span=args.span,
            seed=args.seed,
        )
        results[label]["parameters"] = n_params
        notes.append(
            f"Model: {args.ckpt} ({type(model).__name__}, {n_params} parameters); loss: its training "
            f"loss in eval mode on {source}."
        )
    else:
        x_eval, y_eval, _ = adding_problem(
            args.batch, args.length, generator=torch.Generator().manual_seed(50_000 + args.length)
        )
        for cell in args.cell:
            hidden = hidden_for_budget(cell, args.budget, input_size=2)
            model, history = common.train_on_adding(
                cell,
                hidden=hidden,
                length=args.length,
                steps=args.steps,
                batch=64,
                lr=args.lr,
                seed=args.seed,
                data_seed=args.seed + 7,
            )

            def loss_fn(model=model):
                return torch.nn.functional.mse_loss(model(x_eval), y_eval)

            label = common.CELL_LABELS[cell]
            results[label] = _slices(
                model, loss_fn, points=args.points, grid=args.grid, span=args.span, seed=args.seed
            )
            results[label]["parameters"] = regressor_parameters(cell, input_size=2, hidden_size=hidden)
            results[label]["hidden"] = hidden
            print(
                f"[rnnlab] loss-surface {cell}: trained {args.steps} steps, loss at the trained point "
                f"{results[label]['loss_at_origin']:.4f}",
                flush=True,
            )
        notes.append(
            f"Models: one recurrent layer + linear readout (about {args.budget} parameters), trained "
            f"{args.steps} steps (Adam, lr {args.lr}, batch 64) on the adding problem with T = "
            f"{args.length}; loss: MSE on {args.batch} fixed held-out sequences."
        )

    plt = pyplot()
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, (label, res) in zip(axes[0], results.items(), strict=True):
        for name, values in res["slices_1d"].items():
            v = [x if x is not None and math.isfinite(x) else float("nan") for x in values]
            ax.plot(res["alphas"], v, label=name, ls="--" if name == "-gradient" else "-")
        ax.set_yscale("log")
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("alpha (filter-normalised step)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend(fontsize=7)
    report.figure("slice-1d", fig)

    for label, res in results.items():
        fig, ax = plt.subplots(figsize=(5, 4.2))
        z = torch.tensor(
            [
                [v if v is not None and math.isfinite(v) else float("nan") for v in row]
                for row in res["grid_2d"]
            ],
            dtype=torch.float64,
        )
        z = torch.log10(z.clamp(min=1e-12))
        axis = res["grid_axis"]
        cs = ax.contourf(axis, axis, z.T.numpy(), levels=20, cmap="viridis")
        ax.contour(axis, axis, z.T.numpy(), levels=20, colors="k", linewidths=0.3)
        fig.colorbar(cs, ax=ax, label="log10 loss")
        ax.plot([0], [0], "r*", ms=10)
        ax.set_xlabel("random direction 1")
        ax.set_ylabel("random direction 2")
        ax.set_title(f"{label}: loss around the trained weights", fontsize=9)
        report.figure(f"slice-2d-{_slug(label)}", fig)

    summary: dict[str, dict] = {}
    table = [
        "| model | loss at weights | gradient norm | direction | min on slice (at alpha) | "
        "loss at -span / +span | curvature at 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, res in results.items():
        summary[label] = {
            "loss_at_origin": res["loss_at_origin"],
            "gradient_norm": res["gradient_norm"],
            "weights_restored": res["weights_restored"],
            "directions": res["slice_stats"],
        }
        for name, s in res["slice_stats"].items():
            table.append(
                f"| {label} | {fmt(res['loss_at_origin'], 4)} | {fmt(res['gradient_norm'])} | {name} | "
                f"{fmt(s['min'], 4)} ({s['alpha_at_min']:+.2f}) | {fmt(s['at_minus_span'])} / "
                f"{fmt(s['at_plus_span'])} | {fmt(s['curvature_at_0'])} |"
            )
    report.results.update(summary=summary, slices=results)
    report.lines += [
        *notes,
        "",
        f"Directions (Li et al. 2018): Gaussian, then every filter (row of a weight matrix, i.e. one unit's "
        f"incoming weights; one embedding row) rescaled to the norm of the same filter of the weights; "
        f"biases get no perturbation. '-gradient' is the descent direction at the weights, filter-normalised "
        f"the same "
        f"way. alpha in [-{args.span}, {args.span}] ({args.points} points); the 2-D plot spans two random "
        f"directions ({args.grid} x {args.grid}). The weights are restored exactly after the evaluation "
        f"(checked with torch.equal on every parameter).",
        "",
        *table,
        "",
    ]

    if args.clipping:
        clipping.run(args, report)
    return report


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
