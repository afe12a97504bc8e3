"""The ``rnnlab`` command: looks the subcommand up in :data:`pipelines.cli.registry.COMMANDS` and runs it.

Usage: rnnlab COMMAND [options]   (``rnnlab --help`` lists the commands; ``rnnlab COMMAND --help`` their options)
"""

from __future__ import annotations

import contextlib
import os
import sys

from pipelines.cli.registry import COMMANDS, usage
from pipelines.commands._common import fail


def main(argv: list[str] | None = None) -> int:
    """Runs ``rnnlab ARGV``; returns the exit status (see :mod:`pipelines.commands._common`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Training and evaluation note SIGTERM and Ctrl-C from the start, before Lightning and torch are imported.
    from pipelines.training.signals import noting

    with noting() if argv[0] in ("fit", "validate", "test") else contextlib.nullcontext():
        if argv[0].startswith("-"):  # LightningCLI's global options come before its subcommand
            from pipelines.cli.lightning import run

            return run(argv)
        command = COMMANDS.get(argv[0])
        if command is None:
            fail(None, f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)}; see rnnlab --help)")
        return command.load()(argv[1:]) or 0


def entry() -> None:
    """The console script ``rnnlab`` (``pyproject.toml``)."""
    from pipelines.training.signals import keep_until_exit

    keep_until_exit()  # fit/validate/test: a signal while the process shuts down is noted, not fatal
    sys.exit(main())
