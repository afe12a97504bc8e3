"""``rnnlab bench`` section ``data``: data pipeline throughput (decode + resample + collate + log-mel frontend) vs
the model's training step throughput (from the ``train`` section, or one run of it)."""

from __future__ import annotations

import statistics
import time

import torch

from pipelines.commands.bench import train
from pipelines.commands.bench.common import TARGETS, lightning_quiet, print_notes, table
from pipelines.commands.bench.models import build_model

TITLE = "3. data pipeline vs model step throughput"


def run(ctx) -> dict:
    """Decode + resample + collate (DataLoader, configured workers) + frontend (eval, no grad) on CPU."""
    a = ctx.args
    dm = ctx.dm
    frontend = build_model(a.model_size).model.frontend.eval()
    n_batches = max(1, a.data_batches)
    loader = dm.train_dataloader()
    sample_rate = dm.hparams.sample_rate

    def load(limit: int) -> tuple[float, int, float]:
        utts, samples = 0, 0
        t0 = time.perf_counter()
        with torch.no_grad():
            for k, batch in enumerate(loader):
                if k == limit:
                    break
                if batch is None:
                    continue
                frontend(batch["waveforms"], batch["lengths"])
                utts += len(batch["ids"])
                samples += int(batch["lengths"].sum())
        return time.perf_counter() - t0, utts, samples / sample_rate

    with lightning_quiet():
        load(1)  # warm-up (and worker start-up with persistent workers)
        times = [load(n_batches) for _ in range(a.repeats)]
    sec = statistics.median(t for t, _, _ in times)
    _, utts, audio_s = times[0]
    rates = {"utterances_per_s": utts / sec, "audio_s_per_s": audio_s / sec}
    source_rates = sorted({_source_rate(u.audio) for u in dm.datasets["train"].utterances[:50]})
    out = {"workers": a.workers, "batches": n_batches, "utterances": utts, "audio_s": audio_s,
           "seconds": [t for t, _, _ in times], "median_s": sec, **rates, "cache_audio": False,
           "source_sample_rates": source_rates, "model_sample_rate": sample_rate,
           "resampled": any(r != sample_rate for r in source_rates),
           "note": "the frontend also runs inside the model step (features are computed in the model)",
           "vs_model": {}}
    trained = ctx.results.get("train")
    if trained is None:
        print("[rnnlab] data: the train section was not selected; timing model steps once for the ratio")
        trained = train.run(ctx, repeats=1)
        out["model_throughput_from"] = "train section run once for this ratio"
    for p, res in trained["precision"].items():
        if "lightning" not in res:
            out["vs_model"][p] = {"skipped": res.get("skipped", "not measured")}
            continue
        model_utts = res["lightning"]["utterances_per_s"]
        out["vs_model"][p] = {"model_utterances_per_s": model_utts,
                              "ratio_data_over_model": rates["utterances_per_s"] / model_utts,
                              "target": TARGETS["data_ratio"],
                              "meets_target": rates["utterances_per_s"] / model_utts >= TARGETS["data_ratio"]}
    return out


def show(r: dict) -> None:
    """Prints the section's table."""
    rs = "source audio at " + "/".join(str(x) for x in r["source_sample_rates"]) + " Hz" + \
         ("" if r["resampled"] else " (= model rate, nothing to resample)")
    print(f"{r['batches']} bucketed batches, {r['workers']} worker(s), decode + resample + collate + frontend; {rs}")
    rows, notes = [["data pipeline", r["median_s"], r["utterances_per_s"], r["audio_s_per_s"], ""]], []
    for p, v in r["vs_model"].items():
        if "skipped" in v:
            notes.append(f"model step ({p}): skipped ({v['skipped']})")
        else:
            rows.append([f"model step, Lightning ({p})", "", v["model_utterances_per_s"], "",
                         v["ratio_data_over_model"]])
    print(table(["throughput", "s", "utt/s", "audio s/s", f"data/model (target >= {TARGETS['data_ratio']:g})"],
                rows))
    print_notes(notes)


def _source_rate(ref) -> int:
    """The sample rate of the file behind an AudioRef (0 when it cannot be read)."""
    import soundfile as sf

    try:
        return int(sf.info(ref.open()).samplerate)
    except Exception:  # noqa: BLE001
        return 0
