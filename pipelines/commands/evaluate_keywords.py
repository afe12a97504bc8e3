"""``rnnlab evaluate-keywords``: a keyword (utterance) classifier on a labelled split, beside a mean-MFCC baseline:
accuracy, accuracy per class and the confusion matrix.

Usage: rnnlab evaluate-keywords --ckpt CKPT --data DIR [--split validation] [--train-split train] [--json F]

The baseline is multinomial logistic regression on each clip's mean and standard deviation of 13 MFCCs (and
their deltas), trained on ``--train-split`` of the same corpus: the bare-bones number a recurrent model must beat.
Clips are read untrimmed at the model's rate, as the keyword recipe trains on them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from pipelines.commands._common import ArgumentParser, fail, load_checkpoint

COMMAND = "evaluate-keywords"


def mfcc_stats(waveforms: list[torch.Tensor], sample_rate: int) -> torch.Tensor:
    """``(N, 52)``: per clip the mean and standard deviation of 13 MFCCs and of their deltas."""
    import torchaudio

    from modules.retrieval import mfcc_sequences

    rows = []
    for seq in mfcc_sequences(waveforms, sample_rate):
        delta = torchaudio.functional.compute_deltas(seq.T).T
        both = torch.cat([seq, delta], 1)
        rows.append(torch.cat([both.mean(0), both.std(0, unbiased=False)]))
    return torch.stack(rows)


def confusion(true: list[int], pred: list[int], n: int) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(true, pred, strict=True):
        m[t, p] += 1
    return m


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog=f"rnnlab {COMMAND}", description="Accuracy, per-class accuracy and confusion matrix "
                        "of a keyword classifier, beside a mean-MFCC logistic-regression baseline.")
    ap.add_argument("--ckpt", required=True, help="classifier checkpoint or shipped name (e.g. keywords)")
    ap.add_argument("--data", default="../shared/data/speech_commands", help="labelled audiofolder corpus")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--train-split", default="train", help="what the baseline trains on")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    from data.errors import DataError
    from data.words import load_word_segments
    from modules.retrieval import linear_probe

    model = load_checkpoint(COMMAND, args.ckpt, kind="classifier")
    rate = int(model.sample_rate)
    labels = list(model.labels)
    index = {lab: i for i, lab in enumerate(labels)}
    t0 = time.perf_counter()
    try:
        train, test = (load_word_segments(None, split, data_dir=args.data, label_column=args.label_column,
                                          sample_rate=rate, trim_db=None, max_duration=30.0)
                       for split in (args.train_split, args.split))
    except DataError as e:
        fail(COMMAND, str(e))
    unknown = sorted({s.label for s in test} - set(index))
    if unknown:
        fail(COMMAND, f"{args.data} [{args.split}]: label(s) {unknown[:5]} are not among the model's {labels}")
    y = [index[s.label] for s in test]
    t1 = time.perf_counter()
    pred = model.class_probabilities([s.waveform for s in test]).argmax(-1).tolist()
    model_s = time.perf_counter() - t1
    keep = [i for i, s in enumerate(train) if s.label in index]
    xtr = mfcc_stats([train[i].waveform for i in keep], rate)
    ytr = torch.tensor([index[train[i].label] for i in keep])
    base = linear_probe(xtr, ytr, mfcc_stats([s.waveform for s in test], rate), torch.tensor(y), epochs=500)
    base_pred = base["test_pred"].tolist()

    def acc(p):
        return 100.0 * sum(a == b for a, b in zip(p, y, strict=True)) / len(y)

    cm = confusion(y, pred, len(labels))
    per_class = {lab: (100.0 * int(cm[i, i]) / int(cm[i].sum())) if int(cm[i].sum()) else None
                 for i, lab in enumerate(labels)}
    base_cm = confusion(y, base_pred, len(labels))
    base_class = {lab: (100.0 * int(base_cm[i, i]) / int(base_cm[i].sum())) if int(base_cm[i].sum()) else None
                  for i, lab in enumerate(labels)}
    print(f"{args.data} [{args.split}]: {len(test)} clips, {len(labels)} classes; model {args.ckpt}\n")
    print("| system | accuracy |\n|---|---|")
    print(f"| mean/std MFCC + deltas, logistic regression (trained on [{args.train_split}]) | {acc(base_pred):.2f}% |")
    print(f"| {args.ckpt} | **{acc(pred):.2f}%** |\n")
    print("| class | clips | model | baseline |\n|---|---|---|---|")
    for i, lab in enumerate(labels):
        n = int(cm[i].sum())
        if n:
            print(f"| {lab} | {n} | {per_class[lab]:.1f}% | {base_class[lab]:.1f}% |")
    print("\nconfusion matrix of the model (rows: true label, columns: predicted)\n")
    print("| true \\ predicted | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    for i, lab in enumerate(labels):
        print(f"| {lab} | " + " | ".join(str(int(v)) if v else "." for v in cm[i].tolist()) + " |")
    res = {"checkpoint": str(args.ckpt), "data": args.data, "split": args.split, "clips": len(test),
           "labels": labels, "accuracy": round(acc(pred), 2), "baseline_accuracy": round(acc(base_pred), 2),
           "per_class": per_class, "baseline_per_class": base_class, "confusion": cm.tolist(),
           "model_seconds": round(model_s, 2), "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0
