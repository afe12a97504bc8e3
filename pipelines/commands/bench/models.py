"""The benchmarked CTC models, built from the shipped configs, and one bare training step."""

from __future__ import annotations

import contextlib
import functools
import importlib

import torch

from pipelines.commands.bench.common import CONFIG_DIR

MODEL_CONFIGS = {"tiny": ("tiny/ctc.yaml",), "default": ("ctc.yaml",), "arctic": ("ctc.yaml", "ctc-arctic.yaml")}


def _read_configs(names: tuple[str, ...]) -> dict:
    from pipelines.training.runconfig import read_configs

    return read_configs(*(CONFIG_DIR / name for name in names))


def model_config(size: str) -> dict:
    """``model.init_args`` of the ``tiny`` (configs/tiny/ctc.yaml), ``default`` (ctc.yaml) or ``arctic``
    (ctc.yaml + ctc-arctic.yaml) CTC model."""
    if size not in MODEL_CONFIGS:
        raise ValueError(f"model size must be one of {', '.join(MODEL_CONFIGS)}, got {size!r}")
    return _read_configs(MODEL_CONFIGS[size])["model"]["init_args"]


def gradient_clipping() -> tuple[float | None, str]:
    """``(gradient_clip_val, gradient_clip_algorithm)`` from configs/defaults.yaml."""
    trainer = _read_configs(("defaults.yaml",)).get("trainer", {})
    return trainer.get("gradient_clip_val"), trainer.get("gradient_clip_algorithm", "norm")


def _factory(spec: dict | None):
    if not spec:
        return None
    module, _, name = spec["class_path"].rpartition(".")
    return functools.partial(getattr(importlib.import_module(module), name), **(spec.get("init_args") or {}))


def build_model(size: str, seed: int = 0):
    """A freshly initialised CTCSpeechRecognizer of the given config size (character vocabulary)."""
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    args = dict(model_config(size))
    optimizer = _factory(args.pop("optimizer", None)) or torch.optim.Adam
    scheduler = _factory(args.pop("lr_scheduler", None))
    torch.manual_seed(seed)
    return CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), optimizer=optimizer, lr_scheduler=scheduler, **args)


def describe(model) -> dict:
    """The model's architecture hyperparameters and parameter count (for the JSON)."""
    fe, enc = model.hparams.frontend, model.hparams.encoder
    out = {"n_mels": fe["n_mels"], "stack_frames": fe["stack_frames"], "spec_augment": fe["spec_augment"],
           **{k: enc[k] for k in ("cell", "hidden_size", "num_layers", "bidirectional", "dropout", "length_handling")}}
    out["parameters"] = sum(p.numel() for p in model.parameters())
    return out


def model_name(model) -> str:
    """A short name for the tables, e.g. ``3x BiLSTM-320, stack 3``."""
    fe, enc = model.hparams.frontend, model.hparams.encoder
    bi = "Bi" if enc["bidirectional"] else ""
    return f"{enc['num_layers']}x {bi}{enc['cell'].upper()}-{enc['hidden_size']}, stack {fe['stack_frames']}"


def optimizers(model):
    """``(optimizer, scheduler or None)`` from the model's ``configure_optimizers``."""
    cfg = model.configure_optimizers()
    if isinstance(cfg, dict):
        sched = cfg.get("lr_scheduler")
        return cfg["optimizer"], (sched["scheduler"] if isinstance(sched, dict) else sched)
    return cfg, None


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``bf16-mixed``, else a no-op context."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, batch: dict, optimizer, *, clip_val: float | None, clip_algorithm: str = "norm",
               device: torch.device | None = None, precision: str = "32-true") -> torch.Tensor:
    """One bare training step of a CTCSpeechRecognizer: forward, CTC loss (as in its ``_shared_step``), backward,
    gradient clipping, optimiser step."""
    from modules.ctc import ctc_loss_checked, min_ctc_frames_padded

    device = device or batch["waveforms"].device
    with autocast(device, precision):
        log_probs, out_lengths = model(batch["waveforms"], batch["lengths"])
        need = min_ctc_frames_padded(batch["targets"], batch["target_lengths"])
        loss, _ = ctc_loss_checked(log_probs, out_lengths, batch["targets"], batch["target_lengths"],
                                   blank=model.tokenizer.blank, min_frames=need)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_val:
        if clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_val)
    optimizer.step()
    return loss
