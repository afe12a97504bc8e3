"""``rnnlab summarize RUN_DIR...``: a Markdown table of runs (model settings, best validation metrics, time).

Usage: rnnlab summarize RUN_DIR... [--metrics NAME...] [--group-seeds]

``--group-seeds`` merges runs named ``<name>-seed<N>`` into one row per ``<name>``: mean +- std (and n) of
each metric, the parameter count and the training time per epoch.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from pipelines.commands._common import ArgumentParser, fail
from pipelines.training.runconfig import read_configs

SEED_SUFFIX = re.compile(r"^(?P<name>.+)-seed(?P<seed>\d+)$")

DEFAULT_METRICS = {"slots": ["val/slot_f1", "val/intent_acc", "val/exact_match"], "ctc": ["val/cer", "val/wer"]}
# Monitored metrics where higher is better (the others, losses and error rates, are minimised).
HIGHER_IS_BETTER = {"val/slot_f1", "val/intent_acc", "val/acc", "val/joint", "val/exact_match", "val/map",
                    "val/p_at_1", "val/p_at_10"}


def _best_row(run: Path, monitor: str, mode: str) -> dict:
    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
    rows = [r for r in rows if r.get(monitor)]
    if not rows:
        return {}
    key = (lambda r: float(r[monitor])) if mode == "max" else (lambda r: -float(r[monitor]))
    return max(rows, key=key)


def _run_info(run: Path, metrics: list[str] | None) -> dict:
    """Model description, best row (by the run's monitor), metric names and summary of one run directory."""
    cfg = read_configs(run / "config.yaml") if (run / "config.yaml").is_file() else {}
    model = ((cfg or {}).get("model") or {}).get("init_args", {}) or {}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    monitor = summary.get("monitor", "val/loss")
    mode = "max" if monitor in HIGHER_IS_BETTER else "min"
    best = _best_row(run, monitor, mode)
    class_path = str(((cfg or {}).get("model") or {}).get("class_path", ""))
    kind = ("slots" if "slot" in monitor or "slot_filling" in class_path
            else "ctc" if monitor in ("val/cer", "val/wer") or ".ctc." in class_path else "other")
    names = metrics or DEFAULT_METRICS.get(kind, [monitor])
    enc = {**model, **(model.get("encoder") or {})}  # nested, or the flat options of a run from before them
    cell = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman", "jordan": "Jordan", "rnn": "RNN"}.get(
        enc.get("cell"), str(enc.get("cell", "?")))
    arch = f"{'Bi' if enc.get('bidirectional') else ''}{cell}-{enc.get('hidden_size', '?')} x{enc.get('num_layers', 1)}"
    return {"arch": arch, "best": best, "names": names, "summary": summary}


def summarize(runs: list[Path], metrics: list[str] | None = None) -> str:
    """One Markdown table per set of metric columns (runs of different pipelines get tables of their own)."""
    tables: dict[tuple[str, ...], list[str]] = {}
    for run in runs:
        info = _run_info(run, metrics)
        arch, best, names, summary = info["arch"], info["best"], info["names"], info["summary"]
        row = [run.name, arch, str(best.get("epoch", "?"))] + [
            f"{float(best[m]):.2f}" if best.get(m) else "-" for m in names]
        row.append(f"{summary['train_time_s'] / 60:.1f}" if "train_time_s" in summary else "-")
        lines = tables.get(tuple(names))
        if lines is None:
            header = ["run", "model", "best epoch", *names, "train min"]
            lines = tables[tuple(names)] = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n\n".join("\n".join(lines) for lines in tables.values())


def seed_group(name: str) -> tuple[str, int | None]:
    """``("elman", 3)`` for a run named ``elman-seed3``; ``(name, None)`` when the name has no seed suffix."""
    m = SEED_SUFFIX.match(name)
    return (m["name"], int(m["seed"])) if m else (name, None)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def parameter_count(run: Path) -> int | None:
    """Trainable parameters of the model in ``run/checkpoints/best.ckpt`` (or last.ckpt); None if absent."""
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = run / "checkpoints" / name
        if ckpt.is_file():
            try:
                from pipelines.base import load_module

                model = load_module(ckpt)
            except Exception:  # noqa: BLE001 - an unreadable checkpoint only leaves the column empty
                return None
            return sum(p.numel() for p in model.parameters() if p.requires_grad)
    return None


def _pm(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def summarize_seed_groups(runs: list[Path], metrics: list[str] | None = None, *,
                          count_parameters: bool = True) -> tuple[str, dict]:
    """Markdown table with one row per ``<name>`` of runs named ``<name>-seed<N>`` (others: a row each).

    Columns: model, n (runs), seeds, mean ± std of each metric at each run's best epoch, parameters (from the
    checkpoint), training seconds per epoch and training minutes (``summary.json``: ``train_time_s`` /
    ``epochs``). Returns the table and the numbers as a dict.
    """
    groups: dict[str, list[tuple[int | None, Path]]] = {}
    for run in runs:
        name, seed = seed_group(run.name)
        groups.setdefault(name, []).append((seed, run))
    lines: list[str] = []
    names: list[str] | None = None
    data: dict[str, dict] = {}
    for group, members in groups.items():
        members.sort(key=lambda m: (m[0] is None, m[0] or 0))
        infos = [_run_info(run, metrics) for _, run in members]
        if names is None:
            names = infos[0]["names"]
            header = ["runs", "model", "n", "seeds", *[f"{m} (mean ± std)" for m in names], "params",
                      "s / epoch", "train min"]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        values = {m: [float(i["best"][m]) for i in infos if i["best"].get(m)] for m in names}
        per_epoch = [i["summary"]["train_time_s"] / i["summary"]["epochs"] for i in infos
                     if i["summary"].get("train_time_s") is not None and i["summary"].get("epochs")]
        minutes = [i["summary"]["train_time_s"] / 60 for i in infos
                   if i["summary"].get("train_time_s") is not None]
        params = {parameter_count(run) for _, run in members} if count_parameters else set()
        params.discard(None)
        seeds = [s for s, _ in members if s is not None]
        archs = sorted({i["arch"] for i in infos})
        label = f"{group}-seed*" if seeds else group
        row = [label, " / ".join(archs), str(len(members)), ",".join(map(str, seeds)) or "-",
               *[_pm(values[m]) for m in names],
               " / ".join(str(p) for p in sorted(params)) or "-", _pm(per_epoch, 1), _pm(minutes, 1)]
        lines.append("| " + " | ".join(row) + " |")
        data[group] = {"runs": [run.name for _, run in members], "seeds": seeds, "model": archs,
                       "metrics": {m: {"mean": mean_std(v)[0], "std": mean_std(v)[1], "n": len(v)}
                                   for m, v in values.items()},
                       "params": sorted(params),
                       "seconds_per_epoch": mean_std(per_epoch)[0] if per_epoch else None,
                       "train_minutes": mean_std(minutes)[0] if minutes else None}
    return "\n".join(lines), data


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab summarize", description="Markdown table of run directories.")
    ap.add_argument("runs", nargs="+", help="run directories (with config.yaml, metrics.csv, summary.json)")
    ap.add_argument("--metrics", nargs="*", default=None, help="metric columns (default: by pipeline)")
    ap.add_argument("--group-seeds", action="store_true",
                    help="one row per <name> for runs named <name>-seed<N>: mean ± std (n) of each metric, "
                         "parameters and time per epoch")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs if (Path(r) / "config.yaml").is_file()]
    if not runs:
        fail("summarize", "no run directories with config.yaml given")
    if args.group_seeds:
        print(summarize_seed_groups(runs, args.metrics)[0])
    else:
        print(summarize(runs, args.metrics))
    return 0
