"""Data path at corpus scale: peak memory growth and time to the first batch of SpeechDataModule vs corpus size.

Usage:
    python -m pipelines.commands.bench.data_scale [--sizes 10000 30000 100000] [--ranks 2] [--workdir DIR]
        [--out runs/bench/data-scale.json]

For each size it writes a hub-shaped LibriSpeech snapshot (``clean/train.100/*.parquet`` with the README
``configs:`` block; columns file, audio {bytes, path} of FLAC, text, speaker_id, chapter_id, id; no duration
column), then loads it through the real ``SpeechDataModule`` as the LibriSpeech preset does (``validate:
false``, durations from the audio headers) in fresh processes: once cold (prepares the Arrow cache and reads
every header, then caches the durations), once warm, and as ``ranks`` concurrent processes (each its own rank of
the sampler). Each process reports its private memory growth (peak ``RssAnon`` over the process's level after
imports, sampled every 5 ms), its peak total RSS growth (which also counts pages of the memory-mapped Arrow file
it touched: shared, reclaimable page cache) and the seconds from constructing the DataModule to its first
training batch.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG, TRAIN, VAL = "clean", "train.100", "validation"
_WORDS = ("the of and to a in that he was it his i with as had for you but be on not she at by which her this "
          "have from all they were my me him so one said when were there their what will would no if into").split()


def write_corpus(root: str | os.PathLike, n: int, *, n_val: int = 200, seconds: float = 0.2, rate: int = 8000,
                 shard_rows: int = 25_000, seed: int = 0) -> Path:
    """A hub-shaped snapshot with ``n`` training rows of short noise clips (FLAC bytes in the audio cells).

    A pool of clips is encoded once and reused, so 100,000 rows take seconds; every row still carries its own
    bytes in the Parquet and Arrow files, as a real corpus does.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    pool = []
    for k in range(64):
        buf = io.BytesIO()
        clip = rng.uniform(-0.3, 0.3, int(seconds * rate * (1 + (k % 4) / 4))).astype(np.float32)
        sf.write(buf, clip, rate, format="FLAC")
        pool.append(buf.getvalue())
    features = {"file": {"dtype": "string", "_type": "Value"}, "audio": {"sampling_rate": rate, "_type": "Audio"},
                "text": {"dtype": "string", "_type": "Value"}, "speaker_id": {"dtype": "int64", "_type": "Value"},
                "chapter_id": {"dtype": "int64", "_type": "Value"}, "id": {"dtype": "string", "_type": "Value"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, rows in ((TRAIN, n), (VAL, n_val)):
        folder = root / CONFIG / split
        folder.mkdir(parents=True, exist_ok=True)
        for shard, start in enumerate(range(0, rows, shard_rows)):
            idx = np.arange(start, min(rows, start + shard_rows))
            ids = [f"{19 + i % 200}-{i // 200}-{i:06d}" for i in idx]
            texts = [" ".join(_WORDS[j] for j in rng.integers(0, len(_WORDS), 3 + i % 8)).upper() for i in idx]
            audio = pa.StructArray.from_arrays(
                [pa.array([pool[i % len(pool)] for i in idx], pa.binary()), pa.array([f"{u}.flac" for u in ids])],
                names=["bytes", "path"])
            table = pa.table({"file": [f"{u}.flac" for u in ids], "audio": audio, "text": texts,
                              "speaker_id": (19 + idx % 200).astype(np.int64), "chapter_id": (idx // 200).astype(np.int64),
                              "id": ids}).replace_schema_metadata(meta)
            # Small row groups, as the hub's parquet conversion writes for audio (readers decode a group at once).
            pq.write_table(table, folder / f"{shard:04d}.parquet", use_dictionary=False, row_group_size=500)
    configs = "".join(f"  - split: {s}\n    path: {CONFIG}/{s}/*.parquet\n" for s in (TRAIN, VAL))
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {CONFIG}\n  data_files:\n{configs}---\n"
                                    "# Generated LibriSpeech-shaped corpus (noise) for the data-scale benchmark\n")
    return root


def _status() -> dict[str, int]:
    """``VmRSS``/``RssAnon``/``VmHWM`` of this process in bytes (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _child(root: str, rank: int, world: int) -> dict:
    """One process: DataModule over ``root``, setup, first training batch of ``rank``; prints its numbers."""
    import threading
    from types import SimpleNamespace

    import datasets  # noqa: F401 - imported before the baseline, as a training process has it
    import lightning  # noqa: F401

    from data.speech import SpeechDataModule

    base = _status()
    peak = {"anon": base["RssAnon"]}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], _status()["RssAnon"])
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    dm = SpeechDataModule(dataset=None, data_dir=root, config_name=CONFIG, train_split=TRAIN, val_split=VAL,
                          test_split=VAL, duration_column=None, validate=False, cache_audio=False,
                          min_duration=0.05, batch_size=32, num_workers=0)
    dm.setup("fit")
    t_setup = time.perf_counter() - t0
    # The loaders read world size and rank from the trainer: a stand-in gives this process its rank.
    progress = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(
        current=SimpleNamespace(processed=0))))
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0, fit_loop=progress)
    batch = next(iter(dm.train_dataloader()))
    t_first = time.perf_counter() - t0
    stop.set()
    sampler.join()
    end = _status()
    peak["anon"] = max(peak["anon"], end["RssAnon"])
    return {"rank": rank, "world": world, "train_utterances": len(dm.datasets["train"]),
            "batch_size": len(batch["ids"]), "setup_s": round(t_setup, 2), "first_batch_s": round(t_first, 2),
            "anon_growth_mb": round((peak["anon"] - base["RssAnon"]) / 2**20, 1),
            "rss_growth_mb": round((end["VmHWM"] - base["VmRSS"]) / 2**20, 1),
            "baseline_rss_mb": round(base["VmRSS"] / 2**20, 1)}


def _spawn(root: Path, cache: Path, ranks: int) -> list[dict]:
    """``ranks`` concurrent child processes (one per rank); their reports in rank order."""
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache / "datasets"), HF_HOME=str(cache / "hf"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.commands.bench.data_scale", "--child", str(root),
                               str(r), str(ranks)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(ranks)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"data-scale child failed ({p.returncode}): {stderr.strip()[-600:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


TITLE = "8. data path at scale: RSS growth and time to the first batch against corpus size"


def run(ctx) -> dict:
    """The ``data-scale`` section of ``rnnlab bench`` (``--scale-sizes``; 2 simulated ranks)."""
    return measure(tuple(ctx.args.scale_sizes), ranks=2)


def show(result: dict) -> None:
    print(format_table(result))


def measure(sizes=(10000, 30000, 100000), ranks: int = 2, workdir: str | os.PathLike | None = None) -> dict:
    """Generates each corpus and measures cold, warm and ``ranks``-process loading; returns the results."""
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="rnnlab-data-scale-") if own else workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in sizes:
            root = work / f"corpus-{n}"
            cache = work / f"cache-{n}"
            shutil.rmtree(cache, ignore_errors=True)  # cold means cold: no Arrow cache, no duration cache
            t0 = time.perf_counter()
            if not (root / "README.md").is_file():
                write_corpus(root, n)
            gen_s = time.perf_counter() - t0
            parquet_mb = sum(p.stat().st_size for p in root.rglob("*.parquet")) / 2**20
            for mode, k in (("cold, 1 rank", 1), ("warm, 1 rank", 1), (f"warm, {ranks} ranks", ranks)):
                for rep in _spawn(root, cache, k):
                    results.append({"rows": n, "mode": mode, **rep})
            arrow_mb = sum(p.stat().st_size for p in cache.rglob("*.arrow")) / 2**20
            for r in results:
                if r["rows"] == n:
                    r.update(parquet_mb=round(parquet_mb, 1), arrow_mb=round(arrow_mb, 1), generate_s=round(gen_s, 1))
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return {"sizes": list(sizes), "ranks": ranks, "results": results,
            "target": {"anon_growth_mb_at_100k": 100, "first_batch": "seconds"}}


def format_table(result: dict) -> str:
    """A Markdown table: one line per (corpus size, mode, rank)."""
    head = ("| rows | parquet MB | mode | rank | kept | setup s | first batch s | private (anon) growth MB "
            "| total RSS growth MB |")
    lines = [head, "|" + "---|" * 9]
    for r in result["results"]:
        lines.append(f"| {r['rows']:,} | {r['parquet_mb']:.0f} | {r['mode']} | {r['rank']}/{r['world']} | "
                     f"{r['train_utterances']:,} | {r['setup_s']:.1f} | {r['first_batch_s']:.1f} | "
                     f"{r['anon_growth_mb']:.0f} | {r['rss_growth_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    ap = argparse.ArgumentParser(prog="python -m pipelines.commands.bench.data_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="keep corpora and caches here (default: a temp dir, removed)")
    ap.add_argument("--out", default="runs/bench/data-scale.json")
    a = ap.parse_args(argv)
    res = measure(tuple(a.sizes), a.ranks, a.workdir)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(format_table(res))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
