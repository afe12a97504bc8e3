"""Checkpoints: written so a kill cannot tear them, checked before use, and the run ``--ckpt_path last`` resumes.

Lightning's default writer streams the new checkpoint over the old path's content through ``fsspec``; a kill
or a full disk in the middle can leave neither version loadable. :class:`AtomicCheckpointIO` writes to a
temporary file in the same directory, flushes and ``fsync``-s it, and only then renames it over the target
(``os.replace`` is atomic on POSIX file systems), then syncs the directory entry. A kill at any moment leaves
either the previous checkpoint or the new one, never a torn file.

:func:`read_checkpoint` / :func:`check_checkpoint` read a file only with ``weights_only`` (no pickled code ever
runs) and turn every way a file can be unusable (code inside, truncated, empty, text, random bytes, another
program's checkpoint, another pipeline's checkpoint) into one line naming the file. Every command that takes a
checkpoint goes through them before the file reaches Lightning or ``load_from_checkpoint``.

Weights that moved into a network class keep their old names in older files: :func:`renamed_keys` maps them
to today's names (a pipeline's ``legacy_state_prefixes``), and :func:`current_state_dict` gives any checkpoint's
weights under the names its class uses now.

``fit --ckpt_path last`` resumes the run that the same command started (:func:`find_last_checkpoint`); a run
stopped by SIGTERM prints that command (:func:`resume_command`).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import os
import re
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

# The entry every rnnlab checkpoint carries: {"class_path": <the pipeline class>, "format": 1}.
CKPT_KEY = "rnnlab"


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


def _pickled_globals(path: Path) -> list[str]:
    """The ``module.name`` globals a pickle file refers to, found by reading its opcodes (nothing is run)."""
    import pickletools

    names, strings = [], []
    with contextlib.suppress(Exception), open(path, "rb") as f:
        for op, arg, _ in pickletools.genops(f):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    return list(dict.fromkeys(names))


def _holds_code(names: list[str]) -> str:
    return (f"it holds code (it names {', '.join(names[:3])}, not allowed in a checkpoint); refused, nothing in it "
            f"was run")


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words a user can act on."""
    message = str(error)
    blocked = re.search(r"GLOBAL ([\w.]+)", message)
    if blocked:
        # PyTorch's own text goes on to suggest weights_only=False: exactly what must not be done with this file.
        return _holds_code([blocked.group(1)])
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a truncated or damaged checkpoint archive"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        names = _pickled_globals(path)
        return _holds_code(names) if names else "a pickle, not a PyTorch checkpoint; refused, nothing in it was run"
    if b"\0" not in head:
        with contextlib.suppress(UnicodeDecodeError):
            head.decode("utf-8", errors="strict" if len(head) < 4096 else "ignore")
            return "a text file"
    return "unrecognised content, neither a PyTorch checkpoint nor a pickle"


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict:
    """The checkpoint dict at ``path`` on the CPU (``weights_only``: no pickled code runs).

    Args:
        path: The file.
        mmap: Map tensor storage instead of reading it (cheap when only the metadata is wanted).

    Raises:
        FileNotFoundError: ``checkpoint not found: <path>``.
        ValueError: ``<path>: not a readable checkpoint (<why>)``, one line.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # the file is judged below
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - every failure becomes the one line below
        if mmap and "mmap" in str(e):  # an old (non-archive) torch.save file cannot be mapped: read it whole
            return read_checkpoint(path)
        raise ValueError(f"{path}: not a readable checkpoint: {_unreadable_reason(path, e)}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a readable checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    return ckpt


def renamed_keys(keys, prefixes: dict[str, str]) -> dict[str, str]:
    """``{old: new}`` for each of ``keys`` that starts with an old prefix of ``prefixes`` (``{"speller.":
    "model.speller."}``) and whose new name is not among ``keys``; empty for a state dict already current."""
    keys = list(keys)
    present = set(keys)
    out = {}
    for key in keys:
        old = next((p for p in prefixes if key.startswith(p)), None)
        if old is not None and (new := prefixes[old] + key[len(old):]) not in present:
            out[key] = new
    return out


def _class_of(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def current_state_dict(ckpt: dict) -> dict:
    """``ckpt["state_dict"]`` under the weight names of the class it records (its ``upgrade_state_dict``); as it
    is for a checkpoint of no rnnlab class."""
    state = ckpt["state_dict"]
    try:
        upgrade = _class_of(ckpt[CKPT_KEY]["class_path"]).upgrade_state_dict
    except (KeyError, TypeError, ImportError, AttributeError, ValueError):
        return state
    return upgrade(state)


def _same_class(a: str, b: str) -> bool:
    """Whether two ``module.Class`` paths name the same class (a re-export counts as the same)."""
    try:
        return a == b or _class_of(a) is _class_of(b)
    except (ImportError, AttributeError, ValueError):
        return False


def check_checkpoint(path: str | Path, *, class_path: str | None = None) -> dict:
    """Checks that ``path`` is an rnnlab checkpoint (of the pipeline ``class_path`` if given); its rnnlab entry.

    Only the metadata is needed, so tensors are memory-mapped, not read.

    Raises:
        FileNotFoundError / ValueError: one line naming the file and what is wrong with it.
    """
    meta = read_checkpoint(path, mmap=True).get(CKPT_KEY)
    if not isinstance(meta, dict) or not isinstance(meta.get("class_path"), str):
        raise ValueError(f"{path}: not an rnnlab checkpoint (no '{CKPT_KEY}' entry)")
    if class_path is not None and not _same_class(meta["class_path"], class_path):
        saved, wanted = meta["class_path"].rsplit(".", 1)[-1], class_path.rsplit(".", 1)[-1]
        raise ValueError(f"{path}: a {saved} checkpoint, but the config builds a {wanted} (give the config it was "
                         f"trained with)")
    return meta
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
