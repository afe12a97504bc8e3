"""``rnnlab pack``: a run's checkpoint as a shippable model: compact weights, config, manifest entry, model card.

Usage: rnnlab pack --ckpt RUN/checkpoints/best.ckpt --name NAME --out DIR [--command CMD] [--data NAME=LICENCE ...]
                   [--summary TEXT] [--metric KEY=VALUE ...] [--commit SHA] [--float32]

Writes ``DIR/NAME/model.ckpt`` (weights only: parameters in float16 unless ``--float32``; no optimizer state),
``DIR/NAME/config.yaml`` (the run's resolved config, so ``rnnlab test --ckpt`` works), ``DIR/NAME/README.md`` (the
model card) and merges the entry into ``DIR/manifest.json`` (task, command, data and licences, commit, metrics,
bytes, sha256). The metrics are the run's best validation metrics (``summary.json``) unless given with
``--metric`` or ``--metrics-json`` (the ``validate_metrics-<ckpt>.json`` of ``rnnlab validate --ckpt`` on the packed
model, so the numbers are those of the float16 weights). The folder is what a user needs to publish the model (e.g. on the Hugging Face hub) or to point
``RNNLAB_MODELS`` at; ``--out pipelines/pretrained`` ships it with the package.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

from pipelines.commands._common import ArgumentParser, fail, load_checkpoint, run_config_for

TASKS = {"CTCSpeechRecognizer": "speech-to-text", "TransducerSpeechRecognizer": "speech-to-text",
         "SiameseWordEmbedder": "acoustic word embedding",
         "UtteranceClassifier": "audio classification",
         "SlotFillingModule": "slot filling + intent", "G2PModel": "grapheme-to-phoneme",
         "AudioAutoencoder": "audio embedding", "LASRecognizer": "speech-to-text"}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def compact_checkpoint(path: str | Path, param_names: set[str], *, half: bool = True) -> dict:
    """The checkpoint at ``path`` reduced to what inference needs, parameters in float16 if ``half``."""
    import torch

    from pipelines.training.checkpointing import CKPT_KEY, current_state_dict, read_checkpoint

    ckpt = read_checkpoint(path)
    state = {}
    for k, v in current_state_dict(ckpt).items():  # today's weight names, which ``param_names`` holds
        if half and k in param_names and v.is_floating_point() and v.dtype == torch.float32:
            v = v.half()
        state[k] = v.clone()
    hp = dict(ckpt.get("hyper_parameters", {}))
    for key in ("init_from", "noise_dir"):  # training-time paths of the machine it was trained on
        if key in hp:
            hp[key] = None
    keep = {"state_dict": state, "hyper_parameters": hp, CKPT_KEY: {**ckpt[CKPT_KEY], "packed": True}}
    for k in ("pytorch-lightning_version", "epoch", "global_step"):
        if k in ckpt:
            keep[k] = ckpt[k]
    return keep


def _summary_metrics(ckpt: Path) -> dict:
    for d in (ckpt.parent, ckpt.parent.parent):
        s = d / "summary.json"
        if s.is_file():
            data = json.loads(s.read_text())
            return {k: round(float(v), 4) for k, v in data.items()
                    if isinstance(v, (int, float)) and k.startswith("val/") and "loss" not in k and "unalignable" not in k}
    return {}


def _card(name: str, entry: dict) -> str:
    data = "\n".join(f"- {d['name']}: {d['licence']}" for d in entry["data"]) or "- (not given)"
    metrics = "\n".join(f"| {k} | {v} |" for k, v in entry["metrics"].items()) or "| (none) | |"
    return f"""# {name}

{entry.get('summary', '')}

- task: {entry['task']} (`{entry['class']}`)
- trained by: `{entry['command']}` at commit `{entry['commit']}`, {entry['date']}
- weights: {entry['bytes'] / 1e6:.1f} MB ({entry['dtype']}), sha256 `{entry['sha256']}`

## Data and licences

{data}

## Validation metrics

| metric | value |
|---|---|
{metrics}

## Use

```bash
rnnlab models                       # lists it when installed (or RNNLAB_MODELS=<this folder's parent>)
rnnlab predict --ckpt {name} ...     # any --ckpt takes the name
```
"""


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab pack", description="Make a shippable model folder from a run's checkpoint.")
    ap.add_argument("--ckpt", required=True, help="the run's checkpoint (best.ckpt or averaged.ckpt)")
    ap.add_argument("--name", required=True, help="the model's name (letters, digits, dashes)")
    ap.add_argument("--out", required=True, help="folder of models (its manifest.json is updated)")
    ap.add_argument("--command", default="", help="the command that trained it (recorded in the manifest)")
    ap.add_argument("--data", action="append", default=[], metavar="NAME=LICENCE", help="a training corpus")
    ap.add_argument("--summary", default="", help="one sentence: what it is good for")
    ap.add_argument("--metric", action="append", default=[], metavar="KEY=VALUE", help="a metric (repeatable)")
    ap.add_argument("--metrics-json", default=None, metavar="FILE",
                    help="metrics from `rnnlab validate` (validate_metrics-<ckpt>.json), e.g. of the packed model "
                         "itself")
    ap.add_argument("--float32", action="store_true", help="keep float32 weights (default: float16)")
    ap.add_argument("--commit", default=None, help="the commit it was trained at (default: the current one)")
    args = ap.parse_args(argv)
    import re

    import torch

    from pipelines.inference.shipped import MANIFEST, sha256_of

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.name):
        fail("pack", f"--name must be lower-case letters, digits and dashes, got {args.name!r}")
    data = []
    for d in args.data:
        if "=" not in d:
            fail("pack", f"--data must be NAME=LICENCE, got {d!r}")
        n, lic = d.split("=", 1)
        data.append({"name": n, "licence": lic})
    metrics = {}
    for m in args.metric:
        k, sep, v = m.partition("=")
        try:
            metrics[k] = float(v)
        except ValueError:
            fail("pack", f"--metric must be KEY=NUMBER, got {m!r}")
    if args.metrics_json:
        try:
            measured = json.loads(Path(args.metrics_json).read_text()).get("metrics", {})
        except (OSError, ValueError) as e:
            fail("pack", f"--metrics-json {args.metrics_json}: {type(e).__name__}: {e}")
        metrics.update({k: round(float(v), 4) for k, v in measured.items()
                        if isinstance(v, (int, float)) and "loss" not in k and "unalignable" not in k})
    model = load_checkpoint("pack", args.ckpt)
    ckpt = Path(args.ckpt)
    out = Path(args.out)
    folder = out / args.name
    folder.mkdir(parents=True, exist_ok=True)
    packed = compact_checkpoint(ckpt, {n for n, _ in model.named_parameters()}, half=not args.float32)
    target = folder / "model.ckpt"
    torch.save(packed, target)
    try:
        shutil.copyfile(run_config_for(ckpt), folder / "config.yaml")
    except FileNotFoundError as e:
        fail("pack", str(e))
    cls = type(model).__name__
    entry = {
        "task": TASKS.get(cls, cls), "class": f"{type(model).__module__}.{cls}", "file": f"{args.name}/model.ckpt",
        "summary": args.summary, "command": args.command, "data": data, "commit": args.commit or _commit(),
        "date": dt.date.today().isoformat(), "metrics": metrics or _summary_metrics(ckpt),
        "dtype": "float32" if args.float32 else "float16", "params": sum(p.numel() for p in model.parameters()),
        "bytes": target.stat().st_size, "sha256": sha256_of(target),
    }
    (folder / "README.md").write_text(_card(args.name, entry), encoding="utf-8")
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": {}}
    manifest.setdefault("models", {})[args.name] = entry
    manifest["models"] = dict(sorted(manifest["models"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"[rnnlab] {args.name}: {entry['bytes'] / 1e6:.1f} MB ({entry['dtype']}) in {folder}; manifest "
          f"{manifest_path}; check with: RNNLAB_MODELS={out} rnnlab models --verify")
    return 0
