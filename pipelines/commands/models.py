"""``rnnlab models``: the shipped models (installed with the package), their task, size and validation numbers.

Usage: rnnlab models [--json] [--verify]

Every command that takes ``--ckpt`` also takes one of these names (``rnnlab transcribe --ckpt english a.wav``).
``--verify`` checks each file's sha256 against the manifest (exit 2 if one fails). ``RNNLAB_MODELS`` names another
folder of the same layout, searched first.
"""

from __future__ import annotations

import json

from pipelines.commands._common import ArgumentParser, fail


def _metrics(entry: dict) -> str:
    m = entry.get("metrics") or {}
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in m.items())


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab models", description="List the shipped models (usable as --ckpt NAME).")
    ap.add_argument("--json", action="store_true", help="the manifest entries as one JSON object")
    ap.add_argument("--verify", action="store_true", help="check every file's sha256 against the manifest")
    args = ap.parse_args(argv)

    from pipelines.inference import InferenceError
    from pipelines.inference.shipped import available

    try:
        models = available()
    except InferenceError as e:
        fail("models", str(e))
    if args.verify:
        for m in models.values():
            try:
                m.verify()
            except InferenceError as e:
                fail("models", str(e))
    if args.json:
        print(json.dumps({n: {**m.entry, "path": str(m.path)} for n, m in sorted(models.items())}, indent=2))
        return 0
    if not models:
        print("no shipped models installed")
        return 0
    width = max(len(n) for n in models)
    for name, m in sorted(models.items()):
        size = m.entry.get("bytes", 0) / 1e6
        print(f"{name:<{width}}  {m.task:<16} {size:5.1f} MB  {_metrics(m.entry)}")
        if m.entry.get("summary"):
            print(f"{'':<{width}}  {m.entry['summary']}")
    print("\nany --ckpt takes a name (rnnlab transcribe --ckpt english a.wav; rnnlab predict --ckpt snips -); "
          "model cards: docs/shipped-models.md")
    return 0
