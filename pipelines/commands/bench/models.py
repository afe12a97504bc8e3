"""The benchmarked models, built from the shipped configs, and one bare training step."""

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


def module_from_config(cls, init_args: dict, seed: int = 0, **extra):
    """A freshly initialised task ``cls`` from a config's ``model.init_args`` (``optimizer`` and ``lr_scheduler``
    as ``class_path``/``init_args`` specs, as the CLI reads them) and ``extra`` arguments (the vocabulary)."""
    args = dict(init_args)
    optimizer = _factory(args.pop("optimizer", None)) or torch.optim.Adam
    scheduler = _factory(args.pop("lr_scheduler", None))
    torch.manual_seed(seed)
    return cls(optimizer=optimizer, lr_scheduler=scheduler, **args, **extra)


def build_model(size: str, seed: int = 0):
    """A freshly initialised CTCSpeechRecognizer of the given config size (character vocabulary)."""
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    return module_from_config(CTCSpeechRecognizer, model_config(size), seed, vocab=CharTokenizer().to_dict())


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


def train_step(model, batch: dict, optimizer, *, batch_idx: int = 0, clip_val: float | None = None,
               clip_algorithm: str = "norm", device: torch.device | None = None,
               precision: str = "32-true") -> torch.Tensor:
    """One bare training step of any task: its own ``training_step`` (forward and loss, as ``Trainer.fit`` runs
    it), backward, gradient clipping, optimiser step. Its ``self.log`` calls return at once without a Trainer
    (Lightning warns once; :func:`~pipelines.commands.bench.common.lightning_quiet` keeps that warning out)."""
    device = device or next(model.parameters()).device
    with autocast(device, precision):
        loss = model.training_step(batch, batch_idx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_val:
        if clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_val)
    optimizer.step()
    return loss
