"""Checkpoints that survive a kill while being written, and the rule that finds the run ``--ckpt_path last`` resumes.

Lightning's default writer streams the new checkpoint over the old path's content through ``fsspec``; a kill
or a full disk in the middle can leave neither version loadable. :class:`AtomicCheckpointIO` writes to a
temporary file in the same directory, flushes and ``fsync``-s it, and only then renames it over the target
(``os.replace`` is atomic on POSIX file systems), then syncs the directory entry. A kill at any moment leaves
either the previous checkpoint or the new one, never a torn file.

``fit --ckpt_path last`` resumes the run that the same command started (:func:`find_last_checkpoint`); a run
stopped by SIGTERM prints that command (:func:`resume_command`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a synced temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory for fsync
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer using :func:`atomic_torch_save` for local paths (remote URLs unchanged)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        atomic_torch_save(checkpoint, path)
        return None


class NothingToResume(FileNotFoundError):
    """``--ckpt_path last`` found no checkpoint to resume; the message says where it looked."""


def find_last_checkpoint(root: str | os.PathLike, prefix: str, name: str | None = None) -> Path:
    """The ``last.ckpt`` that ``fit --ckpt_path last`` resumes.

    With a run name, ``root/name/checkpoints/last.ckpt``. Without one, the newest ``last.ckpt`` (by modification
    time) among the runs this pipeline names itself, ``root/<prefix>-<YYYYmmdd-HHMMSS>`` and
    ``root/<prefix>-job<id>``: a run stopped by SIGTERM wrote the newest one, so the command that started it,
    with ``--ckpt_path last`` added, resumes it in its own run directory. Runs named with ``--run.name`` are
    resumed by giving that name.

    Raises:
        NothingToResume: no such checkpoint (the message names where it looked).
    """
    root = Path(root)
    if name is not None:
        path = root / name / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise NothingToResume(f"--ckpt_path last: nothing to resume: {path} does not exist")
        return path
    own_name = re.compile(rf"{re.escape(prefix)}-(\d{{8}}-\d{{6}}|job.+)")
    found = [p for p in root.glob(f"{glob.escape(prefix)}-*/checkpoints/last.ckpt")
             if own_name.fullmatch(p.parent.parent.name) and p.is_file()]
    if not found:
        raise NothingToResume(f"--ckpt_path last: nothing to resume: no {root}/{prefix}-<date>-<time>/checkpoints/"
                              f"last.ckpt (a named run needs its --run.name; or give --ckpt_path FILE)")
    return max(found, key=lambda p: (p.stat().st_mtime, p.parent.parent.name))


def resume_command(argv: list[str], saved: str | os.PathLike, program: str = "rnnlab") -> str:
    """The command line that resumes a run stopped after writing ``saved``: ``argv`` as it was given, with
    ``--ckpt_path last`` added when it has no ``--ckpt_path`` (a value naming another checkpoint is replaced
    by ``saved``, so the resumed run starts from the newest state)."""
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--ckpt_path" and i + 1 < len(args):
            value, slot = args[i + 1], (i + 1, "")
        elif a.startswith("--ckpt_path="):
            value, slot = a.split("=", 1)[1], (i, "--ckpt_path=")
        else:
            continue
        if value != "last" and Path(value).resolve() != Path(saved).resolve():
            args[slot[0]] = slot[1] + str(saved)
        break
    else:
        args += ["--ckpt_path", "last"]
    return shlex.join([program, *args])


def quiet_resume_warnings(ckpt_dir: str | os.PathLike) -> None:
    """Silences Lightning's "Checkpoint directory ... exists and is not empty" for ``ckpt_dir`` (and the
    ``best-N/`` folder in it): a run resumed into its own directory finds its checkpoints there by design. Any
    other directory still warns."""
    where = re.escape(os.path.realpath(ckpt_dir))
    warnings.filterwarnings("ignore", message=rf"Checkpoint directory {where}(/best-\d+)? exists and is not empty")


def mark_validation_unfinished(checkpoint: dict) -> None:
    """Records in a checkpoint written during a fit's validation that this validation did not finish.

    Lightning resumes a run whose validation stopped inside a step by running that validation again before
    training continues (its progress counters then read ``started == processed + 1``). A SIGTERM is acted on
    between validation steps, where the counters read as finished and the resumed run would skip that epoch's
    validation. This sets the counters to "stopped inside the first step", so the whole validation runs on resume
    (from its first batch: the metrics of the batches already seen were not saved).
    """
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
    # Validation batches of earlier validations in this epoch (val_check_interval < 1) stay counted.
    before = progress["total"]["completed"] - progress["current"]["completed"]
    progress["total"] = {"ready": before + 1, "started": before + 1, "processed": before, "completed": before}
    progress["current"] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    progress["is_last_batch"] = False
