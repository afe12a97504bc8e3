"""``rnnlab analyze gates``: input/forget/output gates and cell state of a trained LSTM layer on one sentence
(slot filling) or one utterance (speech), recomputed with the from-scratch cell and checked against the fused layer.

Usage: ``rnnlab analyze gates --ckpt runs/X/checkpoints/best.ckpt --input "i want to fly to boston" [--layer 0]``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.commands.analyze.checkpoints import find_encoder, load_checkpoint
from pipelines.commands.analyze.common import add_common_options, positive, pyplot, usage_error
from pipelines.commands.analyze.report import Report


def add_parser(sub) -> None:
    """The ``gates`` subcommand and its options."""
    p = sub.add_parser("gates", help="LSTM gate activations and cell state on a sentence or an utterance")
    p.add_argument(
        "--ckpt", required=True, help="slot-filling or speech checkpoint with a fused LSTM encoder"
    )
    p.add_argument("--input", required=True, help="a sentence (slot filling) or an audio file (speech)")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--direction", choices=("forward", "backward"), default="forward")
    p.add_argument("--units", type=int, default=0, help="units shown in the heat maps (default: all)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="largest accepted |from-scratch - fused| output difference",
    )
    add_common_options(p, "gates")


def run(args) -> Report:
    """Gate maps and histograms of ``--layer``/``--direction`` on ``--input``; the from-scratch cell must match."""
    from modules.analysis import gate_saturation, lstm_gates_from_fused

    positive("--tolerance", args.tolerance)
    model = load_checkpoint(args.ckpt)
    encoder = find_encoder(model, args.ckpt)
    if encoder.cell != "lstm":
        usage_error(
            f"{args.ckpt}: gates needs an LSTM encoder, this checkpoint has a {encoder.cell} encoder"
        )
    if encoder.implementation != "fused":
        usage_error(
            f"{args.ckpt}: gates reads fused nn.LSTM weights; this encoder uses the reference cells"
        )
    if not 0 <= args.layer < encoder.num_layers:
        usage_error(
            f"--layer must be in [0, {encoder.num_layers - 1}] for {args.ckpt}, found {args.layer}"
        )
    direction = 1 if args.direction == "backward" else 0
    if direction >= encoder.num_directions:
        usage_error(f"{args.ckpt}: the encoder is unidirectional, there is no backward direction")
    fused = encoder.layers[args.layer][direction]

    if hasattr(model, "tag_sentences"):
        text = args.input
        path = Path(args.input)
        if path.is_file():
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                usage_error(f"{args.input}: no sentence in the file")
            text = lines[0]
        if not text.strip():
            usage_error("--input is empty: give a sentence")
        outputs: list = []
        x, out = _capture_layer(encoder, fused, lambda: outputs.extend(model.tag_sentences([text])))
        pred = outputs[0]
        labels = [f"{w}/{t}" if t != "O" else w for w, t in zip(pred["words"], pred["tags"], strict=True)]
        described = f"sentence {text!r} (predicted intent {pred['intent']})"
        time_label = "word (predicted slot tag)"
    elif hasattr(model, "transcribe_waveforms"):
        from data.audio import AudioRef, load_audio
        from data.errors import DataError

        path = Path(args.input)
        if not path.is_file():
            usage_error(f"input audio file not found: {args.input}")
        try:
            wav = load_audio(AudioRef(path=str(path)), model.sample_rate)
        except DataError as e:
            usage_error(str(e))
        outputs = []
        x, out = _capture_layer(encoder, fused, lambda: outputs.extend(model.transcribe_waveforms([wav])))
        labels = None
        described = (
            f"utterance {path.name} ({wav.numel() / model.sample_rate:.2f} s; greedy transcript "
            f"{outputs[0]!r})"
        )
        time_label = "encoder frame"
    else:
        usage_error(
            f"{args.ckpt}: gates supports slot-filling and speech checkpoints, found {type(model).__name__}"
        )

    fused_out = out[0].detach()
    ref_out, gates = lstm_gates_from_fused(fused, x.detach(), dtype=torch.float64)
    diff = float((ref_out - fused_out.double()).abs().max())
    if not diff <= args.tolerance:
        usage_error(
            f"the from-scratch LSTMCell does not reproduce the fused layer: max |difference| "
            f"{diff:.3g} > {args.tolerance:g}"
        )
    names = {
        "input_gate": "input gate i_t",
        "forget_gate": "forget gate f_t",
        "output_gate": "output gate o_t",
        "cell": "cell state c_t",
    }
    maps = {k: gates[k][0].float() for k in names}
    if direction == 1:
        maps = {k: v.flip(0) for k, v in maps.items()}
    steps, units = maps["input_gate"].shape
    shown = min(units, args.units) if args.units else units
    fractions = {k: gate_saturation(maps[k]) for k in ("input_gate", "forget_gate", "output_gate")}
    cell_abs = maps["cell"].abs()
    cell_stats = {
        "mean_abs": float(cell_abs.mean()),
        "max_abs": float(cell_abs.max()),
        "fraction_abs_over_1": float((cell_abs > 1).float().mean()),
    }
    settings = {"ckpt": args.ckpt, "input": args.input, "layer": args.layer, "direction": args.direction}
    report = Report("gates", args.out, settings)
    report.results.update(
        summary={
            "gates": fractions,
            "cell_state": cell_stats,
            "max_abs_difference": diff,
            "steps": steps,
            "units": units,
        },
        input=described,
        labels=labels,
    )

    plt = pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(max(7.0, min(18.0, 0.35 * steps + 2)), 11), sharex=True)
    for ax, (key, title) in zip(axes, names.items(), strict=True):
        m = maps[key][:, :shown].T.numpy()
        if key == "cell":
            # Colour scale up to the 99th percentile of |c|: a few large cells would wash out the rest.
            lim = max(1e-6, float(torch.quantile(maps[key].abs().flatten().double(), 0.99)))
            im = ax.imshow(
                m, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest"
            )
            title += (
                f"  (colour scale clipped at the 99th percentile of |c|, {lim:.2f}; "
                f"max {cell_stats['max_abs']:.2f})"
            )
        else:
            im = ax.imshow(
                m, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
            )
            f = fractions[key]
            title += f"  (open >0.9: {f['open']:.1%}, closed <0.1: {f['closed']:.1%})"
        fig.colorbar(im, ax=ax, pad=0.01)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("unit")
    if labels is not None and len(labels) == steps:
        axes[-1].set_xticks(range(steps))
        axes[-1].set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    axes[-1].set_xlabel(time_label)
    fig.suptitle(
        f"LSTM layer {args.layer} ({args.direction}) of {Path(args.ckpt).name}: {shown} of {units} units",
        fontsize=10,
    )
    report.figure("gates", fig)

    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, key in zip(axes, ("input_gate", "forget_gate", "output_gate"), strict=True):
        ax.hist(maps[key].flatten().numpy(), bins=50, range=(0, 1), color="tab:blue")
        ax.axvline(0.1, color="k", ls=":", lw=1)
        ax.axvline(0.9, color="k", ls=":", lw=1)
        ax.set_title(names[key], fontsize=9)
    report.figure("gate-histograms", fig)

    table = ["| gate | near open (> 0.9) | near closed (< 0.1) | mean |", "|---|---|---|---|"]
    for key, f in fractions.items():
        table.append(f"| {names[key]} | {f['open']:.1%} | {f['closed']:.1%} | {f['mean']:.3f} |")
    report.lines += [
        f"Checkpoint {args.ckpt} ({type(model).__name__}); input: {described}. Layer {args.layer}, "
        f"{args.direction} direction: {steps} steps x {units} units.",
        "",
        f"The gates come from the from-scratch `LSTMCell` (modules/recurrent.py, `return_gates=True`) loaded "
        f"with the trained fused nn.LSTM weights and run in float64 on the layer's actual input; its output "
        f"matches the fused layer's to a max |difference| of {diff:.2e} (required <= {args.tolerance:g}).",
        "",
        *table,
        "",
        f"Cell state: mean |c| {cell_stats['mean_abs']:.3f}, max |c| {cell_stats['max_abs']:.3f}, "
        f"{cell_stats['fraction_abs_over_1']:.1%} of values with |c| > 1 (beyond tanh's range: memory "
        f"accumulated "
        f"over several steps).",
        "",
    ]
    return report


def _capture_layer(encoder, fused, call):
    """``(input, output)`` of the fused layer while ``call()`` runs the model.

    The encoder runs with ``reverse`` length handling meanwhile: ``packed`` would hand the layer a PackedSequence,
    and the from-scratch cell needs the padded tensor.
    """
    from modules.analysis import capture_module_io

    saved_handling = encoder.length_handling
    encoder.length_handling = "reverse"
    try:
        return capture_module_io(fused, call)
    finally:
        encoder.length_handling = saved_handling
