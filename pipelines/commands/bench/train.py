"""``rnnlab bench`` section ``train``: Lightning ``Trainer.fit`` vs a bare PyTorch loop on the same batches.

Both run the CTC model of ``--model-size`` with the same optimiser and gradient clipping over the same in-memory
batches through the same DataLoader, and the same step: the model's own ``training_step`` (the bare loop calls it,
then backward and the optimiser step); repetitions alternate (bare, lightning, lightning, bare, ...) so drift on a
shared machine hits both, and the median counts.
"""

from __future__ import annotations

import copy
import statistics
import time

from pipelines.commands.bench.common import (
    BF16_SKIPPED,
    PRECISIONS,
    TARGETS,
    batch_stats,
    lightning_quiet,
    measured,
    print_notes,
    sync,
    table,
    to_device,
)
from pipelines.commands.bench.models import (
    build_model,
    describe,
    gradient_clipping,
    model_name,
    optimizers,
    train_step,
)

TITLE = "1. training throughput: Lightning vs bare PyTorch"


class _Runner:
    """Runs ``n`` training steps of one model from the same initial weights, bare or through Lightning."""

    def __init__(self, ctx, model, batches: list[dict]) -> None:
        self.model = model
        self.initial = copy.deepcopy(model.state_dict())
        self.clip_val, self.clip_algo = gradient_clipping()
        self.loader = ctx.loader(batches)
        self.device = ctx.device
        self.timer_cls = _fit_timer_class()

    def bare(self, n: int, precision: str) -> dict:
        model, device = self.model, self.device
        model.load_state_dict(self.initial)
        model.trainer = None  # detach the last fit's Trainer: without one, the step's self.log returns at once
        model.to(device).train()
        opt, sched = optimizers(model)
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for i, batch in zip(range(n), self.loader, strict=False):
            train_step(model, to_device(batch, device), opt, batch_idx=i, clip_val=self.clip_val,
                       clip_algorithm=self.clip_algo, device=device, precision=precision)
        if sched is not None:
            sched.step()  # Lightning steps the (per-epoch) scheduler once at the end of its one epoch
        sync(device)
        return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}

    def lightning(self, n: int, precision: str) -> dict:
        import lightning as L

        self.model.load_state_dict(self.initial)
        timer = self.timer_cls(self.device)
        trainer = L.Trainer(
            accelerator="gpu" if self.device.type == "cuda" else "cpu", devices=1, precision=precision, max_epochs=1,
            max_steps=n, limit_train_batches=n, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            gradient_clip_val=self.clip_val, gradient_clip_algorithm=self.clip_algo, use_distributed_sampler=False,
            callbacks=[timer])
        t0 = time.perf_counter()
        trainer.fit(self.model, train_dataloaders=self.loader)
        wall = time.perf_counter() - t0
        if timer.steps != n:
            raise RuntimeError(f"Lightning ran {timer.steps} steps, expected {n}")
        return {"seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds, "fit_wall_s": wall}


def run(ctx, repeats: int | None = None) -> dict:
    """Lightning ``Trainer.fit`` vs a bare loop on the same batches, alternating, median of the repetitions."""
    a = ctx.args
    repeats = a.repeats if repeats is None else repeats
    batches = ctx.train_batches()
    steps = len(batches)
    utts, audio_s = batch_stats(batches, ctx.dm.hparams.sample_rate)
    model = build_model(a.model_size)
    runner = _Runner(ctx, model, batches)
    out = {"model": {"size": a.model_size, "name": model_name(model), **describe(model)},
           "data": dict(ctx.data_info), "batch_size": a.batch, "steps": steps, "warmup_steps": a.warmup_steps,
           "repeats": repeats, "utterances": utts, "audio_s": audio_s,
           "gradient_clipping": {"value": runner.clip_val, "algorithm": runner.clip_algo},
           "optimizer": type(optimizers(model)[0]).__name__,
           "timing": "wall clock; Lightning: on_train_start to on_train_end (fit_wall_s: the whole fit call); "
                     "bare: the loop; both over the same in-memory batches through the same DataLoader; "
                     "cpu_seconds: process CPU time over the same span",
           "precision": {}}
    with lightning_quiet():
        for precision in PRECISIONS:
            if precision not in ctx.precisions:
                out["precision"][precision] = {"skipped": BF16_SKIPPED}
                continue
            if a.warmup_steps:
                runner.bare(min(a.warmup_steps, steps), precision)
                runner.lightning(min(a.warmup_steps, steps), precision)
            out["precision"][precision] = _compare(runner, steps, repeats, precision, utts, audio_s)
    return out


def _compare(runner: _Runner, steps: int, repeats: int, precision: str, utts: int, audio_s: float) -> dict:
    runs: dict[str, list[dict]] = {"bare": [], "lightning": []}
    order = []
    for r in range(repeats):
        for kind in ("bare", "lightning") if r % 2 == 0 else ("lightning", "bare"):
            runs[kind].append(getattr(runner, kind)(steps, precision))
            order.append(kind)
    res = {"order": order}
    for kind, rs in runs.items():
        secs = [x["seconds"] for x in rs]
        med = statistics.median(secs)
        cpu = [x["cpu_seconds"] for x in rs]
        res[kind] = {"seconds": secs, "median_s": med, "step_s": med / steps, "utterances_per_s": utts / med,
                     "audio_s_per_s": audio_s / med, "cpu_seconds": cpu, "median_cpu_s": statistics.median(cpu)}
        if kind == "lightning":
            walls = [x["fit_wall_s"] for x in rs]
            res[kind]["fit_wall_s"] = walls
            res[kind]["median_fit_wall_s"] = statistics.median(walls)
    res["ratio_lightning_over_bare"] = res["lightning"]["utterances_per_s"] / res["bare"]["utterances_per_s"]
    res["ratio_including_fit_setup"] = res["bare"]["median_s"] / res["lightning"]["median_fit_wall_s"]
    res["ratio_cpu_time"] = res["bare"]["median_cpu_s"] / res["lightning"]["median_cpu_s"]
    res["target"] = TARGETS["train_ratio"]
    res["meets_target"] = res["ratio_lightning_over_bare"] >= TARGETS["train_ratio"]
    return res


def show(r: dict) -> None:
    """Prints the section's table."""
    print(f"model {r['model']['name']} ({r['model']['parameters']:,} parameters, {r['optimizer']}, clip "
          f"{r['gradient_clipping']['algorithm']} {r['gradient_clipping']['value']}), batch {r['batch_size']}, "
          f"{r['steps']} steps = {r['utterances']} utterances / {r['audio_s']:.1f} s of audio per repetition, "
          f"median of {r['repeats']}")
    rows, notes = [], []
    for p, res in measured(r["precision"], notes):
        for kind in ("bare", "lightning"):
            x = res[kind]
            rows.append([f"{p} {kind}", x["median_s"], x["step_s"], x["utterances_per_s"], x["audio_s_per_s"],
                         res["ratio_lightning_over_bare"] if kind == "lightning" else 1.0])
        rows.append([f"{p} lightning incl. fit setup", res["lightning"]["median_fit_wall_s"], "", "", "",
                     res["ratio_including_fit_setup"]])
    print(table(["training", "s/repetition", "s/step", "utt/s", "audio s/s",
                 f"lightning/bare (target >= {TARGETS['train_ratio']})"], rows))
    for p, res in r["precision"].items():
        if "ratio_cpu_time" in res:
            notes.append(f"{p}: lightning/bare by process CPU time {res['ratio_cpu_time']:.3f} (less sensitive "
                         f"to other jobs on the cores)")
    print_notes(notes)


def _fit_timer_class():
    """The Lightning callback class that times the training loop (built here: importing lightning is slow)."""
    from lightning.pytorch.callbacks import Callback

    class FitTimer(Callback):
        """Times Lightning's training loop (on_train_start to on_train_end) and counts its steps."""

        def __init__(self, device) -> None:
            self.device = device
            self.steps = 0
            self.seconds = self.cpu_seconds = float("nan")
            self._t0 = self._c0 = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            sync(self.device)
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.steps += 1

        def on_train_end(self, trainer, pl_module) -> None:
            sync(self.device)
            self.seconds, self.cpu_seconds = time.perf_counter() - self._t0, time.process_time() - self._c0

    return FitTimer
