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

import argparse
from pathlib import Path

import torch

from pipelines.base import read_checkpoint
from pipelines.checkpointing import atomic_torch_save

# Training state that belongs to one epoch's optimiser, not to the averaged weights.
_DROP = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


def _load(path: Path) -> dict:
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: no state_dict in this file")
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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rnnlab average", description="Average the weights of checkpoints of one "
                                 "model (e.g. a run's best epochs) into a new checkpoint.")
    ap.add_argument("ckpts", nargs="+", help="checkpoints to average (e.g. runs/x/checkpoints/best-5/*.ckpt)")
    ap.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    args = ap.parse_args(argv)
    try:
        average_checkpoints(args.ckpts, args.out)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"rnnlab average: error: {e}") from None
    print(f"[rnnlab] averaged {len(args.ckpts)} checkpoints -> {args.out}")
    return 0
