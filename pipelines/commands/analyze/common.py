"""Shared pieces of the ``rnnlab analyze`` commands: cell names, the usage error, number formatting, the common
options and training a small regressor on the adding problem."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

import torch

from pipelines.commands._common import fail
from pipelines.training.plots import pyplot  # noqa: F401 - matplotlib.pyplot, non-interactive backend (re-exported)

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


COMMAND = "analyze"


def usage_error(message: str) -> NoReturn:
    """Bad input the user must fix: prints ``rnnlab analyze: error: <message>`` and raises the project's
    :class:`~pipelines.commands._common.CommandError` (``main`` returns its status, 2)."""
    fail(COMMAND, message)




def fmt(x: float | None, digits: int = 3) -> str:
    """A number for summary.md: ``n/a`` when missing or non-finite, scientific notation when tiny or huge."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits + 1}g}"


def add_common_options(p: argparse.ArgumentParser, command: str) -> None:
    """``--out``, ``--wandb`` and ``--seed``, which every subcommand takes."""
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


def add_source_options(
    p: argparse.ArgumentParser, *, ckpt_help: str, cells: tuple[str, ...], cell_help: str
) -> None:
    """``--ckpt CKPT`` or ``--cell NAME...`` (one of the two): analyse a trained checkpoint or small fresh models."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", help=ckpt_help)
    src.add_argument("--cell", nargs="+", choices=cells, default=["rnn", "lstm", "gru"], help=cell_help)


def positive(name: str, value: int | float) -> None:
    """Stops with a usage error naming the option ``name`` unless ``value > 0``."""
    if value <= 0:
        usage_error(f"{name} must be positive, found {value}")


def train_on_adding(
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
    """``(model, history)``: a one-layer ``cell`` regressor trained ``steps`` steps on fresh adding-problem batches
    (the same stream for every cell with the same ``data_seed``)."""
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
