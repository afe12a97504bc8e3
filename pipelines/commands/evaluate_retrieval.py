"""``rnnlab evaluate-retrieval``: query-by-example MAP and precision@k, and same-different average precision, of
autoencoder embeddings and baselines.

Usage: rnnlab evaluate-retrieval [--ckpt [NAME=]CKPT ...] --data DIR [--baselines mfcc-mean,dtw,...] [--k 1 10]
       [--label-column label] [--speaker-column speaker] [--json F]

Every labelled segment queries all others (cosine similarity of embeddings, or DTW distance of MFCCs); a hit
has the same label. Same-different AP ranks all pairs of segments; with a speaker column it is also given over
the pairs of two different speakers. Prints a Markdown table, one row per method.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipelines.commands._common import ArgumentParser, fail, load_checkpoint

BASELINES = ("mfcc-mean", "dtw", "dtw-cmvn", "mfcc-downsample")
BASELINE_HELP = (
    "mfcc-mean: 13 MFCCs averaged over time, cosine; dtw: DTW on 13 mean-normalised MFCCs, Euclidean frame cost; "
    "dtw-cmvn: DTW on MFCCs with deltas and delta-deltas (39-d), mean/variance-normalised per speaker (per segment "
    "without speakers), cosine frame cost; mfcc-downsample: the same 39-d frames resampled to 10 frames and "
    "flattened (390-d), cosine")


def _baseline_similarity(name: str, waveforms: list, rate: int, speakers: list[str] | None):
    """``(N, N)`` similarity (higher = closer) of one baseline."""
    from modules.retrieval import (
        cmvn,
        cosine_similarity_matrix,
        downsampled,
        dtw_distance_matrix,
        mean_pooled,
        mfcc_sequences,
    )

    if name == "mfcc-mean":
        return cosine_similarity_matrix(mean_pooled(mfcc_sequences(waveforms, rate)))
    if name == "dtw":
        # Cepstral mean normalisation per segment, Euclidean frame cost, cost / (T_i + T_j).
        return -dtw_distance_matrix([(m - m.mean(0)).double() for m in mfcc_sequences(waveforms, rate)])
    feats = cmvn(mfcc_sequences(waveforms, rate, deltas=True), speakers)
    if name == "dtw-cmvn":
        return -dtw_distance_matrix([f.double() for f in feats], metric="cosine")
    return cosine_similarity_matrix(downsampled(feats, 10))


def evaluate_methods(segments_at, methods: list[tuple[str, str | None]], ks: list[int], batch_size: int = 32,
                     device: str = "cpu", baseline_rate: int = 8000,
                     speaker_of: dict[str, str] | None = None) -> list[dict]:
    """Scores each method on the same segments; ``segments_at(rate)`` returns the decoded segments at a rate.

    ``methods`` holds ``(name, checkpoint)`` pairs; checkpoint ``None`` names a baseline (:data:`BASELINES`).
    ``speaker_of`` maps a segment id to its speaker; when every segment has one, the cross-speaker AP is given
    (else ``None``) and the CMVN baselines normalise per speaker. ``us_per_pair`` is the time spent computing
    the similarities (features or embeddings included; decoding audio and loading the model not) divided by
    the number of pairs.
    """
    from modules.retrieval import cosine_similarity_matrix, retrieval_scores, same_different_ap

    rows = []
    for name, ckpt in methods:
        t0 = time.perf_counter()
        if ckpt is None:
            segs = segments_at(baseline_rate)
            speakers = _speakers_of(segs, speaker_of)
            t1 = time.perf_counter()
            sim = _baseline_similarity(name, [s.waveform for s in segs], baseline_rate, speakers)
        else:
            model = load_checkpoint("evaluate-retrieval", ckpt, kind="autoencoder", device=device)
            segs = segments_at(int(model.sample_rate))
            speakers = _speakers_of(segs, speaker_of)
            t1 = time.perf_counter()
            sim = cosine_similarity_matrix(model.embed_waveforms([s.waveform for s in segs], batch_size=batch_size))
        scoring = time.perf_counter() - t1
        labels = [s.label for s in segs]
        scores = retrieval_scores(sim, labels, ks=ks)
        sd = same_different_ap(sim, labels, speakers, higher_is_similar=True)
        rows.append({"method": name, "checkpoint": ckpt, **scores,
                     "ap": _finite(sd["ap"]), "ap_cross_speaker": _finite(sd.get("ap_cross_speaker")),
                     "pairs": sd["pairs"], "positive_pairs": sd["positive_pairs"],
                     "cross_speaker_pairs": sd.get("cross_speaker_pairs"),
                     "cross_speaker_positive_pairs": sd.get("cross_speaker_positive_pairs"),
                     "speakers": len(set(speakers)) if speakers else None,
                     "us_per_pair": round(scoring * 1e6 / sd["pairs"], 3),
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def _speakers_of(segments: list, speaker_of: dict[str, str] | None) -> list[str] | None:
    """Every segment's speaker, or None unless all of them are known."""
    if not speaker_of:
        return None
    speakers = [speaker_of.get(s.id) for s in segments]
    return speakers if all(speakers) else None


def _finite(x: float | None) -> float | None:
    """NaN (no positive pair) and a missing value are both ``None`` (JSON ``null``, ``n/a`` in the table)."""
    return None if x is None or x != x else float(x)


def _cell(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _micros(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def markdown_table(rows: list[dict], ks: list[int]) -> str:
    head = ("| method | MAP | " + " | ".join(f"P@{k}" for k in ks)
            + " | AP | AP cross-speaker | queries | µs/pair | seconds |")
    lines = [head, "|" + "---|" * (7 + len(ks))]
    for r in rows:
        lines.append(f"| {r['method']} | {r['map']:.3f} | " + " | ".join(f"{r[f'p@{k}']:.3f}" for k in ks)
                     + f" | {_cell(r['ap'])} | {_cell(r['ap_cross_speaker'])} | {r['queries']} "
                       f"| {_micros(r['us_per_pair'])} | {r['seconds']} |")
    return "\n".join(lines)


def read_speakers(data: str, split: str, local: bool, column: str) -> dict[str, str] | None:
    """Segment id -> speaker from the split's ``column``, or None when it has no such column.

    A segment's id is its row's ``file_name``, else ``row N`` (1-based), as :func:`data.words.load_word_segments`
    names it; an empty speaker is left out (unknown).
    """
    from data.sources import load_split

    if not column:
        return None
    rows = load_split(None if local else data, split, data_dir=data if local else None)
    columns = list(rows.column_names or [])
    if column not in columns:
        return None
    rows = rows.select_columns([c for c in ("file_name", column) if c in columns])
    out: dict[str, str] = {}
    for i, row in enumerate(rows):
        speaker = row.get(column)
        if speaker is not None and str(speaker).strip():
            out[str(row.get("file_name") or f"row {i + 1}")] = str(speaker)
    return out


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
                    "or DTW distance); a hit has the same label. Prints MAP and precision@k per method, the "
                    "same-different average precision over all pairs of segments (AP; 'AP cross-speaker' over the "
                    "pairs of two different speakers, n/a without a speaker column) and the scoring time per "
                    "pair (µs/pair).")
    ap.add_argument("--ckpt", action="append", default=[], metavar="[NAME=]CKPT",
                    help="autoencoder checkpoint (repeat for several; NAME labels its table row)")
    ap.add_argument("--data", default="../shared/data/fsdd", help="labelled audio: local copy or hub id")
    ap.add_argument("--split", default="test")
    ap.add_argument("--label-column", default="label", help="the word label of each segment (a hit is the same "
                                                            "label)")
    ap.add_argument("--speaker-column", default="speaker",
                    help="speaker of each segment, when the data has it: cross-speaker AP and per-speaker CMVN "
                         "('' = ignore)")
    ap.add_argument("--audio-column", default="audio")
    ap.add_argument("--baselines", default=",".join(BASELINES),
                    help=f"comma-separated baselines to score too ({BASELINE_HELP}); empty for none")
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
        speaker_of = read_speakers(args.data, args.split, local, args.speaker_column)
        rows = evaluate_methods(segments_at, methods, args.k, device=args.device, baseline_rate=args.baseline_rate,
                                speaker_of=speaker_of)
    except DataError as e:
        fail("evaluate-retrieval", str(e))
    print(f"query-by-example retrieval on {args.data} [{args.split}]")
    print(markdown_table(rows, args.k))
    if any(r["ap_cross_speaker"] is None for r in rows):
        why = ("--speaker-column is empty" if not args.speaker_column
               else f"no {args.speaker_column!r} column" if speaker_of is None
               else "not every segment has a speaker" if any(r["speakers"] is None for r in rows)
               else "no two segments of one label from different speakers")
        print(f"AP cross-speaker n/a: {why}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"data": args.data, "split": args.split, "rows": rows}, indent=2) + "\n")
        print(f"[rnnlab] rows written to {args.json}", file=sys.stderr)
    return 0
