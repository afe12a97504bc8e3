"""``rnnlab linear-probe``: a linear classifier on frozen autoencoder embeddings, scored on the test split.

Usage: rnnlab linear-probe --ckpt CKPT --data DIR [--train-split train] [--test-split test] [--epochs 300] [--json F]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from modules.retrieval import linear_probe
from pipelines.commands._common import ArgumentParser, fail, load_checkpoint


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab linear-probe",
                        description="Train a linear classifier on frozen embeddings (train split) and "
                                    "report its accuracy on the test split.")
    ap.add_argument("--ckpt", required=True, help="autoencoder checkpoint")
    ap.add_argument("--data", default="../shared/data/fsdd", help="labelled audio (local copy)")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--trim-db", type=float, default=30.0)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from data.errors import DataError
    from data.words import load_word_segments, sorted_labels

    model = load_checkpoint("linear-probe", args.ckpt, kind="autoencoder", device=args.device)
    rate = int(model.sample_rate)
    t0 = time.perf_counter()
    try:
        train, test = (load_word_segments(None, split, data_dir=args.data, label_column=args.label_column,
                                          sample_rate=rate, trim_db=args.trim_db or None)
                       for split in (args.train_split, args.test_split))
        train, test = list(train), list(test)
    except DataError as e:
        fail("linear-probe", str(e))
    labels = sorted_labels(s.label for s in train)
    index = {lab: i for i, lab in enumerate(labels)}
    unseen = sorted({s.label for s in test} - set(index))
    if unseen:
        fail("linear-probe", f"{args.data} [{args.test_split}]: label(s) {unseen[:5]} never seen in "
                                    f"[{args.train_split}]")
    xs = [model.embed_waveforms([s.waveform for s in part]) for part in (train, test)]
    ys = [torch.tensor([index[s.label] for s in part]) for part in (train, test)]
    res = linear_probe(xs[0], ys[0], xs[1], ys[1], epochs=args.epochs)
    res.pop("test_pred")
    res.update(checkpoint=args.ckpt, train=len(train), test=len(test), seconds=round(time.perf_counter() - t0, 1))
    print(f"linear probe on frozen embeddings ({xs[0].size(1)}-d) of {args.ckpt}: train acc {res['train_acc']:.2f}%, "
          f"{args.test_split} acc {res['test_acc']:.2f}% ({len(train)} / {len(test)} segments, {res['seconds']}s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0
