"""``rnnlab summarize RUN_DIR...``: a Markdown table of runs (model settings, best validation metrics, time)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

DEFAULT_METRICS = {"slots": ["val/slot_f1", "val/intent_acc", "val/exact_match"], "ctc": ["val/cer", "val/wer"]}


def _best_row(run: Path, monitor: str, mode: str) -> dict:
    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
    rows = [r for r in rows if r.get(monitor)]
    if not rows:
        return {}
    key = (lambda r: float(r[monitor])) if mode == "max" else (lambda r: -float(r[monitor]))
    return max(rows, key=key)


def summarize(runs: list[Path], metrics: list[str] | None = None) -> str:
    lines, header = [], None
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        model = (cfg.get("model") or {}).get("init_args", {})
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        monitor = summary.get("monitor", "val/loss")
        mode = "max" if monitor in ("val/slot_f1", "val/intent_acc", "val/acc") else "min"
        best = _best_row(run, monitor, mode)
        kind = "slots" if "slot" in monitor else "ctc"
        names = metrics or DEFAULT_METRICS.get(kind, [monitor])
        cell = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman", "jordan": "Jordan", "rnn": "RNN"}.get(
            model.get("cell"), str(model.get("cell", "?")))
        arch = f"{'Bi' if model.get('bidirectional') else ''}{cell}-{model.get('hidden_size', '?')}" \
               f" x{model.get('num_layers', 1)}"
        row = [run.name, arch, str(best.get("epoch", "?"))] + [
            f"{float(best[m]):.2f}" if best.get(m) else "-" for m in names]
        row.append(f"{summary['train_time_s'] / 60:.1f}" if "train_time_s" in summary else "-")
        if header is None:
            header = ["run", "model", "best epoch", *names, "train min"]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="rnnlab summarize", description="Markdown table of run directories.")
    ap.add_argument("runs", nargs="+", help="run directories (with config.yaml, metrics.csv, summary.json)")
    ap.add_argument("--metrics", nargs="*", default=None, help="metric columns (default: by pipeline)")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs if (Path(r) / "config.yaml").is_file()]
    if not runs:
        raise SystemExit("rnnlab summarize: error: no run directories with config.yaml given")
    print(summarize(runs, args.metrics))
    return 0
