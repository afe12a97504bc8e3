"""Checkpoint averaging: the mean of the weights of a run's N best checkpoints.

Averaging the parameters of the best few epochs of one run (as hybrid CTC/attention toolkits do by default)
smooths the noise of the last epochs of small-data training. ``--run.average_best N`` keeps the N best
checkpoints of ``fit`` under ``checkpoints/best-N/``, writes ``checkpoints/averaged.ckpt`` at the end and
validates it; ``rnnlab average CKPT... --out F`` does the same by hand for any checkpoints of one model.

The averaged file holds the first checkpoint's metadata (hyperparameters, tokenizer, class) with the mean
weights and no optimiser state: it loads everywhere a checkpoint does (``--ckpt``, ``transcribe``,
``init_from``) but cannot resume training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipelines.training.callbacks import KeepBest
from pipelines.training.checkpointing import atomic_torch_save, current_state_dict, read_checkpoint

# Training state that belongs to one epoch's optimiser, not to the averaged weights.
_DROP = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


def _load(path: Path) -> dict:
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: no state_dict in this file")
    ckpt["state_dict"] = current_state_dict(ckpt)  # a file from before a layer moved averages with a newer one
    return ckpt


def average_checkpoints(paths: list[str | Path], out: str | Path) -> dict:
    """Writes to ``out`` a checkpoint whose floating-point tensors are the mean over ``paths``.

    Integer tensors (counters, index buffers) must agree and are taken from the first. Raises ``ValueError``
    naming the file when a checkpoint's tensors differ from the first one's in name or shape (another model).
    Returns the averaged checkpoint.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no checkpoints to average")
    first = _load(paths[0])
    ref = first["state_dict"]
    total = {k: v.double() if v.is_floating_point() else v for k, v in ref.items()}
    for p in paths[1:]:
        sd = _load(p)["state_dict"]
        if sd.keys() != ref.keys():
            diff = sorted(set(sd) ^ set(ref))
            raise ValueError(f"{p}: not the same model as {paths[0]} (tensor names differ: {', '.join(diff[:4])})")
        for k, v in sd.items():
            if v.shape != ref[k].shape:
                raise ValueError(f"{p}: not the same model as {paths[0]} ({k}: shape {tuple(v.shape)} vs "
                                 f"{tuple(ref[k].shape)})")
            if v.is_floating_point():
                total[k] += v.double()
            elif not torch.equal(v, ref[k]):
                raise ValueError(f"{p}: integer tensor {k} differs from {paths[0]}; cannot average")
    n = len(paths)
    first["state_dict"] = {k: (v / n).to(ref[k].dtype) if ref[k].is_floating_point() else v for k, v in total.items()}
    for key in _DROP:
        first.pop(key, None)
    first["averaged_from"] = [str(p) for p in paths]
    atomic_torch_save(first, out)
    return first


def average_best(trainer, model, datamodule=None) -> Path | None:
    """Averages the checkpoints a :class:`KeepBest` callback kept into ``checkpoints/averaged.ckpt``.

    Called at the end of ``fit`` with ``--run.average_best N``: rank zero writes the file, every rank then
    validates it, and the validation metrics are added to the run's ``summary.json`` under ``averaged``.
    Returns the averaged checkpoint's path, or None when no checkpoint was kept.
    """
    keep = next((c for c in trainer.checkpoint_callbacks if isinstance(c, KeepBest)), None)
    if keep is None or not keep.best_k_models:
        print("[rnnlab] run.average_best: no checkpoints were kept; nothing averaged", flush=True)
        return None
    reverse = keep.mode == "max"
    ranked = sorted(keep.best_k_models.items(), key=lambda kv: float(kv[1]), reverse=reverse)
    paths = [p for p, _ in ranked]
    out = Path(keep.dirpath).parent / "averaged.ckpt"
    if trainer.is_global_zero:
        average_checkpoints(paths, out)
        scores = ", ".join(f"{Path(p).stem}: {float(s):.4g}" for p, s in ranked)
        print(f"[rnnlab] averaged the {len(paths)} best checkpoints by {keep.monitor} ({scores}) -> {out}",
              flush=True)
    trainer.strategy.barrier("average_best")
    results = trainer.validate(model, datamodule=datamodule, ckpt_path=str(out), verbose=False)
    if trainer.is_global_zero and results:
        metrics = {k: float(v) for k, v in results[0].items()}
        summary_path = Path(trainer.default_root_dir) / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            summary["averaged"] = {"checkpoint": str(out), "from": paths, **metrics}
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        print("[rnnlab] averaged checkpoint, validation: "
              + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val/")), flush=True)
    return out
