"""``rnnlab analyze gradient-flow``: ||dL/dh_t|| for every step t, i.e. vanishing/exploding gradients per cell
(from-scratch cells on random input), or through the recurrent encoder of a trained checkpoint.

Usage: ``rnnlab analyze gradient-flow --cell rnn lstm gru [--forget-bias 3] --out reports/gradient-flow`` or
``rnnlab analyze gradient-flow --ckpt runs/X/checkpoints/best.ckpt [--layer 0] [--loss task|last]``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.commands.analyze import checkpoints, common
from pipelines.commands.analyze.common import fmt, positive, pyplot, usage_error
from pipelines.commands.analyze.report import Report


def add_parser(sub) -> None:
    """The ``gradient-flow`` subcommand and its options."""
    p = sub.add_parser("gradient-flow", help="||dL/dh_t|| over time steps, per cell or for a checkpoint")
    common.add_source_options(
        p,
        ckpt_help="slot-filling or CTC checkpoint: its encoder on the --batch longest validation sequences of "
        "its run's data (random input of --length steps, with random targets, when that data cannot be read)",
        cells=common.SYNTHETIC_CELLS,
        cell_help="from-scratch cells to compare (default: rnn lstm gru)",
    )
    p.add_argument(
        "--length", type=int, default=100, help="time steps (for a checkpoint: of the random fallback input)"
    )
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--input-size", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--forget-bias",
        type=float,
        default=0.0,
        help="added to the LSTM forget-gate / GRU update-gate bias (default 0: torch's init)",
    )
    p.add_argument("--layer", type=int, default=0, help="checkpoint encoder layer to probe")
    p.add_argument(
        "--loss",
        choices=("task", "last"),
        default="task",
        help="checkpoint loss: its training loss, or a readout of the last valid step",
    )
    common.add_common_options(p, "gradient-flow")


def run(args) -> Report:
    """Gradient-norm curves per ``--cell`` (random input) or for ``--ckpt``, with a fitted decay factor per step."""
    from modules.analysis import geometric_rate, hidden_gradient_norms, make_analysis_cell

    positive("--length", args.length)
    positive("--batch", args.batch)
    positive("--hidden", args.hidden)
    positive("--input-size", args.input_size)
    settings = {"length": args.length, "batch": args.batch, "seed": args.seed}
    curves: dict[str, dict[str, list[float]]] = {}
    if args.ckpt:
        settings.update(ckpt=args.ckpt, layer=args.layer, loss=args.loss)
        report = Report("gradient-flow", args.out, settings)
        label, norms, lengths_note = _checkpoint_gradient_flow(args, report)
        curves[label] = norms
    else:
        settings.update(
            cells=" ".join(args.cell),
            hidden=args.hidden,
            input_size=args.input_size,
            forget_bias=args.forget_bias,
        )
        report = Report("gradient-flow", args.out, settings)
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch, args.length, args.input_size, generator=g, dtype=torch.float64)
        readout = torch.randn(args.hidden, generator=g, dtype=torch.float64)
        readout = readout / readout.norm()
        for name in args.cell:
            torch.manual_seed(args.seed)
            cell = make_analysis_cell(
                name, input_size=args.input_size, hidden_size=args.hidden, forget_bias=args.forget_bias
            ).double()
            norms = hidden_gradient_norms(cell, x, readout)
            curves[common.CELL_LABELS[name]] = {k: v.tolist() for k, v in norms.items()}
        lengths_note = (
            f"Input: the same {args.batch} random N(0, 1) sequences of {args.length} steps "
            f"({args.input_size} features) for every cell, float64, torch's default initialisation "
            f"(uniform +-1/sqrt(H), the same seed for each cell)"
            + (f", forget/update-gate bias +{args.forget_bias}" if args.forget_bias else "")
            + ". Loss: a fixed random unit readout of the last step's output, "
            "L = sum_b r . out_{T-1,b}, so ||dL/dh_{T-1}|| = 1 and the curve is the gradient "
            "carried back over T-1-t steps."
        )

    summary: dict[str, dict] = {}
    rows = [
        "| cell | state | norm at t=0 | norm at t=T-1 | ratio t=0 / t=T-1 | fitted factor per step |",
        "|---|---|---|---|---|---|",
    ]
    for label, norms in curves.items():
        summary[label] = {}
        for state, values in norms.items():
            v = torch.tensor(values, dtype=torch.float64)
            valid = v[torch.isfinite(v)]
            first, last = float(v[0]), float(v[-1])
            ratio = first / last if last > 0 else float("nan")
            rate = geometric_rate(valid) if valid.numel() else float("nan")
            summary[label][state] = {
                "norm_first": first,
                "norm_last": last,
                "ratio_first_to_last": ratio,
                "factor_per_step": rate,
            }
            rows.append(
                f"| {label} | {state} | {fmt(first)} | {fmt(last)} | {fmt(ratio)} | {fmt(rate, 4)} |"
            )
    report.results.update(summary=summary, norms=curves, input=lengths_note)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = plt.get_cmap("tab10")
    for i, (label, norms) in enumerate(curves.items()):
        for state, values in norms.items():
            v = torch.tensor(values, dtype=torch.float64)
            v = torch.where(v > 0, v, torch.tensor(float("nan"), dtype=torch.float64))
            style = "-" if state in ("h", "y") else "--"
            ax.plot(
                range(len(values)), v.numpy(), style, color=colors(i % 10), label=f"{label}: dL/d{state}_t"
            )
    ax.set_yscale("log")
    aligned = bool(args.ckpt) and args.loss == "last"
    ax.set_xlabel("time step t" + (" (sequences aligned at their last step)" if aligned else ""))
    ax.set_ylabel("||dL/dh_t|| (mean over the batch)")
    ax.set_title(
        "Gradient flow through time"
        + (
            f" ({Path(args.ckpt).name}, layer {args.layer})"
            if args.ckpt
            else f" (loss on step T-1 = {args.length - 1})"
        ),
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    report.figure("gradient-flow", fig)

    report.lines += [lengths_note, "", *rows, ""]
    if not args.ckpt:
        report.lines += [
            "A factor per step below 1 means the gradient vanishes geometrically with distance in "
            "time (the ratio is about factor^(T-1)); above 1 it explodes. For LSTM, `c` is the "
            "memory cell, whose path through the forget gate is the additive 'carousel'."
        ]
    return report


def _checkpoint_gradient_flow(args, report: Report) -> tuple[str, dict[str, list[float]], str]:
    from modules.analysis import probe_encoder

    model = checkpoints.load_checkpoint(args.ckpt)
    kind = checkpoints.need_task_loss(model, args.ckpt)
    encoder = checkpoints.find_encoder(model, args.ckpt)
    if not 0 <= args.layer < encoder.num_layers:
        usage_error(
            f"--layer must be in [0, {encoder.num_layers - 1}] for {args.ckpt}, found {args.layer}"
        )
    batch, source = checkpoints.checkpoint_batch(model, kind, args.ckpt, args.batch, args.length, args.seed)
    captured: dict[str, torch.Tensor] = {}

    def grab_lengths(_mod, inputs, kwargs):
        lengths = inputs[1] if len(inputs) > 1 else kwargs["lengths"]
        captured.setdefault("lengths", lengths.detach().clone())

    def grab_output(_mod, _inputs, output):
        captured.setdefault("out", output[0])
        captured.setdefault("out_lengths", output[1])

    handles = [
        encoder.register_forward_pre_hook(grab_lengths, with_kwargs=True),
        encoder.register_forward_hook(grab_output),
    ]
    try:
        with torch.enable_grad(), probe_encoder(encoder, args.layer, 0) as rec:
            if args.loss == "task":
                loss = checkpoints.task_loss(model, kind, batch)
                loss_note = (
                    "the checkpoint's training loss (tag + intent cross-entropy)"
                    if kind == "slots"
                    else "the checkpoint's CTC loss"
                )
            else:
                checkpoints.forward(model, kind, batch)
                out, out_len = captured["out"], captured["out_lengths"].to(captured["out"].device)
                g = torch.Generator().manual_seed(args.seed)
                r = torch.randn(out.size(-1), generator=g).to(out)
                r = r / r.norm()
                last = out[torch.arange(out.size(0)), out_len - 1]
                loss = (last * r).sum()
                loss_note = (
                    "a fixed random unit readout of the encoder's top output at each sequence's last "
                    "valid step"
                )
            per_example = rec.gradient_norms(loss)
    finally:
        for h in handles:
            h.remove()
    lengths = captured["lengths"].cpu()
    for j in range(args.layer):
        if encoder.num_layers - 1 - encoder.pyramid_layers <= j < encoder.num_layers - 1:
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
    norms: dict[str, list[float]] = {}
    for state, v in per_example.items():
        v = v.cpu().double()[:, : int(lengths.max())]
        steps = v.size(1)
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        if args.loss == "last":
            # Align the sequences at their last valid step (the loss), so step t is T-1-t steps before it.
            from modules.sequence import reverse_padded

            v = reverse_padded(v.unsqueeze(-1), lengths).squeeze(-1).flip(1)
            mask = mask.flip(1)
        count = mask.sum(0).clamp(min=1)
        mean = (v * mask).sum(0) / count
        mean[mask.sum(0) == 0] = float("nan")
        norms[state] = mean.tolist()
    note = (
        f"Checkpoint {args.ckpt} ({type(model).__name__}, {encoder.cell} encoder, "
        f"{'bi' if encoder.bidirectional else 'uni'}directional, {encoder.num_layers} layer(s), hidden "
        f"{encoder.hidden_size}). Input: {source}. Loss: {loss_note}, in eval mode. dL/dh_t is the total "
        f"derivative for the hidden state of layer {args.layer}, forward direction, recomputed with the "
        f"from-scratch cell loaded with the trained weights; the curve is its norm averaged over the "
        + (
            "sequences still running at step t"
            if args.loss == "task"
            else "sequences aligned at their last valid step (step t is T-1-t steps before each one's end)"
        )
        + f" (lengths {int(lengths.min())}-{int(lengths.max())} steps)."
        + (
            " The task loss is spread over every step, so the curve is not a decay from one point; "
            "`--loss last` shows the gradient carried back from the last step."
            if args.loss == "task"
            else ""
        )
    )
    report.results["input_source"] = source
    return f"{Path(args.ckpt).parent.parent.name or 'checkpoint'} layer {args.layer}", norms, note
