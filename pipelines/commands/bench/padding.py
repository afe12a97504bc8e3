"""``rnnlab bench`` section ``padding``: padding fraction of random vs length-bucketed vs sorted batches, on a
LibriSpeech-like length distribution and on the benchmark's training data."""

from __future__ import annotations

import math
import statistics

import torch

from pipelines.commands.bench.common import TARGETS, table
from pipelines.inference.errors import first_line

TITLE = "4. padding fraction: random vs length-bucketed batches"

# LibriSpeech train-clean-100 has 28,539 utterances (100.6 h: mean 12.7 s, most between 2 and 17 s, max 24.5 s).
# The padding section draws as many durations from a lognormal with median 12.3 s and sigma 0.35 (natural log),
# redrawn outside [1.0, 24.525] s: mean 12.66 s, 85% between 2 and 17 s, 5th/95th percentiles 6.8 / 20.4 s, 100.4 h.
LIBRISPEECH_LIKE = {"utterances": 28539, "median_s": 12.3, "sigma": 0.35, "min_s": 1.0, "max_s": 24.525, "seed": 0}


def librispeech_like_durations(utterances: int = LIBRISPEECH_LIKE["utterances"], *,
                               median_s: float = LIBRISPEECH_LIKE["median_s"], sigma: float = LIBRISPEECH_LIKE["sigma"],
                               min_s: float = LIBRISPEECH_LIKE["min_s"], max_s: float = LIBRISPEECH_LIKE["max_s"],
                               seed: int = LIBRISPEECH_LIKE["seed"]) -> list[float]:
    """Durations (s) drawn from a lognormal (``median_s``, ``sigma``), redrawn outside ``[min_s, max_s]``."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(0, dtype=torch.float64)
    while out.numel() < utterances:
        x = torch.exp(math.log(median_s) + sigma * torch.randn(2 * utterances, generator=g, dtype=torch.float64))
        out = torch.cat([out, x[(x >= min_s) & (x <= max_s)]])
    return out[:utterances].tolist()


def padding_fractions(lengths: list[int], *, batch_size: int | None, max_tokens: int | None,
                      epochs: int = 3) -> dict:
    """Mean padding fraction over ``epochs`` of random batches, length-bucketed batches (the DataModule's
    sampler, 100 batches per bucket) and fully sorted batches (the lower bound)."""
    from data.samplers import LengthBucketBatchSampler

    kinds = {"random": {"shuffle": True, "bucket_size_multiplier": 1},
             "bucketed": {"shuffle": True, "bucket_size_multiplier": 100},
             "sorted": {"shuffle": False, "bucket_size_multiplier": 1}}
    out = {}
    for name, kw in kinds.items():
        s = LengthBucketBatchSampler(lengths=lengths, batch_size=batch_size, max_tokens=max_tokens, seed=0,
                                     num_replicas=1, rank=0, **kw)
        fracs, sizes = [], []
        for epoch in range(epochs if kw["shuffle"] else 1):
            s.set_epoch(epoch)
            batches = s.batches()
            fracs.append(s.padding_fraction(batches))
            sizes.append(len(lengths) / len(batches))
        out[name] = {"padding_fraction": statistics.mean(fracs), "batches": len(batches),
                     "mean_batch_size": statistics.mean(sizes)}
    return out


def run(ctx) -> dict:
    """Padding fractions of random / bucketed / sorted batches (LibriSpeech-like lengths and the train data)."""
    a = ctx.args
    n = 2000 if a.quick else LIBRISPEECH_LIKE["utterances"]
    durs = librispeech_like_durations(n)
    rate = 16000
    lengths = [int(d * rate) for d in durs]
    t = torch.tensor(durs)
    dist = {**LIBRISPEECH_LIKE, "utterances": n, "mean_s": float(t.mean()), "max_drawn_s": float(t.max()),
            "min_drawn_s": float(t.min()), "p5_s": float(t.quantile(0.05)), "p95_s": float(t.quantile(0.95)),
            "fraction_2_to_17_s": float(((t >= 2) & (t <= 17)).float().mean()), "hours": float(t.sum()) / 3600}
    max_tokens = int(a.max_batch_seconds * rate)
    out = {"distribution": dist, "batch_size": a.batch, "max_batch_seconds": a.max_batch_seconds,
           "lengths_in": "samples at 16 kHz", "epochs_averaged": 3, "librispeech_like": {}}
    out["librispeech_like"][f"batch_size={a.batch}"] = padding_fractions(lengths, batch_size=a.batch, max_tokens=None)
    out["librispeech_like"][f"max_tokens={a.max_batch_seconds:g}s"] = padding_fractions(
        lengths, batch_size=None, max_tokens=max_tokens)
    for v in out["librispeech_like"].values():
        v["bucketed"]["meets_target"] = v["bucketed"]["padding_fraction"] < TARGETS["padding_bucketed"]
    try:
        train_lengths = ctx.dm.datasets["train"].lengths
        out["train_data"] = {"data": dict(ctx.data_info),
                             f"batch_size={a.batch}": padding_fractions(train_lengths, batch_size=a.batch,
                                                                        max_tokens=None)}
    except Exception as e:  # noqa: BLE001 - the synthetic distribution above is the section's main result
        out["train_data"] = {"skipped": first_line(e)}
    return out


def show(r: dict) -> None:
    """Prints the section's table."""
    d = r["distribution"]
    print(f"LibriSpeech-like lengths: {d['utterances']:,} utterances, lognormal median {d['median_s']} s, sigma "
          f"{d['sigma']}, within [{d['min_s']}, {d['max_s']}] s: mean {d['mean_s']:.2f} s, 5-95% "
          f"{d['p5_s']:.1f}-{d['p95_s']:.1f} s, {d['fraction_2_to_17_s']:.0%} in 2-17 s, {d['hours']:.1f} h")
    groups = [("LibriSpeech-like", r["librispeech_like"].items()),
              ("training data", [(k, v) for k, v in r.get("train_data", {}).items() if k.startswith("batch_size")])]
    rows = [[f"{where}, {name}, {kind}", v[kind]["padding_fraction"], v[kind]["batches"], v[kind]["mean_batch_size"]]
            for where, items in groups for name, v in items for kind in ("random", "bucketed", "sorted")]
    print(table(["padding (mean of 3 epochs)", f"fraction (bucketed target < {TARGETS['padding_bucketed']:g})",
                 "batches", "utt/batch"], rows))
