"""What every ``rnnlab`` command shares: one way to fail, checkpoint loading by kind, the run's saved config.
(An exception's one-line summary and the noise filter are the library's: :mod:`pipelines.inference.errors`.)

Exit-code policy (every command): 0 success; 1 the command ran but skipped some inputs (each named on stderr
by :func:`warn`); 2 an error the user must fix (bad option, missing/unreadable/wrong-kind file, bad data), as
argparse does for a bad option; 3 training stopped on non-finite values; 143 stopped by SIGTERM (130 by Ctrl-C).
An error is ONE line on stderr, ``rnnlab <command>: error: <what>``, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

# Exit statuses of the policy above.
OK, SKIPPED, USER_ERROR, NON_FINITE, SIGTERM = 0, 1, 2, 3, 143

def _prefix(command: str | None) -> str:
    return f"rnnlab {command}" if command else "rnnlab"


class CommandError(SystemExit):
    """Exit with status 2 (an error the user must fix); the one-line message is printed by :func:`fail`.

    A ``SystemExit`` so that ``main(argv)`` ends the process like argparse's own errors do; ``str()`` gives the
    printed line.
    """

    def __init__(self, command: str | None, message: str) -> None:
        super().__init__(USER_ERROR)
        self.command, self.message = command, message

    def __str__(self) -> str:
        return f"{_prefix(self.command)}: error: {self.message}"


def fail(command: str | None, message: str) -> NoReturn:
    """Prints ``rnnlab <command>: error: <message>`` on stderr and exits with status 2.

    ``command`` None gives ``rnnlab: error: ...`` (the LightningCLI subcommands' form).
    """
    err = CommandError(command, " ".join(str(message).split("\n")))
    print(str(err), file=sys.stderr, flush=True)
    raise err


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are the policy's one line (no usage dump), with a ``--help`` hint.

    ``prog`` must be ``rnnlab <command>``.
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("rnnlab").strip() or None
        fail(command, f"{message} (see {self.prog} --help)")


def at_least(low: int, meaning: str = ""):
    """An argparse ``type``: an integer ``>= low``; ``meaning`` (e.g. ``"1 = greedy"``) is added to the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{f' ({meaning})' if meaning else ''}, "
                                             f"got {text!r}")
        return value

    return parse


def named_dirs(command: str, items: list[str], option: str = "--data") -> list[tuple[str, Path]]:
    """``NAME=DIR`` pairs (a bare ``DIR`` is named after its folder), each an existing directory, names unique;
    anything else is a one-line exit (status 2)."""
    out: list[tuple[str, Path]] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if not name or not path:
            fail(command, f"{option} expects NAME=DIR, got {item!r}")
        if not Path(path).is_dir():
            fail(command, f"data directory not found: {path}")
        if name in (n for n, _ in out):
            fail(command, f"corpus name {name!r} given twice in {option}")
        out.append((name, Path(path)))
    return out


def warn(command: str, message: str) -> None:
    """Prints ``rnnlab <command>: warning: <message>`` on stderr (e.g. an input skipped: exit status 1)."""
    print(f"{_prefix(command)}: warning: {message}", file=sys.stderr)


def load_checkpoint(command: str, path: str | Path, *, kind: str | None = None, device: str = "cpu"):
    """The rnnlab pipeline ``path`` names (a checkpoint, a shipped model's name or ``hf://...``; see
    :func:`pipelines.inference.load_model`), or a one-line exit (status 2).

    Args:
        command: The subcommand, for the error line.
        path: Checkpoint file, shipped model name or hub address.
        kind: A key of :data:`pipelines.inference.KINDS` the model must be; None accepts any.
        device: ``map_location`` of the weights.
    """
    from pipelines.inference import InferenceError, load_model

    try:
        return load_model(path, kind=kind, device=device)
    except InferenceError as e:
        fail(command, str(e))


def run_config_for(ckpt: str | Path) -> Path:
    """The ``config.yaml`` saved in the run directory that holds ``ckpt`` (beside it or one level up).

    Raises:
        FileNotFoundError: no such file, with a message saying how to pass the config instead.
    """
    from pipelines.inference import InferenceError, resolve_checkpoint

    try:
        p = resolve_checkpoint(ckpt).resolve()
    except InferenceError as e:
        raise FileNotFoundError(str(e)) from None
    for d in (p.parent, p.parent.parent):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    raise FileNotFoundError(f"no config.yaml next to {ckpt} (or its run directory); "
                            f"pass the training config with -c and the checkpoint with --ckpt_path")
