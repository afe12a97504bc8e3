"""``rnnlab analyze``: measurements of the textbook claims about recurrent networks.

Subcommands (each writes PNG plots, ``summary.md`` and ``results.json`` under ``--out``, default
``reports/<command>``, and logs them to W&B unless it is disabled):

    gradient-flow   ||dL/dh_t|| for every step t: vanishing/exploding gradients per cell, or in a checkpoint
    long-range      Elman vs LSTM vs GRU (equal parameter budget) on the adding problem at several lengths
    loss-surface    loss along random filter-normalised and gradient directions (1-D, 2-D); --clipping
                    compares training with and without gradient-norm clipping
    gates           input/forget/output gates and cell state of a trained LSTM layer on a sentence/utterance

Numerical work is in ``modules/analysis.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

PROG = "rnnlab analyze"
SYNTHETIC_CELLS = ("rnn", "lstm", "gru", "jordan")
REGRESSOR_CELLS = ("rnn", "lstm", "gru")
CELL_LABELS = {
    "rnn": "Elman (simple RNN)",
    "elman": "Elman (simple RNN)",
    "jordan": "Jordan",
    "lstm": "LSTM",
    "gru": "GRU",
}
# Parameter budget of the long-range models: an LSTM-32 with its readout (2 inputs, 1 output).
DEFAULT_BUDGET = 4 * 32 * (2 + 32 + 2) + 33


class UsageError(SystemExit):
    """Bad input: ``str(err)`` is one line starting ``rnnlab: error:``; the exit status is 2."""

    def __init__(self, message: str) -> None:
        super().__init__(f"rnnlab: error: {message}")
        self.code = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


# ------------------------------------------------------------------------------------------------------------
# reports: plots, summary.md, results.json, W&B


def _pyplot():
    from pipelines.plots import _pyplot as pyplot

    return pyplot()


def _finite(obj):
    """``obj`` with non-finite floats replaced by None (results.json stays strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits + 1}g}"


class Report:
    """Collects the plots, numbers and Markdown of one command and writes them out."""

    def __init__(self, command: str, out: Path, settings: dict) -> None:
        self.command = command
        self.out = out
        self.settings = settings
        self.images: dict[str, Path] = {}
        self.results: dict = {"command": command, "settings": settings}
        self.lines: list[str] = []
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create output directory {out}: {e.strerror}") from None

    def figure(self, name: str, fig) -> Path:
        path = self.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        _pyplot().close(fig)
        self.images[name] = path
        return path

    def write(self, wandb_mode: str) -> None:
        settings = " ".join(f"{k}={v}" for k, v in self.settings.items())
        md = [f"# rnnlab analyze {self.command}", "", f"Settings: `{settings}`", "", *self.lines, ""]
        md += ["Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in self.images.values()), ""]
        (self.out / "summary.md").write_text("\n".join(md))
        (self.out / "results.json").write_text(
            json.dumps(_finite(self.results), indent=2, allow_nan=False) + "\n"
        )
        _log_wandb(wandb_mode, self)
        print(
            f"[rnnlab] analyze {self.command}: wrote {self.out / 'summary.md'}, results.json and "
            f"{len(self.images)} plot(s) in {self.out}"
        )


def _scalars(obj, prefix: str = "") -> dict[str, float]:
    """Flattens the numbers of a results dict to ``a/b/c -> value`` (lists are left out)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_scalars(v, f"{prefix}{k}/"))
    elif isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    elif isinstance(obj, int | float) and math.isfinite(obj):
        out[prefix.rstrip("/")] = float(obj)
    return out


def _log_wandb(requested: str, report: Report) -> None:
    """Logs the plots and numbers to W&B (offline unless configured otherwise); never raises or waits long."""
    from pipelines.tracking import resolve_wandb_mode

    mode, reason = resolve_wandb_mode(requested)
    if mode == "disabled":
        return
    try:
        import wandb

        run = wandb.init(
            project="rnnlab",
            job_type="analyze",
            name=f"analyze-{report.command}",
            mode=mode,
            dir=str(report.out),
            config=report.settings,
            reinit="create_new",
            settings=wandb.Settings(init_timeout=30, silent=True),
        )
        run.log({f"analyze/{k}": wandb.Image(str(p)) for k, p in report.images.items()})
        run.summary.update(_scalars(report.results.get("summary", {})))
        run.finish()
        print(f"[rnnlab] W&B {mode} ({reason}): logged {len(report.images)} plot(s)")
    except Exception as e:  # noqa: BLE001 - tracking must never fail an analysis
        print(f"[rnnlab] warning: could not log to W&B: {type(e).__name__}: {e}", file=sys.stderr)


def _common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports") / command,
        help=f"output directory (default: reports/{command})",
    )
    p.add_argument(
        "--wandb",
        choices=("auto", "offline", "disabled"),
        default="offline",
        help="W&B mode (WANDB_MODE in the environment wins; default offline: files for a later "
        "`wandb sync`, no network)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise UsageError(f"{name} must be positive, found {value}")


# ------------------------------------------------------------------------------------------------------------
# checkpoints: loading, a batch, the task loss


def _load_checkpoint(path: str):
    from pipelines.base import load_module

    try:
        model = load_module(path)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    model.eval()
    return model


def _find_encoder(model, ckpt: str):
    from modules.encoders import RecurrentEncoder

    enc = next((m for m in model.modules() if isinstance(m, RecurrentEncoder)), None)
    if enc is None:
        raise UsageError(f"{ckpt}: {type(model).__name__} has no recurrent encoder")
    return enc


def _kind(model) -> str:
    """``slots`` or ``ctc`` for the checkpoints whose task loss is known here, else ``other``."""
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.slot_filling import SlotFillingModule

    if isinstance(model, SlotFillingModule):
        return "slots"
    if isinstance(model, CTCSpeechRecognizer):
        return "ctc"
    return "other"


def _run_config(ckpt: str) -> Path:
    p = Path(ckpt).resolve()
    for d in (p.parent, p.parent.parent):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    raise FileNotFoundError(f"no config.yaml next to {ckpt}")


def _validation_batch(model, ckpt: str, batch_size: int) -> tuple[dict, str]:
    """The ``batch_size`` longest validation sequences of the data named in the run's config.yaml."""
    import importlib

    import yaml

    cfg_path = _run_config(ckpt)
    data = (yaml.safe_load(cfg_path.read_text()) or {}).get("data") or {}
    module_name, _, cls_name = str(data.get("class_path", "")).rpartition(".")
    if not module_name:
        raise ValueError(f"{cfg_path}: no data.class_path")
    cls = getattr(importlib.import_module(module_name), cls_name)
    dm = cls(**(data.get("init_args") or {}))
    dm.vocab = model.hparams.vocab
    dm.setup("validate")
    loader = dm.val_dataloader()
    ds = loader.dataset
    n = len(ds)
    if n == 0:
        raise ValueError("the validation split is empty")
    # The longest sequences: gradient flow over the longest distances the data has.
    sizes = list(ds.lengths) if hasattr(ds, "lengths") else [len(ds[i]["word_ids"]) for i in range(n)]
    order = sorted(range(n), key=lambda i: (-sizes[i], i))[:batch_size]
    batch = loader.collate_fn([ds[i] for i in order])
    if batch is None:
        raise ValueError("the selected validation audio could not be decoded")
    split = (data.get("init_args") or {}).get("val_split", "validation")
    source = (data.get("init_args") or {}).get("data_dir") or (data.get("init_args") or {}).get("dataset")
    return batch, f"{source} [{split}], the longest of {n}"


def _random_batch(model, kind: str, batch_size: int, length: int, seed: int) -> dict:
    """Random input of the checkpoint's input type with random targets (all sequences ``length`` steps)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((batch_size,), length, dtype=torch.long)
    if kind == "slots":
        vocab = len(model.words)
        tokens = torch.randint(min(2, vocab - 1), vocab, (batch_size, length), generator=g)
        tags = torch.randint(0, len(model.tags), (batch_size, length), generator=g)
        intent = torch.randint(0, max(1, len(model.intents)), (batch_size,), generator=g)
        return {"tokens": tokens, "lengths": lengths, "tags": tags, "intent": intent}
    fe = model.model.frontend
    samples = (length * fe.stack_frames - 1) * fe.hop_length  # exactly ``length`` encoder frames
    waveforms = 0.1 * torch.randn(batch_size, samples, generator=g)
    n_tokens = max(1, length // 4)
    targets = torch.randint(1, len(model.tokenizer), (batch_size, n_tokens), generator=g)
    return {
        "waveforms": waveforms,
        "lengths": torch.full((batch_size,), samples, dtype=torch.long),
        "targets": targets,
        "target_lengths": torch.full((batch_size,), n_tokens, dtype=torch.long),
    }


def _checkpoint_batch(
    model, kind: str, ckpt: str, batch_size: int, length: int, seed: int
) -> tuple[dict, str]:
    """A validation batch when the run's data can be read, else random input (the description says which)."""
    try:
        batch, where = _validation_batch(model, ckpt, batch_size)
        return batch, f"validation batch of {len(batch['lengths'])} sequences from {where}"
    except Exception as e:  # noqa: BLE001 - any failure falls back to random input, and the report says why
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        batch = _random_batch(model, kind, batch_size, length, seed)
        return batch, (
            f"random input ({batch_size} sequences of {length} steps, random targets); "
            f"validation data unavailable: {reason}"
        )


def _forward(model, kind: str, batch: dict):
    if kind == "slots":
        return model(batch["tokens"], batch["lengths"])
    return model(batch["waveforms"], batch["lengths"])


def _task_loss(model, kind: str, batch: dict) -> torch.Tensor:
    """The training loss of a slot-filling (tags + intent cross-entropy) or CTC checkpoint on ``batch``."""
    import torch.nn.functional as F

    if kind == "slots":
        from data.slots import IGNORE

        tag_logits, intent_logits = model(batch["tokens"], batch["lengths"])
        loss = F.cross_entropy(tag_logits.flatten(0, 1), batch["tags"].flatten(), ignore_index=IGNORE)
        if (batch["intent"] != IGNORE).any():
            intent = F.cross_entropy(intent_logits, batch["intent"], ignore_index=IGNORE)
            loss = loss + model.hparams.intent_weight * intent
        return loss
    from modules.ctc import ctc_loss_checked, min_ctc_frames

    log_probs, out_lengths = model(batch["waveforms"], batch["lengths"])
    targets = [t[:n] for t, n in zip(batch["targets"], batch["target_lengths"], strict=True)]
    loss, _ = ctc_loss_checked(
        log_probs,
        out_lengths,
        batch["targets"],
        batch["target_lengths"],
        blank=model.tokenizer.blank,
        min_frames=min_ctc_frames(targets),
    )
    return loss


def _need_task_loss(model, ckpt: str) -> str:
    kind = _kind(model)
    if kind == "other":
        raise UsageError(
            f"{ckpt}: {type(model).__name__} checkpoints are not supported here "
            f"(slot-filling and CTC checkpoints are)"
        )
    return kind


# ------------------------------------------------------------------------------------------------------------
# gradient-flow


def _gradient_flow(args) -> Report:
    from modules.analysis import geometric_rate, hidden_gradient_norms, make_analysis_cell

    _positive("--length", args.length)
    _positive("--batch", args.batch)
    _positive("--hidden", args.hidden)
    _positive("--input-size", args.input_size)
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
            curves[CELL_LABELS[name]] = {k: v.tolist() for k, v in norms.items()}
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
                f"| {label} | {state} | {_fmt(first)} | {_fmt(last)} | {_fmt(ratio)} | {_fmt(rate, 4)} |"
            )
    report.results.update(summary=summary, norms=curves, input=lengths_note)

    plt = _pyplot()
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

    model = _load_checkpoint(args.ckpt)
    kind = _need_task_loss(model, args.ckpt)
    encoder = _find_encoder(model, args.ckpt)
    if not 0 <= args.layer < encoder.num_layers:
        raise UsageError(
            f"--layer must be in [0, {encoder.num_layers - 1}] for {args.ckpt}, found {args.layer}"
        )
    batch, source = _checkpoint_batch(model, kind, args.ckpt, args.batch, args.length, args.seed)
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
                loss = _task_loss(model, kind, batch)
                loss_note = (
                    "the checkpoint's training loss (tag + intent cross-entropy)"
                    if kind == "slots"
                    else "the checkpoint's CTC loss"
                )
            else:
                _forward(model, kind, batch)
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
            from modules.recurrent import reverse_padded

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


# ------------------------------------------------------------------------------------------------------------
# long-range


def _train_on_adding(
    cell: str,
    *,
    hidden: int,
    length: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    data_seed: int,
    clip_norm: float | None = None,
    optimizer: str = "adam",
):
    from modules.analysis import SequenceRegressor, adding_problem, train_regressor

    torch.manual_seed(seed)
    model = SequenceRegressor(cell, input_size=2, hidden_size=hidden)
    g = torch.Generator().manual_seed(data_seed)
    history = train_regressor(
        model,
        lambda _s: adding_problem(batch, length, generator=g)[:2],
        steps=steps,
        lr=lr,
        clip_norm=clip_norm,
        optimizer=optimizer,
    )
    return model, history


def _mse(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def _long_range(args) -> Report:
    from modules.analysis import (
        ADDING_CHANCE_MSE,
        adding_problem,
        constant_predictor_mse,
        hidden_for_budget,
        regressor_parameters,
    )

    for name in ("--steps", "--batch", "--lr", "--budget", "--test-size", "--threshold"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if any(n < 2 for n in args.lengths):
        raise UsageError(f"--lengths must all be >= 2, found {args.lengths}")
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
                model, history = _train_on_adding(
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

    plt = _pyplot()
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
            label=f"{CELL_LABELS[cell]} (H={sizes[cell]}, {params[cell]} params)",
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
            ax.plot(_smooth(curves[cell][length]), label=CELL_LABELS[cell], lw=1)
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
            f"| {CELL_LABELS[cell]} | {sizes[cell]} | {params[cell]} | " + " | ".join(cells_md) + " |"
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
    out, acc = [], 0.0
    finite = [v if math.isfinite(v) else float("nan") for v in values]
    for i, v in enumerate(finite):
        acc += v
        if i >= window:
            acc -= finite[i - window]
        out.append(acc / min(i + 1, window))
    return out


# ------------------------------------------------------------------------------------------------------------
# loss-surface


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


def _loss_surface(args) -> Report:
    from modules.analysis import adding_problem, count_spikes, hidden_for_budget, regressor_parameters

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
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.points < 3 or args.grid < 2:
        raise UsageError(f"--points must be >= 3 and --grid >= 2, found {args.points} and {args.grid}")
    bad = [c for c in args.cell if c not in REGRESSOR_CELLS]
    if bad:
        raise UsageError(f"--cell must be among {list(REGRESSOR_CELLS)}, found {bad}")
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
        model = _load_checkpoint(args.ckpt)
        kind = _need_task_loss(model, args.ckpt)
        batch, source = _checkpoint_batch(model, kind, args.ckpt, args.batch, args.length, args.seed)
        label = Path(args.ckpt).parent.parent.name or "checkpoint"
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(
            f"[rnnlab] loss-surface: {label} ({n_params} parameters), "
            f"{3 * args.points + args.grid**2} evaluations",
            flush=True,
        )
        results[label] = _slices(
            model,
            lambda: _task_loss(model, kind, batch),
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
            model, history = _train_on_adding(
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

            label = CELL_LABELS[cell]
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

    plt = _pyplot()
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
                f"| {label} | {_fmt(res['loss_at_origin'], 4)} | {_fmt(res['gradient_norm'])} | {name} | "
                f"{_fmt(s['min'], 4)} ({s['alpha_at_min']:+.2f}) | {_fmt(s['at_minus_span'])} / "
                f"{_fmt(s['at_plus_span'])} | {_fmt(s['curvature_at_0'])} |"
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
        _clipping(args, report, count_spikes, hidden_for_budget)
    return report


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _clipping(args, report: Report, count_spikes, hidden_for_budget) -> None:
    length = args.clip_length or args.length
    runs: dict[str, dict[str, dict]] = {}
    for cell in args.cell:
        hidden = hidden_for_budget(cell, args.budget, input_size=2)
        runs[cell] = {}
        for clip in (None, args.clip_norm):
            _, history = _train_on_adding(
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

    plt = _pyplot()
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
                f"{_fmt(r['final_loss'], 4)} | {_fmt(r['max_loss'])} | {_fmt(r['max_grad_norm'])} | "
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


# ------------------------------------------------------------------------------------------------------------
# gates


def _gates(args) -> Report:
    from modules.analysis import capture_module_io, gate_saturation, lstm_gates_from_fused

    _positive("--tolerance", args.tolerance)
    model = _load_checkpoint(args.ckpt)
    encoder = _find_encoder(model, args.ckpt)
    if encoder.cell != "lstm":
        raise UsageError(
            f"{args.ckpt}: gates needs an LSTM encoder, this checkpoint has a {encoder.cell} encoder"
        )
    if encoder.implementation != "fused":
        raise UsageError(
            f"{args.ckpt}: gates reads fused nn.LSTM weights; this encoder uses the reference cells"
        )
    if not 0 <= args.layer < encoder.num_layers:
        raise UsageError(
            f"--layer must be in [0, {encoder.num_layers - 1}] for {args.ckpt}, found {args.layer}"
        )
    direction = 1 if args.direction == "backward" else 0
    if direction >= encoder.num_directions:
        raise UsageError(f"{args.ckpt}: the encoder is unidirectional, there is no backward direction")
    fused = encoder.layers[args.layer][direction]

    if hasattr(model, "tag_sentences"):
        text = args.input
        path = Path(args.input)
        if path.is_file():
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                raise UsageError(f"{args.input}: no sentence in the file")
            text = lines[0]
        if not text.strip():
            raise UsageError("--input is empty: give a sentence")
        outputs: list = []
        saved_handling = encoder.length_handling
        encoder.length_handling = "reverse"
        try:
            x, out = capture_module_io(fused, lambda: outputs.extend(model.tag_sentences([text])))
        finally:
            encoder.length_handling = saved_handling
        pred = outputs[0]
        labels = [f"{w}/{t}" if t != "O" else w for w, t in zip(pred["words"], pred["tags"], strict=True)]
        described = f"sentence {text!r} (predicted intent {pred['intent']})"
        time_label = "word (predicted slot tag)"
    elif hasattr(model, "transcribe_waveforms"):
        from data.audio import AudioRef, load_audio
        from data.errors import DataError

        path = Path(args.input)
        if not path.is_file():
            raise UsageError(f"input audio file not found: {args.input}")
        try:
            wav = load_audio(AudioRef(path=str(path)), model.hparams.sample_rate)
        except DataError as e:
            raise UsageError(str(e)) from None
        outputs = []
        saved_handling = encoder.length_handling
        encoder.length_handling = "reverse"
        try:
            x, out = capture_module_io(fused, lambda: outputs.extend(model.transcribe_waveforms([wav])))
        finally:
            encoder.length_handling = saved_handling
        labels = None
        described = (
            f"utterance {path.name} ({wav.numel() / model.hparams.sample_rate:.2f} s; greedy transcript "
            f"{outputs[0]!r})"
        )
        time_label = "encoder frame"
    else:
        raise UsageError(
            f"{args.ckpt}: gates supports slot-filling and speech checkpoints, found {type(model).__name__}"
        )

    fused_out = out[0].detach()
    ref_out, gates = lstm_gates_from_fused(fused, x.detach(), dtype=torch.float64)
    diff = float((ref_out - fused_out.double()).abs().max())
    if not diff <= args.tolerance:
        raise UsageError(
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

    plt = _pyplot()
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


# ------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog=PROG,
        description="Measure the textbook claims about recurrent networks: gradient flow "
        "through time, long-range memory, loss surface and clipping, LSTM gates.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("gradient-flow", help="||dL/dh_t|| over time steps, per cell or for a checkpoint")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--ckpt",
        help="slot-filling or CTC checkpoint: its encoder on the --batch longest validation sequences of "
        "its run's data (random input of --length steps, with random targets, when that data cannot be read)",
    )
    src.add_argument(
        "--cell",
        nargs="+",
        choices=SYNTHETIC_CELLS,
        default=["rnn", "lstm", "gru"],
        help="from-scratch cells to compare (default: rnn lstm gru)",
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
    _common(p, "gradient-flow")

    p = sub.add_parser("long-range", help="Elman vs LSTM vs GRU on the adding problem at several lengths")
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 50, 100, 200])
    p.add_argument("--cells", nargs="+", choices=REGRESSOR_CELLS, default=list(REGRESSOR_CELLS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument(
        "--budget", type=int, default=DEFAULT_BUDGET, help="parameters per model (hidden sizes follow)"
    )
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--threshold", type=float, default=0.1, help="'learned' if test MSE < threshold x chance")
    _common(p, "long-range")
    p.set_defaults(seed=None)

    p = sub.add_parser("loss-surface", help="1-D/2-D loss slices (filter-normalised directions); --clipping")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--ckpt",
        help="slot-filling or CTC checkpoint: its training loss on the --batch longest validation sequences "
        "(random input when the run's data cannot be read)",
    )
    src.add_argument(
        "--cell",
        nargs="+",
        choices=REGRESSOR_CELLS,
        default=["rnn", "lstm", "gru"],
        help="small models trained on the adding problem (default: rnn lstm gru)",
    )
    p.add_argument(
        "--length", type=int, default=50, help="adding-problem length (checkpoint: random fallback)"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps before slicing")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument(
        "--batch", type=int, default=None, help="evaluation batch (default 256; 8 for a checkpoint)"
    )
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
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
    _common(p, "loss-surface")

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
    _common(p, "gates")
    return ap


def main(argv: list[str]) -> int:
    """``rnnlab analyze COMMAND [options]``."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "long-range" and args.seed is not None:
            args.seeds = [args.seed]
        if args.command == "loss-surface" and args.batch is None:
            args.batch = 8 if args.ckpt else 256
        run = {
            "gradient-flow": _gradient_flow,
            "long-range": _long_range,
            "loss-surface": _loss_surface,
            "gates": _gates,
        }[args.command]
        report = run(args)
        report.write(args.wandb)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        raise
    return 0
