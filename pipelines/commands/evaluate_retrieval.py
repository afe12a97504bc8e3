"""``rnnlab evaluate-retrieval``: query-by-example MAP and precision@k of autoencoder embeddings and baselines.

Usage: rnnlab evaluate-retrieval [--ckpt [NAME=]CKPT ...] --data DIR [--baselines mfcc-mean,dtw] [--k 1 10] [--json F]

Every labelled segment queries all others (cosine similarity of embeddings, or DTW distance of MFCCs); a hit
has the same label. Prints a Markdown table, one row per method.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipelines.commands._common import ArgumentParser, fail, load_checkpoint

BASELINES = ("mfcc-mean", "dtw")


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
            model = load_checkpoint("evaluate-retrieval", ckpt, kind="autoencoder", device=device)
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


def main(argv: list[str]) -> int:
    ap = ArgumentParser(
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
        fail("evaluate-retrieval", f"unknown baseline(s) {unknown} (choose from {list(BASELINES)})")
    methods: list[tuple[str, str | None]] = [(b, None) for b in baselines] + _named_ckpts(args.ckpt)
    if not methods:
        fail("evaluate-retrieval", "nothing to score: give --ckpt and/or --baselines")
    for _, ckpt in methods:
        if ckpt is not None and not Path(ckpt).is_file():
            fail("evaluate-retrieval", f"checkpoint not found: {ckpt}")
    from data.errors import DataError
    from data.words import load_word_segments

    local = Path(args.data).expanduser().exists()
    if not local and (args.data.startswith(("/", ".", "~")) or args.data.count("/") != 1):
        fail("evaluate-retrieval", f"data directory not found: {args.data} (--data: a local copy, or a hub id "
                                   f"owner/name)")
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
        fail("evaluate-retrieval", str(e))
    print(f"query-by-example retrieval on {args.data} [{args.split}]")
    print(markdown_table(rows, args.k))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"data": args.data, "split": args.split, "rows": rows}, indent=2) + "\n")
        print(f"[rnnlab] rows written to {args.json}", file=sys.stderr)
    return 0
