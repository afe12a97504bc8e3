"""``rnnlab embed``: fixed-size vectors of speech segments from an audio autoencoder checkpoint, as Parquet.

Usage: rnnlab embed --ckpt CKPT FILE|DIR... --out F.parquet [--trim-db 30] [--batch-size 32] [--device cpu]

Writes one row per readable file (columns ``path``, ``vector``). Exit status 1 when some files could not be
read (each is named on stderr), 2 for an error to fix (see :mod:`pipelines.commands._common`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from pipelines.commands._common import ArgumentParser, at_least, fail, load_checkpoint, warn


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


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab embed", description="Embed speech segments with an audio autoencoder.")
    ap.add_argument("--ckpt", required=True, help="checkpoint of an autoencoder run")
    ap.add_argument("inputs", nargs="+", help="audio files or directories (searched recursively)")
    ap.add_argument("--out", required=True, help="output Parquet file (columns: path, vector)")
    ap.add_argument("--trim-db", type=float, default=30.0,
                    help="trim leading/trailing audio quieter than this (dB under the peak), as in training; 0 = off")
    ap.add_argument("--batch-size", type=at_least(1), default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from data.audio import AudioError, AudioRef
    from data.words import decode_segment
    from pipelines.commands._speech import audio_inputs

    model = load_checkpoint("embed", args.ckpt, kind="autoencoder", device=args.device)
    entries, skipped = audio_inputs("embed", args.inputs)
    files, failed = [f for f in entries if f not in skipped], len(skipped)
    wavs, ok = [], []
    for f in files:
        try:
            wavs.append(decode_segment(AudioRef(path=str(f)), model.sample_rate, args.trim_db or None))
            ok.append(str(f))
        except AudioError as e:
            failed += 1
            warn("embed", f"skipped {e}")
    if not ok:
        fail("embed", f"no readable audio among {len(files)} file(s)")
    t0 = time.perf_counter()
    vectors = model.embed_waveforms(wavs, batch_size=args.batch_size)
    out = write_embeddings(ok, vectors, args.out)
    print(f"[rnnlab] {len(ok)} embeddings of size {vectors.size(1)} in {time.perf_counter() - t0:.2f}s -> {out}"
          + (f" ({failed} skipped)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
