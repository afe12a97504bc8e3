"""Checkpoint tools for audio embeddings: ``rnnlab embed``, ``rnnlab evaluate-retrieval``, ``rnnlab linear-probe``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

BASELINES = ("mfcc-mean", "dtw")


def _fail(prog: str, message: str) -> SystemExit:
    return SystemExit(f"rnnlab {prog}: error: {message}")


def load_autoencoder(ckpt: str, prog: str, device: str = "cpu"):
    """An :class:`~pipelines.autoencoder.AudioAutoencoder` from its checkpoint, or a one-line exit."""
    from pipelines.base import load_module

    try:
        model = load_module(ckpt, map_location=device)
    except (FileNotFoundError, ValueError) as e:
        raise _fail(prog, str(e)) from None
    if not hasattr(model, "embed_waveforms"):
        raise _fail(prog, f"{ckpt} is a {type(model).__name__} checkpoint, not an audio autoencoder")
    return model


# ---------------------------------------------------------------------------------------------------------------------
# rnnlab embed


def write_embeddings(paths: list[str], vectors: torch.Tensor, out: str | Path) -> Path:
    """Writes ``path`` (string) and ``vector`` (list<float32>) columns, one row per file, to a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"path": pa.array([str(p) for p in paths], type=pa.string()),
                      "vector": pa.array(vectors.float().numpy().tolist(), type=pa.list_(pa.float32()))})
    pq.write_table(table, out)
    return out


def embed_main(argv: list[str]) -> int:
    """``rnnlab embed --ckpt CKPT FILE_OR_DIR... --out embeddings.parquet``."""
    ap = argparse.ArgumentParser(prog="rnnlab embed", description="Embed speech segments with an audio autoencoder.")
    ap.add_argument("--ckpt", required=True, help="checkpoint of an autoencoder run")
    ap.add_argument("inputs", nargs="+", help="audio files or directories (searched recursively)")
    ap.add_argument("--out", required=True, help="output Parquet file (columns: path, vector)")
    ap.add_argument("--trim-db", type=float, default=30.0,
                    help="trim leading/trailing audio quieter than this (dB under the peak), as in training; 0 = off")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from data.audio import AudioError, AudioRef
    from data.words import decode_segment
    from pipelines.transcribe import find_audio

    model = load_autoencoder(args.ckpt, "embed", args.device)
    try:
        files = find_audio(args.inputs)
    except SystemExit as e:
        raise _fail("embed", str(e).split("error: ", 1)[-1]) from None
    wavs, ok, failed = [], [], 0
    for f in files:
        try:
            wavs.append(decode_segment(AudioRef(path=str(f)), model.hparams.sample_rate, args.trim_db or None))
            ok.append(str(f))
        except AudioError as e:
            failed += 1
            print(f"rnnlab embed: warning: skipped {e}", file=sys.stderr)
    if not ok:
        raise _fail("embed", f"no readable audio among {len(files)} file(s)")
    t0 = time.perf_counter()
    vectors = model.embed_waveforms(wavs, batch_size=args.batch_size)
    out = write_embeddings(ok, vectors, args.out)
    print(f"[rnnlab] {len(ok)} embeddings of size {vectors.size(1)} in {time.perf_counter() - t0:.2f}s -> {out}"
          + (f" ({failed} skipped)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------------------
# rnnlab evaluate-retrieval


def evaluate_methods(segments_at, methods: list[tuple[str, str | None]], ks: list[int], batch_size: int = 32,
                     device: str = "cpu", baseline_rate: int = 8000) -> list[dict]:
    """Scores each method on the same segments; ``segments_at(rate)`` returns the decoded segments at a rate.

    ``methods`` holds ``(name, checkpoint)`` pairs; checkpoint ``None`` names a baseline (``mfcc-mean``/``dtw``).
    """
    from modules.retrieval import (
        cosine_similarity_matrix,
        dtw_distance_matrix,
        mean_pooled,
        mfcc_sequences,
        retrieval_scores,
    )

    rows = []
    for name, ckpt in methods:
        t0 = time.perf_counter()
        if ckpt is None:
            segs = segments_at(baseline_rate)
            mfcc = mfcc_sequences([s.waveform for s in segs], baseline_rate)
            if name == "mfcc-mean":
                sim = cosine_similarity_matrix(mean_pooled(mfcc))
            else:
                # Cepstral mean normalisation per segment, Euclidean frame cost, cost / (T_i + T_j).
                sim = -dtw_distance_matrix([(m - m.mean(0)).double() for m in mfcc])
        else:
            model = load_autoencoder(ckpt, "evaluate-retrieval", device)
            segs = segments_at(int(model.hparams.sample_rate))
            sim = cosine_similarity_matrix(model.embed_waveforms([s.waveform for s in segs], batch_size=batch_size))
        scores = retrieval_scores(sim, [s.label for s in segs], ks=ks)
        rows.append({"method": name, "checkpoint": ckpt, **scores, "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def markdown_table(rows: list[dict], ks: list[int]) -> str:
    head = "| method | MAP | " + " | ".join(f"P@{k}" for k in ks) + " | queries | seconds |"
    lines = [head, "|" + "---|" * (4 + len(ks))]
    for r in rows:
        lines.append(f"| {r['method']} | {r['map']:.3f} | " + " | ".join(f"{r[f'p@{k}']:.3f}" for k in ks)
                     + f" | {r['queries']} | {r['seconds']} |")
    return "\n".join(lines)


def _named_ckpts(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            p = Path(item).resolve()
            run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
            name = run.name
        out.append((name, path))
    return out


def evaluate_main(argv: list[str]) -> int:
    """``rnnlab evaluate-retrieval --ckpt [NAME=]CKPT... --data DIR``: query-by-example MAP and precision@k."""
    ap = argparse.ArgumentParser(
        prog="rnnlab evaluate-retrieval",
        description="Query-by-example retrieval: every segment queries all others (cosine similarity of embeddings, "
                    "or DTW distance); a hit has the same label. Prints MAP and precision@k per method.")
    ap.add_argument("--ckpt", action="append", default=[], metavar="[NAME=]CKPT",
                    help="autoencoder checkpoint (repeat for several; NAME labels its table row)")
    ap.add_argument("--data", default="../shared/data/fsdd", help="labelled audio: local copy or hub id")
    ap.add_argument("--split", default="test")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--audio-column", default="audio")
    ap.add_argument("--baselines", default=",".join(BASELINES),
                    help=f"comma-separated baselines to score too ({', '.join(BASELINES)}); empty for none")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 10], help="precision@k cut-offs")
    ap.add_argument("--baseline-rate", type=int, default=8000, help="sample rate (Hz) of the MFCC baselines")
    ap.add_argument("--trim-db", type=float, default=30.0, help="silence trim (dB under the peak); 0 = off")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise _fail("evaluate-retrieval", f"unknown baseline(s) {unknown} (choose from {list(BASELINES)})")
    methods: list[tuple[str, str | None]] = [(b, None) for b in baselines] + _named_ckpts(args.ckpt)
    if not methods:
        raise _fail("evaluate-retrieval", "nothing to score: give --ckpt and/or --baselines")
    for _, ckpt in methods:
        if ckpt is not None and not Path(ckpt).is_file():
            raise _fail("evaluate-retrieval", f"checkpoint not found: {ckpt}")
    from data.errors import DataError
    from data.words import load_word_segments

    local = Path(args.data).expanduser().exists()
    cache: dict[int, list] = {}

    def segments_at(rate: int):
        if rate not in cache:
            cache[rate] = load_word_segments(None if local else args.data, args.split,
                                             data_dir=args.data if local else None, audio_column=args.audio_column,
                                             label_column=args.label_column, sample_rate=rate,
                                             trim_db=args.trim_db or None)
        return cache[rate]

    try:
        rows = evaluate_methods(segments_at, methods, args.k, device=args.device, baseline_rate=args.baseline_rate)
    except DataError as e:
        raise _fail("evaluate-retrieval", str(e)) from None
    print(f"query-by-example retrieval on {args.data} [{args.split}]")
    print(markdown_table(rows, args.k))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"data": args.data, "split": args.split, "rows": rows}, indent=2) + "\n")
        print(f"[rnnlab] rows written to {args.json}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# rnnlab linear-probe


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 epochs: int = 300, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """Multinomial logistic regression on frozen vectors (standardised with the training statistics).

    Full-batch Adam; returns train and test accuracy (percent).
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    layer = torch.nn.Linear(xtr.size(1), n_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.01)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(layer(xtr), train_y).backward()
        opt.step()
    with torch.no_grad():
        acc = {name: float((layer(x).argmax(-1) == y).float().mean() * 100)
               for name, x, y in (("train_acc", xtr, train_y), ("test_acc", xte, test_y))}
    return acc


def linear_probe_main(argv: list[str]) -> int:
    """``rnnlab linear-probe --ckpt CKPT --data DIR``: logistic regression on frozen autoencoder embeddings."""
    ap = argparse.ArgumentParser(prog="rnnlab linear-probe",
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

    model = load_autoencoder(args.ckpt, "linear-probe", args.device)
    rate = int(model.hparams.sample_rate)
    t0 = time.perf_counter()
    try:
        train, test = (load_word_segments(None, split, data_dir=args.data, label_column=args.label_column,
                                          sample_rate=rate, trim_db=args.trim_db or None)
                       for split in (args.train_split, args.test_split))
        train, test = list(train), list(test)
    except DataError as e:
        raise _fail("linear-probe", str(e)) from None
    labels = sorted_labels(s.label for s in train)
    index = {lab: i for i, lab in enumerate(labels)}
    unseen = sorted({s.label for s in test} - set(index))
    if unseen:
        raise _fail("linear-probe", f"{args.data} [{args.test_split}]: label(s) {unseen[:5]} never seen in "
                                    f"[{args.train_split}]")
    xs = [model.embed_waveforms([s.waveform for s in part]) for part in (train, test)]
    ys = [torch.tensor([index[s.label] for s in part]) for part in (train, test)]
    res = linear_probe(xs[0], ys[0], xs[1], ys[1], epochs=args.epochs)
    res.update(checkpoint=args.ckpt, train=len(train), test=len(test), seconds=round(time.perf_counter() - t0, 1))
    print(f"linear probe on frozen embeddings ({xs[0].size(1)}-d) of {args.ckpt}: train acc {res['train_acc']:.2f}%, "
          f"{args.test_split} acc {res['test_acc']:.2f}% ({len(train)} / {len(test)} segments, {res['seconds']}s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0
