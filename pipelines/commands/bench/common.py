"""Shared helpers of the ``rnnlab bench`` sections: paths, targets, timing, quiet logging and the printed tables."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from pipelines.inference.errors import quiet as common_quiet

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "pipelines" / "configs"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "arctic_kathleen"
TARGETS = {"train_ratio": 0.95, "data_ratio": 3.0, "padding_bucketed": 0.10, "rtf_greedy": 0.02, "rtf_beam": 0.1}
# The sections measure both precisions where they can; bf16-mixed needs a GPU.
PRECISIONS = ("32-true", "bf16-mixed")
BF16_SKIPPED = "no CUDA device: bf16-mixed runs on GPU only"


def time_calls(fn, *, warmup: int, iters: int) -> float:
    """Mean seconds per call of ``fn`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def sync(device: torch.device) -> None:
    """Waits for the device's queued kernels (CUDA runs asynchronously; timings must include them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fmt(v) -> str:
    """A table cell: ``-`` for None, yes/no for booleans, floats with about three significant digits."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.3g}" if abs(v) < 0.01 else f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned, a rule under the headers."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_notes(lines: list[str]) -> None:
    """Prints the notes under a table, indented."""
    for line in lines:
        print(f"  {line}")


# Lightning's info lines and known harmless warnings, kept out of the tables by lightning_quiet().
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "datasets")
_HARMLESS = (".*does not have many workers.*", ".*have no logger configured.*", ".*treespec.*",
             ".*no `val_dataloader`.*", ".*validation_step.*", ".*GPU available but not used.*",
             ".*exceeds the number of.*", ".*LeafSpec.*",
             ".*`self.trainer` reference is not registered.*")  # a task's own step run bare


def lightning_quiet():
    """The commands' :func:`~pipelines.inference.errors.quiet` for bench: Lightning's info lines and known
    harmless warnings out of the tables, the tables themselves printed."""
    return common_quiet(_LIGHTNING_LOGGERS, level=logging.WARNING, output=False, warning_patterns=_HARMLESS)


def measured(by_precision: dict, notes: list[str]):
    """Yields the ``(precision, result)`` pairs that ran and adds a note for each skipped one."""
    for p, res in by_precision.items():
        if "skipped" in res:
            notes.append(f"{p}: skipped ({res['skipped']})")
        else:
            yield p, res


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with its tensors moved to ``device`` (ids and other lists kept)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_stats(batches: list[dict], sample_rate: int) -> tuple[int, float]:
    """``(utterances, seconds of audio)`` in ``batches``."""
    utts = sum(len(b["ids"]) for b in batches)
    return utts, sum(int(b["lengths"].sum()) for b in batches) / sample_rate
