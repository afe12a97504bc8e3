"""``rnnlab bench``: the project's benchmark, every comparison side by side in one process (shared machines are
noisy, so the ratios matter more than the absolute numbers).

Sections (``--only`` picks some, in this order):

- ``train``: training throughput of :class:`~pipelines.ctc.CTCSpeechRecognizer` through ``lightning.Trainer.fit``
  (fixed steps, no validation, logger or checkpointing) vs a bare PyTorch loop (same model, optimiser and gradient
  clipping) on the same in-memory batches; repetitions alternate and the median counts.
- ``flops``: achieved FLOP rate of the encoder's training step (LSTM FLOPs counted analytically) vs a dense
  ``torch.mm`` on the same device.
- ``data``: data pipeline throughput (decode + resample + collate + log-mel frontend) vs the model's step throughput.
- ``padding``: padding fraction of random vs length-bucketed batches on a LibriSpeech-like length distribution.
- ``rtf``: batch-1 CPU real-time factor of the default CTC model: greedy, prefix beam search, exported backends.
- ``memory``: peak memory of a training step of the default CTC model, measured in a fresh process.
- ``encoder``: exact length handling (``reverse``, ``packed``) vs torch's padded bidirectional ``nn.LSTM``
  (:func:`bench_encoder`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import inspect
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "arctic_kathleen"
SECTIONS = ("train", "flops", "data", "padding", "rtf", "memory", "encoder")
MODEL_CONFIGS = {"tiny": ("tiny/ctc.yaml",), "default": ("ctc.yaml",), "arctic": ("ctc.yaml", "ctc-arctic.yaml")}
GATES = {"lstm": 4, "gru": 3, "elman": 1}
TARGETS = {"train_ratio": 0.95, "data_ratio": 3.0, "padding_bucketed": 0.10, "rtf_greedy": 0.02, "rtf_beam": 0.1}

# LibriSpeech train-clean-100 has 28,539 utterances (100.6 h: mean 12.7 s, most between 2 and 17 s, max 24.5 s).
# The padding section draws as many durations from a lognormal with median 12.3 s and sigma 0.35 (natural log),
# redrawn outside [1.0, 24.525] s: mean 12.66 s, 85% between 2 and 17 s, 5th/95th percentiles 6.8 / 20.4 s, 100.4 h.
LIBRISPEECH_LIKE = {"utterances": 28539, "median_s": 12.3, "sigma": 0.35, "min_s": 1.0, "max_s": 24.525, "seed": 0}


# -- small helpers -------------------------------------------------------------------------------------------------


def _time(fn, *, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _notes(lines: list[str]) -> None:
    for line in lines:
        print(f"  {line}")


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.3g}" if abs(v) < 0.01 else f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


@contextlib.contextmanager
def _no_progress_bars():
    import datasets

    was_disabled = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _batch_stats(batches: list[dict], sample_rate: int) -> tuple[int, float]:
    utts = sum(len(b["ids"]) for b in batches)
    return utts, sum(int(b["lengths"].sum()) for b in batches) / sample_rate


@contextlib.contextmanager
def _quiet():
    """Keeps Lightning's info lines and known harmless warnings out of the tables."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "datasets")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*have no logger configured.*", ".*treespec.*",
                        ".*no `val_dataloader`.*", ".*validation_step.*", ".*GPU available but not used.*",
                        ".*exceeds the number of.*", ".*LeafSpec.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


# -- models from the shipped configs -------------------------------------------------------------------------------


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_configs(names: tuple[str, ...]) -> dict:
    import yaml

    cfg: dict = {}
    for name in names:
        cfg = _merge(cfg, yaml.safe_load((CONFIG_DIR / name).read_text()) or {})
    return cfg


def model_config(size: str) -> dict:
    """``model.init_args`` of the ``tiny`` (configs/tiny/ctc.yaml), ``default`` (ctc.yaml) or ``arctic``
    (ctc.yaml + ctc-arctic.yaml) CTC model."""
    if size not in MODEL_CONFIGS:
        raise ValueError(f"model size must be one of {', '.join(MODEL_CONFIGS)}, got {size!r}")
    return _read_configs(MODEL_CONFIGS[size])["model"]["init_args"]


def gradient_clipping() -> tuple[float | None, str]:
    """``(gradient_clip_val, gradient_clip_algorithm)`` from configs/defaults.yaml."""
    trainer = _read_configs(("defaults.yaml",)).get("trainer", {})
    return trainer.get("gradient_clip_val"), trainer.get("gradient_clip_algorithm", "norm")


def _factory(spec: dict | None):
    if not spec:
        return None
    module, _, name = spec["class_path"].rpartition(".")
    return functools.partial(getattr(importlib.import_module(module), name), **(spec.get("init_args") or {}))


def build_model(size: str, seed: int = 0):
    """A freshly initialised CTCSpeechRecognizer of the given config size (character vocabulary)."""
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    args = dict(model_config(size))
    optimizer = _factory(args.pop("optimizer", None)) or torch.optim.Adam
    scheduler = _factory(args.pop("lr_scheduler", None))
    torch.manual_seed(seed)
    return CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), optimizer=optimizer, lr_scheduler=scheduler, **args)


def _describe(model) -> dict:
    hp = model.hparams
    keys = ("n_mels", "stack_frames", "cell", "hidden_size", "num_layers", "bidirectional", "dropout",
            "spec_augment", "length_handling")
    out = {k: hp[k] for k in keys if k in hp}
    out["parameters"] = sum(p.numel() for p in model.parameters())
    return out


def _model_name(model) -> str:
    hp = model.hparams
    bi = "Bi" if hp.get("bidirectional", True) else ""
    return f"{hp['num_layers']}x {bi}{hp.get('cell', 'lstm').upper()}-{hp['hidden_size']}, stack {hp['stack_frames']}"


def _optimizers(model):
    cfg = model.configure_optimizers()
    if isinstance(cfg, dict):
        sched = cfg.get("lr_scheduler")
        return cfg["optimizer"], (sched["scheduler"] if isinstance(sched, dict) else sched)
    return cfg, None


def _autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, batch: dict, optimizer, *, clip_val: float | None, clip_algorithm: str = "norm",
               device: torch.device | None = None, precision: str = "32-true") -> torch.Tensor:
    """One bare training step of a CTCSpeechRecognizer: forward, CTC loss (as in its ``_shared_step``), backward,
    gradient clipping, optimiser step."""
    from modules.ctc import ctc_loss_checked, min_ctc_frames_padded

    device = device or batch["waveforms"].device
    with _autocast(device, precision):
        log_probs, out_lengths = model(batch["waveforms"], batch["lengths"])
        need = min_ctc_frames_padded(batch["targets"], batch["target_lengths"])
        loss, _ = ctc_loss_checked(log_probs, out_lengths, batch["targets"], batch["target_lengths"],
                                   blank=model.tokenizer.blank, min_frames=need)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_val:
        if clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_val)
    optimizer.step()
    return loss


# -- encoder section (the original `rnnlab bench`) -----------------------------------------------------------------


def bench_encoder(*, layers: int = 4, hidden: int = 320, input_size: int = 240, batch: int = 16,
                  max_frames: int = 300, iters: int = 3, warmup: int = 1, seed: int = 0,
                  device: torch.device | str = "cpu") -> dict:
    """Seconds per fwd+bwd batch of padded ``nn.LSTM`` vs RecurrentEncoder ``reverse`` and ``packed``.

    Runs on ``device`` (CPU or GPU).
    """
    from modules.encoders import RecurrentEncoder

    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(max_frames * 0.7), max_frames + 1, (batch,), generator=g)
    lengths[0] = max_frames
    x = torch.randn(batch, max_frames, input_size, generator=g).to(device)
    lengths = lengths.to(device)
    results = {}
    baseline = torch.nn.LSTM(input_size, hidden, num_layers=layers, bidirectional=True, batch_first=True).to(device)

    def timed(fn) -> float:
        def step():
            fn()
            _sync(device)
        _sync(device)
        return _time(step, warmup=warmup, iters=iters)

    def run_baseline():
        out, _ = baseline(x)
        out.sum().backward()

    results["nn.LSTM padded (inexact)"] = timed(run_baseline)
    for mode in ("reverse", "packed"):
        enc = RecurrentEncoder(input_size=input_size, hidden_size=hidden, num_layers=layers, cell="lstm",
                               bidirectional=True, length_handling=mode).to(device)

        def run(enc=enc):
            out, _ = enc(x, lengths)
            out.sum().backward()

        results[f"RecurrentEncoder {mode} (exact)"] = timed(run)
    base = results["nn.LSTM padded (inexact)"]
    return {"config": {"layers": layers, "hidden": hidden, "input_size": input_size, "batch": batch,
                       "max_frames": max_frames, "threads": torch.get_num_threads(), "device": str(device)},
            "seconds_per_batch": results,
            "utterances_per_s": {k: batch / v for k, v in results.items()},
            "ratio_vs_padded_nn_lstm": {k: base / v for k, v in results.items()}}


# -- analytic FLOPs ------------------------------------------------------------------------------------------------


def encoder_training_flops(encoder, frame_lengths: torch.Tensor, padded_frames: int) -> tuple[float, float]:
    """``(valid, padded)`` FLOPs of one training step (forward + backward) of a fused RecurrentEncoder.

    Per layer, direction and time step: ``2 * G * H * (I + H)`` for the forward matmuls (G gates: 4 LSTM, 3 GRU,
    1 Elman) and twice that for the backward pass, i.e. ``2 * G * H * (I + H) * 3``. ``valid`` counts each
    utterance's own frames, ``padded`` the batch's ``B * T`` (what the ``reverse`` kernels execute: both
    directions run over the padded length). Biases, nonlinearities and the projection are left out.
    """
    gates = GATES[encoder.cell]
    lengths = frame_lengths.detach().cpu().long()
    steps = int(padded_frames)
    batch = int(lengths.numel())
    valid = padded = 0.0
    for index, layer in enumerate(encoder.layers):
        for rnn in layer:
            per_step = 2 * gates * rnn.hidden_size * (rnn.input_size + rnn.hidden_size) * 3
            valid += per_step * float(lengths.sum())
            padded += per_step * batch * steps
        if index < encoder.num_layers - 1 and encoder._halves_after(index):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            steps = (steps + 1) // 2
    return valid, padded


def matmul_rate(device: torch.device, *, n: int = 2048, dtype: torch.dtype = torch.float32, iters: int = 5) -> dict:
    """Measured FLOP/s of a dense ``n x n`` ``torch.mm`` (median of ``iters`` timings after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": sec, "flops": 2.0 * n ** 3,
            "flop_per_s": 2.0 * n ** 3 / sec}


# -- LibriSpeech-like lengths --------------------------------------------------------------------------------------


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


# -- the benchmark run ---------------------------------------------------------------------------------------------


class Bench:
    """Shared state of one ``rnnlab bench`` run (data, batches, results), each section a method."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        self.precisions = ["32-true"] + (["bf16-mixed"] if self.device.type == "cuda" else [])
        self.results: dict = {}
        self._dm = None
        self._batches: list[dict] | None = None
        self.data_info: dict = {}

    # -- data ---------------------------------------------------------------------------------------------------
    @property
    def dm(self):
        """The SpeechDataModule over the benchmark's data (ARCTIC or another audiofolder, else synthetic)."""
        if self._dm is None:
            from data.speech import SpeechDataModule

            a = self.args
            common = {"batch_size": a.batch, "num_workers": a.workers, "cache_audio": False, "bucketing": True,
                      "seed": 0, "train_split": "train", "val_split": "validation", "test_split": "validation"}
            data_dir = Path(a.data_dir) if a.data_dir else DEFAULT_DATA_DIR
            if data_dir.is_dir():
                dm = SpeechDataModule(dataset=None, data_dir=str(data_dir), **common)
                self.data_info = {"source": "audiofolder", "path": str(data_dir)}
            elif a.quick:
                from data.synth import build_corpus

                root = build_corpus(self.tmp / "corpus", n_train=16, n_validation=4, n_test=2, seed=0, workers=1,
                                    progress=False)
                dm = SpeechDataModule(dataset=None, data_dir=str(root), **common)
                self.data_info = {"source": "synthetic (data.synth.build_corpus, 16/4/2 utterances)",
                                  "path": str(root)}
            else:
                dm = SpeechDataModule(dataset="embedded", **common)
                self.data_info = {"source": "embedded synthetic corpus (3000/200/200, cached)"}
            with _quiet(), _no_progress_bars():
                dm.setup("fit")
            rate = dm.hparams.sample_rate
            train, val = dm.datasets["train"], dm.datasets["val"]
            self.data_info.update({
                "train_utterances": len(train), "validation_utterances": len(val), "sample_rate": rate,
                "train_hours": sum(u.duration for u in train.utterances) / 3600,
                "mean_train_duration_s": statistics.mean(u.duration for u in train.utterances)})
            self._dm = dm
        return self._dm

    def train_batches(self) -> list[dict]:
        """The first ``--steps`` length-bucketed training batches (epoch 0), decoded once and kept in memory."""
        if self._batches is None:
            loader = self.dm.train_dataloader()
            batches = []
            for batch in loader:
                if batch is not None:
                    batches.append(batch)
                if len(batches) == self.args.steps:
                    break
            if len(batches) < self.args.steps:
                print(f"[rnnlab] only {len(batches)} training batches available (asked for {self.args.steps})")
            self._batches = batches
        return self._batches

    def _loader(self, batches: list[dict]):
        from torch.utils.data import DataLoader

        return DataLoader(_Batches(batches), batch_size=None, collate_fn=_identity, num_workers=0)

    # -- section 1 ----------------------------------------------------------------------------------------------
    def train(self, repeats: int | None = None) -> dict:
        """Lightning ``Trainer.fit`` vs a bare loop on the same batches, alternating, median of the repetitions."""
        import lightning as L

        a = self.args
        repeats = a.repeats if repeats is None else repeats
        batches = self.train_batches()
        steps = len(batches)
        rate = self.dm.hparams.sample_rate
        utts, audio_s = _batch_stats(batches, rate)
        model = build_model(a.model_size)
        initial = copy.deepcopy(model.state_dict())
        clip_val, clip_algo = gradient_clipping()
        loader = self._loader(batches)
        device = self.device
        timer_cls = _fit_timer_class()

        def bare(n: int, precision: str) -> dict:
            model.load_state_dict(initial)
            model.to(device).train()
            opt, sched = _optimizers(model)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _, batch in zip(range(n), loader, strict=False):
                train_step(model, _to_device(batch, device), opt, clip_val=clip_val, clip_algorithm=clip_algo,
                           device=device, precision=precision)
            if sched is not None:
                sched.step()  # Lightning steps the (per-epoch) scheduler once at the end of its one epoch
            _sync(device)
            return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}

        def lightning(n: int, precision: str) -> dict:
            model.load_state_dict(initial)
            timer = timer_cls(device)
            trainer = L.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision, max_epochs=1,
                max_steps=n, limit_train_batches=n, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                gradient_clip_val=clip_val, gradient_clip_algorithm=clip_algo, use_distributed_sampler=False,
                callbacks=[timer])
            t0 = time.perf_counter()
            trainer.fit(model, train_dataloaders=loader)
            wall = time.perf_counter() - t0
            if timer.steps != n:
                raise RuntimeError(f"Lightning ran {timer.steps} steps, expected {n}")
            return {"seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds, "fit_wall_s": wall}

        out = {"model": {"size": a.model_size, "name": _model_name(model), **_describe(model)},
               "data": dict(self.data_info), "batch_size": a.batch, "steps": steps, "warmup_steps": a.warmup_steps,
               "repeats": repeats, "utterances": utts, "audio_s": audio_s,
               "gradient_clipping": {"value": clip_val, "algorithm": clip_algo},
               "optimizer": type(_optimizers(model)[0]).__name__,
               "timing": "wall clock; Lightning: on_train_start to on_train_end (fit_wall_s: the whole fit call); "
                         "bare: the loop; both over the same in-memory batches through the same DataLoader; "
                         "cpu_seconds: process CPU time over the same span",
               "precision": {}}
        with _quiet():
            for precision in ("32-true", "bf16-mixed"):
                if precision not in self.precisions:
                    out["precision"][precision] = {"skipped": "no CUDA device: bf16-mixed runs on GPU only"}
                    continue
                if a.warmup_steps:
                    bare(min(a.warmup_steps, steps), precision)
                    lightning(min(a.warmup_steps, steps), precision)
                runs: dict[str, list[dict]] = {"bare": [], "lightning": []}
                order = []
                for r in range(repeats):
                    pair = ("bare", "lightning") if r % 2 == 0 else ("lightning", "bare")
                    for kind in pair:
                        runs[kind].append((bare if kind == "bare" else lightning)(steps, precision))
                        order.append(kind)
                res = {"order": order}
                for kind, rs in runs.items():
                    secs = [x["seconds"] for x in rs]
                    med = statistics.median(secs)
                    cpu = [x["cpu_seconds"] for x in rs]
                    res[kind] = {"seconds": secs, "median_s": med, "step_s": med / steps,
                                 "utterances_per_s": utts / med, "audio_s_per_s": audio_s / med,
                                 "cpu_seconds": cpu, "median_cpu_s": statistics.median(cpu)}
                    if kind == "lightning":
                        walls = [x["fit_wall_s"] for x in rs]
                        res[kind]["fit_wall_s"] = walls
                        res[kind]["median_fit_wall_s"] = statistics.median(walls)
                res["ratio_lightning_over_bare"] = res["lightning"]["utterances_per_s"] / res["bare"]["utterances_per_s"]
                res["ratio_including_fit_setup"] = res["bare"]["median_s"] / res["lightning"]["median_fit_wall_s"]
                res["ratio_cpu_time"] = res["bare"]["median_cpu_s"] / res["lightning"]["median_cpu_s"]
                res["target"] = TARGETS["train_ratio"]
                res["meets_target"] = res["ratio_lightning_over_bare"] >= TARGETS["train_ratio"]
                out["precision"][precision] = res
        return out

    def print_train(self, r: dict) -> None:
        print(f"model {r['model']['name']} ({r['model']['parameters']:,} parameters, {r['optimizer']}, clip "
              f"{r['gradient_clipping']['algorithm']} {r['gradient_clipping']['value']}), batch {r['batch_size']}, "
              f"{r['steps']} steps = {r['utterances']} utterances / {r['audio_s']:.1f} s of audio per repetition, "
              f"median of {r['repeats']}")
        rows, notes = [], []
        for p, res in r["precision"].items():
            if "skipped" in res:
                notes.append(f"{p}: skipped ({res['skipped']})")
                continue
            for kind in ("bare", "lightning"):
                x = res[kind]
                rows.append([f"{p} {kind}", x["median_s"], x["step_s"], x["utterances_per_s"], x["audio_s_per_s"],
                             res["ratio_lightning_over_bare"] if kind == "lightning" else 1.0])
            rows.append([f"{p} lightning incl. fit setup", res["lightning"]["median_fit_wall_s"], "", "", "",
                         res["ratio_including_fit_setup"]])
        print(_table(["training", "s/repetition", "s/step", "utt/s", "audio s/s",
                      f"lightning/bare (target >= {TARGETS['train_ratio']})"], rows))
        for p, res in r["precision"].items():
            if "ratio_cpu_time" in res:
                notes.append(f"{p}: lightning/bare by process CPU time {res['ratio_cpu_time']:.3f} (less sensitive "
                             f"to other jobs on the cores)")
        _notes(notes)

    # -- section 2 ----------------------------------------------------------------------------------------------
    def flops(self) -> dict:
        """Encoder fwd+bwd FLOP rate (analytic FLOPs / measured time) vs a dense matmul on the same device."""
        a = self.args
        batches = self.train_batches()[: a.flops_batches]
        model = build_model(a.model_size).to(self.device)
        frontend, encoder = model.model.frontend, model.model.encoder
        feats = []
        valid = padded = 0.0
        with torch.no_grad():
            frontend.eval()
            for b in batches:
                x, n = frontend(b["waveforms"].to(self.device), b["lengths"].to(self.device))
                feats.append((x, n))
                v, p = encoder_training_flops(encoder, n, x.size(1))
                valid, padded = valid + v, padded + p
        encoder.train()
        out = {"model": {"size": a.model_size, "name": _model_name(model)}, "batches": len(batches),
               "flops_per_pass": {"valid_frames": valid, "padded_frames": padded},
               "flop_formula": "per layer, direction and step: 2 * gates * H * (I + H) * 3 (forward 1x, backward 2x)",
               "frames": "valid: each utterance's own frames; padded: B x T per batch (executed by the reverse "
                         "kernels). The encoder's input needs no gradient, so the first layer's backward is a "
                         "little cheaper than counted.",
               "precision": {}}
        for precision in ("32-true", "bf16-mixed"):
            if precision not in self.precisions:
                out["precision"][precision] = {"skipped": "no CUDA device: bf16-mixed runs on GPU only"}
                continue

            def run(precision=precision, feats=feats):
                for x, n in feats:
                    encoder.zero_grad(set_to_none=True)
                    with _autocast(self.device, precision):
                        y, _ = encoder(x, n)
                    y.float().sum().backward()
                _sync(self.device)

            run(feats=feats[:1])  # warm-up
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            sec = statistics.median(times)
            dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
            mm = matmul_rate(self.device, n=a.matmul_size, dtype=dtype, iters=3 if a.quick else 5)
            res = {"encoder_seconds": times, "encoder_median_s": sec,
                   "achieved_flop_per_s_valid": valid / sec, "achieved_flop_per_s_padded": padded / sec,
                   "matmul": mm}
            res["fraction_of_matmul_valid"] = res["achieved_flop_per_s_valid"] / mm["flop_per_s"]
            res["fraction_of_matmul_padded"] = res["achieved_flop_per_s_padded"] / mm["flop_per_s"]
            train = self.results.get("train", {}).get("precision", {}).get(precision, {})
            if "bare" in train and self.results["train"]["model"]["size"] == a.model_size:
                # Encoder FLOPs of all the train section's batches over its bare loop's median time.
                all_valid = sum(encoder_training_flops(
                    encoder, frontend.output_lengths(b["lengths"]),
                    int(frontend.output_lengths(torch.tensor([b["waveforms"].size(1)]))[0]))[0]
                    for b in self.train_batches())
                step_s = train["bare"]["median_s"]
                rate = all_valid / step_s
                res["whole_step"] = {"bare_s": step_s, "flops_valid": all_valid, "flop_per_s_valid": rate,
                                     "fraction_of_matmul_valid": rate / mm["flop_per_s"],
                                     "encoder_share_of_step": rate / res["achieved_flop_per_s_valid"],
                                     "note": "encoder FLOPs of the train section's batches / its bare loop median; "
                                             "encoder share = that rate / the encoder-only rate"}
            out["precision"][precision] = res
        return out

    def print_flops(self, r: dict) -> None:
        print(f"encoder of {r['model']['name']}, fwd+bwd over the {r['batches']} training batches; "
              f"FLOPs {r['flop_formula']}")
        rows, notes = [], []
        for p, res in r["precision"].items():
            if "skipped" in res:
                notes.append(f"{p}: skipped ({res['skipped']})")
                continue
            mm = res["matmul"]
            rows.append([f"{p} torch.mm {mm['n']}x{mm['n']} {mm['dtype']}", mm["seconds"],
                         mm["flop_per_s"] / 1e9, 1.0, ""])
            rows.append([f"{p} encoder fwd+bwd, valid frames", res["encoder_median_s"],
                         res["achieved_flop_per_s_valid"] / 1e9, res["fraction_of_matmul_valid"], ""])
            rows.append([f"{p} encoder fwd+bwd, padded frames", res["encoder_median_s"],
                         res["achieved_flop_per_s_padded"] / 1e9, res["fraction_of_matmul_padded"], ""])
            if "whole_step" in res:
                w = res["whole_step"]
                rows.append([f"{p} whole bare training step, valid", w["bare_s"], w["flop_per_s_valid"] / 1e9,
                             w["fraction_of_matmul_valid"], w["encoder_share_of_step"]])
        print(_table(["FLOP rate", "s", "GFLOP/s", "fraction of matmul", "encoder share of step"], rows))
        notes.append("valid = useful work (each utterance's own frames); padded = B x T frames the kernels execute")
        _notes(notes)

    # -- section 3 ----------------------------------------------------------------------------------------------
    def data(self) -> dict:
        """Decode + resample + collate (DataLoader, configured workers) + frontend (eval, no grad) on CPU."""
        a = self.args
        dm = self.dm
        frontend = build_model(a.model_size).model.frontend.eval()
        n_batches = max(1, a.data_batches)
        loader = dm.train_dataloader()
        sample_rate = dm.hparams.sample_rate

        def run(limit: int) -> tuple[float, int, float]:
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

        with _quiet():
            run(1)  # warm-up (and worker start-up with persistent workers)
            times = [run(n_batches) for _ in range(a.repeats)]
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
        train = self.results.get("train")
        if train is None:
            print("[rnnlab] data: the train section was not selected; timing model steps once for the ratio")
            train = self.train(repeats=1)
            out["model_throughput_from"] = "train section run once for this ratio"
        for p, res in train["precision"].items():
            if "lightning" not in res:
                out["vs_model"][p] = {"skipped": res.get("skipped", "not measured")}
                continue
            model_utts = res["lightning"]["utterances_per_s"]
            out["vs_model"][p] = {"model_utterances_per_s": model_utts,
                                  "ratio_data_over_model": rates["utterances_per_s"] / model_utts,
                                  "target": TARGETS["data_ratio"],
                                  "meets_target": rates["utterances_per_s"] / model_utts >= TARGETS["data_ratio"]}
        return out

    def print_data(self, r: dict) -> None:
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
        print(_table(["throughput", "s", "utt/s", "audio s/s", f"data/model (target >= {TARGETS['data_ratio']:g})"],
                     rows))
        _notes(notes)

    # -- section 4 ----------------------------------------------------------------------------------------------
    def padding(self) -> dict:
        """Padding fractions of random / bucketed / sorted batches (LibriSpeech-like lengths and the train data)."""
        a = self.args
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
        out["librispeech_like"][f"batch_size={a.batch}"] = padding_fractions(lengths, batch_size=a.batch,
                                                                              max_tokens=None)
        out["librispeech_like"][f"max_tokens={a.max_batch_seconds:g}s"] = padding_fractions(
            lengths, batch_size=None, max_tokens=max_tokens)
        for v in out["librispeech_like"].values():
            v["bucketed"]["meets_target"] = v["bucketed"]["padding_fraction"] < TARGETS["padding_bucketed"]
        try:
            train_lengths = self.dm.datasets["train"].lengths
            out["train_data"] = {"data": dict(self.data_info),
                                 f"batch_size={a.batch}": padding_fractions(train_lengths, batch_size=a.batch,
                                                                            max_tokens=None)}
        except Exception as e:  # noqa: BLE001 - the synthetic distribution above is the section's main result
            out["train_data"] = {"skipped": _first_line(e)}
        return out

    def print_padding(self, r: dict) -> None:
        d = r["distribution"]
        print(f"LibriSpeech-like lengths: {d['utterances']:,} utterances, lognormal median {d['median_s']} s, sigma "
              f"{d['sigma']}, within [{d['min_s']}, {d['max_s']}] s: mean {d['mean_s']:.2f} s, 5-95% "
              f"{d['p5_s']:.1f}-{d['p95_s']:.1f} s, {d['fraction_2_to_17_s']:.0%} in 2-17 s, {d['hours']:.1f} h")
        rows = []
        for name, v in r["librispeech_like"].items():
            for kind in ("random", "bucketed", "sorted"):
                rows.append([f"LibriSpeech-like, {name}, {kind}", v[kind]["padding_fraction"], v[kind]["batches"],
                             v[kind]["mean_batch_size"]])
        train = r.get("train_data", {})
        for name, v in train.items():
            if name.startswith("batch_size"):
                for kind in ("random", "bucketed", "sorted"):
                    rows.append([f"training data, {name}, {kind}", v[kind]["padding_fraction"], v[kind]["batches"],
                                 v[kind]["mean_batch_size"]])
        print(_table(["padding (mean of 3 epochs)", f"fraction (bucketed target < {TARGETS['padding_bucketed']:g})",
                      "batches", "utt/batch"], rows))

    # -- section 5 ----------------------------------------------------------------------------------------------
    def rtf(self) -> dict:
        """Batch-1 CPU real-time factor: greedy, prefix beam search (width ``--beam``), exported backends."""
        from data.audio import load_audio

        a = self.args
        if a.ckpt:
            from pipelines.base import load_module
            from pipelines.ctc import CTCSpeechRecognizer

            model = load_module(a.ckpt, map_location="cpu")
            if not isinstance(model, CTCSpeechRecognizer):
                raise ValueError(f"--ckpt {a.ckpt} holds a {type(model).__name__}, not a CTC speech recognizer")
            weights = f"trained checkpoint {a.ckpt}"
        else:
            model = build_model("tiny" if a.quick else "default")
            weights = "random (untrained): beam search cost depends on the output distributions; pass --ckpt"
        model = model.cpu().eval()
        utts = self.dm.datasets["val"].utterances[: a.rtf_utterances]
        rate = model.hparams.sample_rate
        wavs = [load_audio(u.audio, rate) for u in utts]
        audio_s = sum(w.numel() for w in wavs) / rate
        decoder = model.make_decoder(beam_size=a.beam)

        def run(dec) -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            for w in wavs:
                model.transcribe_waveforms([w], decoder=dec, batch_size=1)
            return time.perf_counter() - t0, time.process_time() - c0

        model.transcribe_waveforms([wavs[0]], batch_size=1)  # warm-up
        out = {"weights": weights, "model": _describe(model), "model_name": _model_name(model),
               "utterances": len(wavs), "audio_s": audio_s, "threads": torch.get_num_threads(), "batch_size": 1,
               "device": "cpu", "rows": {}}
        greedy = [run(None) for _ in range(max(1, a.repeats))]
        beam = [run(decoder)]  # one pass: the pure-Python search is the slow part
        for name, secs, target in (("greedy", greedy, TARGETS["rtf_greedy"]),
                                   (f"prefix beam {a.beam}", beam, TARGETS["rtf_beam"])):
            med = statistics.median(w for w, _ in secs)
            cpu = statistics.median(c for _, c in secs)
            out["rows"][name] = {"seconds": [w for w, _ in secs], "median_s": med, "rtf": med / audio_s,
                                 "cpu_seconds": [c for _, c in secs], "rtf_cpu": cpu / audio_s, "target": target,
                                 "meets_target": med / audio_s <= target, "threads": torch.get_num_threads()}
        out["export"] = self._export_rtf(model, utts)
        return out

    def _export_rtf(self, model, utts) -> dict:
        try:
            export = importlib.import_module("pipelines.export")
        except ImportError as e:
            return {"skipped": f"pipelines.export not available ({_first_line(e)})"}
        fn = getattr(export, "bench_export", None)
        if fn is None:
            return {"skipped": "pipelines.export not available (no bench_export)"}
        files = [u.audio.path for u in utts if u.audio.path]
        if not files:
            return {"skipped": "the validation audio has no file paths"}
        ckpt = self.args.ckpt
        if not ckpt:
            ckpt = str(self.tmp / "random-ctc.ckpt")
            _save_checkpoint(model, ckpt)
        kw = {"repeats": self.args.repeats} if "repeats" in inspect.signature(fn).parameters else {}
        try:
            with _quiet():
                res = fn(ckpt, files, **kw)
        except Exception as e:  # noqa: BLE001 - another tool's failure must not lose the other sections
            return {"skipped": f"pipelines.export.bench_export failed: {_first_line(e)}"}
        res = dict(res)
        res["note"] = "pipelines.export.bench_export: fastest pass, each backend on one thread, greedy"
        return res

    def print_rtf(self, r: dict) -> None:
        print(f"{r['model_name']} on CPU, batch 1, {r['utterances']} utterances ({r['audio_s']:.1f} s of audio); "
              f"weights: {r['weights']}")
        rows = [[f"{name} ({v['threads']} thread(s))", v["median_s"], v["rtf"], v["rtf_cpu"], f"<= {v['target']:g}"]
                for name, v in r["rows"].items()]
        e, notes = r["export"], []
        if "skipped" in e:
            notes.append(f"ONNX (onnxruntime): skipped: {e['skipped']}")
        else:
            for backend, rtf in e.get("rtf", {}).items():
                rows.append([f"exported: {backend} greedy ({e.get('threads', 1)} thread)", e["seconds"][backend], rtf,
                             e.get("rtf_cpu", {}).get(backend), ""])
        print(_table(["inference", "s", "RTF", "RTF by CPU time", "aim"], rows))
        _notes(notes)

    # -- section 6 ----------------------------------------------------------------------------------------------
    def memory(self) -> dict:
        """Peak memory of training steps of the default model, in a fresh Python process per precision."""
        a = self.args
        batches = self.train_batches()
        longest = max(batches, key=lambda b: b["waveforms"].numel())
        path = self.tmp / "memory-batch.pt"
        torch.save({k: longest[k] for k in ("waveforms", "lengths", "targets", "target_lengths")}, path)
        size = "tiny" if a.quick else "default"
        out = {"model_size": size, "batch": {"utterances": int(longest["lengths"].numel()),
                                             "padded_s": longest["waveforms"].size(1) / self.dm.hparams.sample_rate},
               "steps": 2, "measured": "a fresh process: imports, model, optimiser and batch first; then 2 training "
                                       "steps (the first allocates the optimiser state)", "precision": {}}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        for precision in ("32-true", "bf16-mixed"):
            if precision not in self.precisions:
                out["precision"][precision] = {"skipped": "no CUDA device: bf16-mixed runs on GPU only"}
                continue
            cmd = [sys.executable, "-c", "import sys; from pipelines.bench import memory_main; "
                                         "sys.exit(memory_main(sys.argv[1:]))",
                   "--batch", str(path), "--size", size, "--device", self.device.type, "--precision", precision,
                   "--threads", str(torch.get_num_threads())]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"memory child process failed ({proc.returncode}): {tail}")
            out["precision"][precision] = json.loads(proc.stdout.strip().splitlines()[-1])
        return out

    def print_memory(self, r: dict) -> None:
        b = r["batch"]
        print(f"{r['model_size']} CTC model, the longest training batch ({b['utterances']} utterances, padded to "
              f"{b['padded_s']:.1f} s), {r['steps']} steps in a fresh process")
        rows, notes = [], []
        for p, v in r["precision"].items():
            if "skipped" in v:
                notes.append(f"{p}: skipped ({v['skipped']})")
                continue
            rows.append([f"{p} CPU RSS", v["rss_before_mb"], v.get("peak_rss_mb"), v.get("step_peak_rss_mb"),
                         v["ru_maxrss_delta_mb"], v["params_mb"]])
            if "cuda_step_peak_mb" in v:
                rows.append([f"{p} CUDA allocated", v["cuda_before_mb"], v["cuda_peak_mb"], v["cuda_step_peak_mb"], "",
                             v["params_mb"]])
        print(_table(["memory (MB)", "before", "peak", "step peak - before", "ru_maxrss delta", "parameters"], rows))
        notes.append(next(v["method"] for v in r["precision"].values() if "method" in v))
        _notes(notes)

    # -- section 7 ----------------------------------------------------------------------------------------------
    def encoder(self) -> dict:
        a = self.args
        return bench_encoder(layers=a.layers, hidden=a.hidden, batch=a.batch, max_frames=a.max_frames, iters=a.iters,
                             input_size=a.encoder_input, device=self.device)

    def print_encoder(self, res: dict) -> None:
        c = res["config"]
        where = "GPU" if c.get("device", "cpu").startswith("cuda") else "CPU"
        print(f"fwd+bwd on {where}, {c['layers']}x BiLSTM-{c['hidden']}, batch {c['batch']}, up to {c['max_frames']} "
              f"frames, {c['threads']} threads")
        print(_table(["method", "s/batch", "utt/s", "vs padded nn.LSTM"],
                     [[k, v, res["utterances_per_s"][k], res["ratio_vs_padded_nn_lstm"][k]]
                      for k, v in res["seconds_per_batch"].items()]))


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def _identity(x):
    return x


def _fit_timer_class():
    from lightning.pytorch.callbacks import Callback

    class FitTimer(Callback):
        """Times Lightning's training loop (on_train_start to on_train_end) and counts its steps."""

        def __init__(self, device: torch.device) -> None:
            self.device = device
            self.steps = 0
            self.seconds = self.cpu_seconds = float("nan")
            self._t0 = self._c0 = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            _sync(self.device)
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.steps += 1

        def on_train_end(self, trainer, pl_module) -> None:
            _sync(self.device)
            self.seconds, self.cpu_seconds = time.perf_counter() - self._t0, time.process_time() - self._c0

    return FitTimer


def _save_checkpoint(model, path: str) -> None:
    import lightning as L

    with _quiet():
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.strategy.connect(model)
        trainer.save_checkpoint(path)


def _source_rate(ref) -> int:
    import soundfile as sf

    try:
        return int(sf.info(ref.open()).samplerate)
    except Exception:  # noqa: BLE001
        return 0


# -- memory child process ------------------------------------------------------------------------------------------


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def memory_main(argv: list[str]) -> int:
    """Child process of the memory section: prints one JSON line with the peak memory of 2 training steps."""
    import gc
    import resource

    ap = argparse.ArgumentParser(prog="rnnlab bench memory child")
    ap.add_argument("--batch", required=True)
    ap.add_argument("--size", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import pipelines.ctc  # noqa: F401 - every import before the baseline
    from modules.ctc import ctc_loss_checked  # noqa: F401

    device = torch.device(a.device)
    model = build_model(a.size).to(device).train()
    opt, _ = _optimizers(model)
    batch = _to_device(torch.load(a.batch, weights_only=True), device)
    batch["ids"] = [str(i) for i in range(batch["lengths"].numel())]
    clip_val, clip_algo = gradient_clipping()
    gc.collect()
    params_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_before = _proc_status_mb("VmRSS")
    hwm_reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
        hwm_reset = True
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated() / 2**20
    for _ in range(2):
        train_step(model, batch, opt, clip_val=clip_val, clip_algorithm=clip_algo, device=device,
                   precision=a.precision)
    _sync(device)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"params_mb": params_mb, "rss_before_mb": rss_before if rss_before is not None else maxrss_before,
           "maxrss_before_mb": maxrss_before, "maxrss_after_mb": maxrss_after,
           "ru_maxrss_delta_mb": maxrss_after - maxrss_before, "threads": torch.get_num_threads()}
    if hwm_reset and rss_before is not None:
        peak = _proc_status_mb("VmHWM")
        res.update({"peak_rss_mb": peak, "step_peak_rss_mb": peak - rss_before,
                    "method": "peak RSS (VmHWM, reset before the steps through /proc/self/clear_refs) minus RSS "
                              "before; the ru_maxrss delta is a lower bound (Linux carries the parent's peak RSS "
                              "over exec into ru_maxrss)"})
    else:
        res.update({"peak_rss_mb": maxrss_after, "step_peak_rss_mb": maxrss_after - maxrss_before,
                    "method": "ru_maxrss before/after: a lower bound (Linux carries the parent's peak RSS over "
                              "exec into ru_maxrss, and imports may have peaked higher)"})
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        res.update({"cuda_before_mb": cuda_before, "cuda_peak_mb": peak, "cuda_step_peak_mb": peak - cuda_before})
    print(json.dumps(res))
    return 0


# -- command line --------------------------------------------------------------------------------------------------


def _header(b: Bench) -> dict:
    import lightning

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = {"device": str(b.device), "cpu": cpu, "threads": torch.get_num_threads(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available(), "precisions": b.precisions}
    if b.device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(b.device)
    return meta


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rnnlab bench", description="The project's benchmark: " + ", ".join(SECTIONS)
                                 + " (tables printed, all numbers in one JSON file).")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({','.join(SECTIONS)})")
    ap.add_argument("--quick", action="store_true", help="tiny sizes everywhere (seconds; for tests)")
    ap.add_argument("--out", default="runs/bench/bench.json")
    ap.add_argument("--model-size", choices=list(MODEL_CONFIGS), default=None,
                    help="model of the train/flops/data sections (default arctic; tiny with --quick)")
    ap.add_argument("--data-dir", default=None,
                    help=f"audiofolder with train/ and validation/ (default {DEFAULT_DATA_DIR} if present, else the "
                         f"embedded synthetic corpus)")
    ap.add_argument("--ckpt", default=None, help="trained CTC checkpoint for the rtf section (default: random weights)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 16; 4 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per repetition (default 8)")
    ap.add_argument("--warmup-steps", type=int, default=None, help="steps of each warm-up run (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="repetitions per measurement (default 3)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the data section (configs: 0)")
    ap.add_argument("--data-batches", type=int, default=None, help="batches the data section times (default 16)")
    ap.add_argument("--max-batch-seconds", type=float, default=200.0,
                    help="max_tokens (padded seconds per batch) of the padding section")
    ap.add_argument("--beam", type=int, default=10, help="prefix beam width of the rtf section")
    ap.add_argument("--rtf-utterances", type=int, default=None, help="utterances of the rtf section (default 10)")
    ap.add_argument("--matmul-size", type=int, default=None, help="n of the n x n torch.mm (default 2048)")
    ap.add_argument("--flops-batches", type=int, default=None,
                    help="training batches the flops section times the encoder on (default 4)")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    enc = ap.add_argument_group("encoder section")
    enc.add_argument("--layers", type=int, default=None, help="default 4")
    enc.add_argument("--hidden", type=int, default=None, help="default 320")
    enc.add_argument("--encoder-input", type=int, default=None, help="default 240")
    enc.add_argument("--max-frames", type=int, default=None, help="frames after stacking (default 300)")
    enc.add_argument("--iters", type=int, default=None, help="default 3")
    a = ap.parse_args(argv)
    quick = a.quick
    defaults = {"model_size": ("arctic", "tiny"), "batch": (16, 4), "steps": (8, 3), "warmup_steps": (2, 1),
                "repeats": (3, 2), "data_batches": (16, 2), "rtf_utterances": (10, 2), "matmul_size": (2048, 256), "flops_batches": (4, 3),
                "layers": (4, 1), "hidden": (320, 16), "encoder_input": (240, 24), "max_frames": (300, 20),
                "iters": (3, 1)}
    for k, (full, small) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, small if quick else full)
    return a


def _check(a: argparse.Namespace) -> str | None:
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        return f"--only: unknown section(s) {', '.join(bad) or '(none)'}; choose from {','.join(SECTIONS)}"
    a.sections = [s for s in SECTIONS if s in sections]
    if a.ckpt and not Path(a.ckpt).is_file():
        return f"--ckpt: checkpoint not found: {a.ckpt}"
    if a.data_dir and not Path(a.data_dir).is_dir():
        return f"--data-dir: not a directory: {a.data_dir}"
    if a.beam < 2:
        return f"--beam must be >= 2 (a prefix beam search), got {a.beam}"
    for name in ("batch", "steps", "repeats", "data_batches", "rtf_utterances", "matmul_size", "iters",
                 "flops_batches", "layers", "hidden", "encoder_input", "max_frames"):
        if getattr(a, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}"
    if a.workers < 0 or a.warmup_steps < 0:
        return "--workers and --warmup-steps must be >= 0"
    return None


def run_bench(args: argparse.Namespace) -> dict:
    """Runs the selected sections, printing a table after each; returns every number (also on section errors)."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
        b = Bench(args, Path(tmp))
        meta = _header(b)
        print(f"rnnlab bench: device {meta['device']}{' (' + meta['gpu'] + ')' if 'gpu' in meta else ''}, CPU "
              f"{meta['cpu']}, {meta['threads']} torch thread(s) on {meta['cpu_affinity']} core(s), torch "
              f"{meta['torch']}, lightning {meta['lightning']}, python {meta['python']}"
              + ("" if meta["cuda"] else "; no CUDA: bf16-mixed rows skipped"))
        out = {"meta": meta}
        titles = {"train": "1. training throughput: Lightning vs bare PyTorch",
                  "flops": "2. encoder FLOP rate vs dense matmul",
                  "data": "3. data pipeline vs model step throughput",
                  "padding": "4. padding fraction: random vs length-bucketed batches",
                  "rtf": "5. inference real-time factor (CPU, batch 1)",
                  "memory": "6. peak memory of a training step",
                  "encoder": "7. encoder length handling: exact modes vs padded nn.LSTM"}
        for name in args.sections:
            print(f"\n== {titles[name]} ==", flush=True)
            t0 = time.perf_counter()
            try:
                res = getattr(b, name)()
            except Exception as e:  # noqa: BLE001 - one failing section must not lose the others' numbers
                res = {"error": _first_line(e)}
                print(f"[rnnlab] {name}: error: {res['error']}")
            else:
                getattr(b, f"print_{name}")(res)
            res["section_wall_s"] = time.perf_counter() - t0
            b.results[name] = res
            out[name] = res
            print(f"({res['section_wall_s']:.1f} s)", flush=True)
        meta["data"] = dict(b.data_info)
        meta["args"] = {k: v for k, v in vars(args).items()}
        return out


def main(argv: list[str]) -> int:
    args = _parse(argv)
    problem = _check(args)
    if problem:
        print(f"rnnlab bench: error: {problem}", file=sys.stderr)
        return 2
    res = run_bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n[rnnlab] written {out}")
    errors = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    if errors:
        print(f"rnnlab bench: error: section(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0
