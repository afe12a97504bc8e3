"""``rnnlab analyze``: measurements of the textbook claims about recurrent networks.

Subcommands (each writes PNG plots, ``summary.md`` and ``results.json`` under ``--out``, default
``reports/<command>``, and logs them to W&B unless it is disabled); one module each in this package:

    gradient-flow   ||dL/dh_t|| for every step t: vanishing/exploding gradients per cell, or in a checkpoint
    long-range      Elman vs LSTM vs GRU (equal parameter budget) on the adding problem at several lengths
    loss-surface    loss along random filter-normalised and gradient directions (1-D, 2-D); --clipping
                    compares training with and without gradient-norm clipping
    gates           input/forget/output gates and cell state of a trained LSTM layer on a sentence/utterance

Usage: ``rnnlab analyze COMMAND [options]`` (``make analyze`` runs the synthetic ones). Numerical work is in
``modules/analysis.py``. Exit status: 0, or 2 with one line ``rnnlab analyze: error: ...`` for bad input.
"""

from __future__ import annotations

import argparse

from pipelines.commands._common import CommandError
from pipelines.commands.analyze import gates, gradient_flow, long_range, loss_surface
from pipelines.commands.analyze.common import PROG, usage_error

# Each module has add_parser(subparsers) and run(args) -> Report.
COMMANDS = {"gradient-flow": gradient_flow, "long-range": long_range, "loss-surface": loss_surface, "gates": gates}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # argparse would print the usage too and exit: errors are one line, printed by main.
        sub = self.prog[len(PROG):].strip()
        usage_error(f"{sub}: {message}" if sub else message)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnlab analyze`` parser with one subparser per entry of :data:`COMMANDS`."""
    ap = _Parser(
        prog=PROG,
        description="Measure the textbook claims about recurrent networks: gradient flow "
        "through time, long-range memory, loss surface and clipping, LSTM gates.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    return ap


def main(argv: list[str]) -> int:
    """``rnnlab analyze COMMAND [options]``: 0 on success, 2 (one line on stderr) for bad input."""
    try:
        args = build_parser().parse_args(argv)
        report = COMMANDS[args.command].run(args)
        report.write(args.wandb)
    except CommandError as e:  # its one line is already printed
        return int(e.code)
    return 0
