"""Callbacks shared by every pipeline: metrics JSON files, run summary for W&B, config logging."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pipelines.training import signals
from pipelines.training.checkpointing import mark_validation_unfinished, resume_command


def _plain(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if torch.is_tensor(v):
            v = v.detach().cpu()
            v = v.item() if v.numel() == 1 else v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def metrics_file_name(stage: str, ckpt: str | os.PathLike | None) -> str:
    """``{stage}_metrics-{checkpoint name}.json`` (``validate_metrics-best.json``), or ``{stage}_metrics.json`` for
    a model that was not read from a checkpoint: evaluating one checkpoint never overwrites another's results
    (the averaged checkpoint's, say, written at the end of ``fit``)."""
    name = Path(ckpt).stem if ckpt and str(ckpt) not in ("last", "best", "hpc", "registry") else ""
    return f"{stage}_metrics-{name}.json" if name else f"{stage}_metrics.json"


class MetricsJSON(Callback):
    """Writes the test/validate results into the run directory and prints where.

    Args:
        path: Output file; default ``<run dir>/<stage>_metrics-<checkpoint name>.json`` (:func:`metrics_file_name`).
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def _write(self, trainer: L.Trainer, stage: str) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        prefix = {"test": "test/", "validate": "val/"}[stage]
        metrics = {k: v for k, v in _plain(trainer.callback_metrics).items() if k.startswith(prefix)}
        ckpt = getattr(trainer, "ckpt_path", None)
        path = Path(self.path or Path(trainer.default_root_dir) / metrics_file_name(stage, ckpt))
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"stage": stage, "checkpoint": str(ckpt) if ckpt else None, "metrics": metrics}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        print(f"[rnnlab] {stage} metrics written to {path}")

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, "test")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, "validate")


class KeepBest(ModelCheckpoint):
    """The ``n`` best checkpoints by the run's monitored metric, beside ``best.ckpt`` (``--run.average_best``).

    A separate state key lets Lightning save and restore its ranking next to the ``best.ckpt`` checkpointer,
    which watches the same metric.
    """

    def __init__(self, dirpath: str, monitor: str, mode: str, n: int) -> None:
        super().__init__(dirpath=dirpath, filename="epoch{epoch:03d}", monitor=monitor, mode=mode, save_top_k=n,
                         auto_insert_metric_name=False)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, keep=self.save_top_k)


class RunSummary(Callback):
    """At the end of fit: prints the best checkpoint and its score, records them in W&B's run summary."""

    def on_fit_start(self, trainer, pl_module) -> None:
        import time

        self._t0 = time.perf_counter()
        dm = getattr(trainer, "datamodule", None)
        per_device = getattr(getattr(dm, "hparams", None), "batch_size", None) if dm is not None else None
        if per_device and trainer.is_global_zero:
            world = trainer.world_size
            accumulate = trainer.accumulate_grad_batches
            line = (f"[rnnlab] batch size: {per_device} per device x {trainer.num_devices} device(s) x "
                    f"{trainer.num_nodes} node(s)" + (f" x {accumulate} accumulated" if accumulate > 1 else "")
                    + f" = {per_device * world * accumulate} global")
            if getattr(dm.hparams, "max_batch_seconds", None):
                line += f" (at most; also capped at {dm.hparams.max_batch_seconds} s of audio per device batch)"
            print(line, flush=True)
            for logger in trainer.loggers:
                try:
                    logger.log_hyperparams({"batch_size_per_device": per_device, "world_size": world,
                                            "global_batch_size": per_device * world * accumulate})
                except Exception as e:  # noqa: BLE001 - tracking must never end a training run
                    print(f"[rnnlab] warning: could not log the batch size: {e}")

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        summary = {k: v for k, v in _plain(trainer.callback_metrics).items() if k.startswith("val/")}
        if hasattr(self, "_t0"):
            import time

            summary["train_time_s"] = round(time.perf_counter() - self._t0, 1)
        summary["epochs"] = trainer.current_epoch
        dm = getattr(trainer, "datamodule", None)
        skips = getattr(dm, "skip_report", None)
        if skips:
            summary["skipped"] = skips
            print(f"[rnnlab] skipped utterances (by split and reason): {skips}")
        if ckpt is not None and ckpt.best_model_path:
            score = ckpt.best_model_score.item() if ckpt.best_model_score is not None else None
            summary.update(best_checkpoint=ckpt.best_model_path, best_score=score, monitor=ckpt.monitor)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    logger.experiment.summary.update(summary)
                except Exception as e:  # noqa: BLE001 - tracking must never end a training run
                    print(f"[rnnlab] warning: could not update the W&B summary: {e}")
        Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
        (Path(trainer.default_root_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print("[rnnlab] validation: " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()
                                                  if isinstance(v, float) and k.startswith("val/")))
        if "best_checkpoint" in summary:
            print(f"[rnnlab] best checkpoint ({summary['monitor']}={summary['best_score']:.4g}): "
                  f"{summary['best_checkpoint']}")


class LoggedSaveConfig(SaveConfigCallback):
    """Saves ``config.yaml`` in the run directory and logs the full resolved config to every logger.

    Only ``fit`` writes it: ``test``/``validate --ckpt`` read the run's config and must leave it as training
    wrote it (a re-dump after those stages once recorded AdamW as Adam).
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage) -> None:
        from pipelines.training.runconfig import parse_yaml

        config = parse_yaml(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            try:
                logger.log_hyperparams({"config": config})
            except Exception as e:  # noqa: BLE001
                print(f"[rnnlab] warning: {type(logger).__name__} could not log the config: {e}")


class AgreeOnSignals(Callback):
    """Under DDP, at the start of every training batch: every rank learns whether any rank noted SIGTERM or Ctrl-C
    (:func:`pipelines.training.signals.agree`), so that all stop after the same step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        signals.agree(trainer)


class SaveOnPreemption(Callback):
    """On SIGTERM (preemption, ``scancel``, a job scheduler's time limit) or Ctrl-C: checkpoint, then stop cleanly.

    The signal is only noted when it arrives (:mod:`pipelines.training.signals`); Lightning's loops act on it after
    the current training step or validation batch (every DDP rank at the same step), and this callback then writes
    ``checkpoints/last.ckpt`` (atomically) and prints the command that resumes from it: the command as given, with
    ``--ckpt_path last``. ``rnnlab fit`` then exits 143 (130 for Ctrl-C; a second Ctrl-C interrupts at once). A
    checkpoint written during validation records that this validation did not finish, so the resumed run
    validates that epoch before it trains on. SLURM's requeue signal is handled by Lightning's own
    ``SLURMEnvironment(auto_requeue=True)``, which writes an ``hpc_ckpt`` that ``--ckpt_path hpc`` resumes.

    Args:
        dirpath: The run's checkpoint directory.
        command: The command's arguments as given (``["fit", "-c", ...]``), for the resume command.
    """

    def __init__(self, dirpath: str | Path, command: list[str] | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.command = command
        self.saved: Path | None = None
        self._mid_validation = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        signals.release_child_observer()
        path = self.dirpath / "last.ckpt"
        during_validation = trainer.validating and not trainer.sanity_checking
        self._mid_validation = during_validation
        try:
            trainer.save_checkpoint(path, weights_only=False)  # collective under DDP; rank 0 writes
        finally:
            self._mid_validation = False
        self.saved = path
        if trainer.is_global_zero:
            how = resume_command(self.command, path) if self.command else "the same command and --ckpt_path last"
            # The resume line ends with the command alone, so it can be copied as it is.
            print(f"[rnnlab] {signals.received() or 'SIGTERM'}: saved {path} at step {trainer.global_step}"
                  f"{' during validation' if during_validation else ''}; resume with: {how}", flush=True)
            if os.environ.get("MAKELEVEL"):
                print("[rnnlab] started by make: the same make command with --ckpt_path last added to ARGS "
                      "resumes too", flush=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._mid_validation:
            mark_validation_unfinished(checkpoint)


def _rng_state() -> dict:
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


class ExactResume(Callback):
    """Saves the random-number generators' states in every training checkpoint and restores them on resume.

    Dropout, SpecAugment and speed perturbation draw from the global torch RNG; with the data order restored by
    `data.resumable.ResumableDataLoader` and the optimizer and scheduler restored by Lightning, a run resumed from
    a mid-epoch checkpoint continues exactly as the uninterrupted run (tested with SIGKILL). The states are
    restored just before the first resumed training batch, so nothing drawn while the run is being set up
    (iterators, sanity checks) shifts them. Stored as tensors and tuples, loadable with ``weights_only=True``.
    """

    def __init__(self) -> None:
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        # Saved before the first resumed batch (e.g. on SIGTERM while the resumed run validates first): the states
        # still to be restored are the run's, not the ones drawn while setting up.
        return {"rng": self._pending if self._pending is not None else _rng_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict.get("rng")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            state, self._pending = self._pending, None
            if trainer.world_size == 1:
                _set_rng_state(state)
            else:
                # Every rank saved its own stream; the checkpoint holds rank 0's. Offset it per rank so ranks
                # do not share dropout masks.
                _set_rng_state(state)
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()) + trainer.global_rank)


class NonFiniteTrainingError(RuntimeError):
    """Training stopped after too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteGuard(Callback):
    """Skips optimizer steps whose gradients are not finite (NaN/inf loss or gradient), and counts them.

    The check runs after backward and before clipping and the optimizer step; a bad step's gradients are
    dropped (set to None), so the optimizer leaves every parameter and its moments untouched. Under DDP the
    gradients are already all-reduced, so every rank sees the same verdict and skips together. After
    ``max_consecutive`` bad steps in a row, training stops with `NonFiniteTrainingError` naming the last batch's
    ids; the weights (and every checkpoint written so far) are the last good ones.
    """

    def __init__(self, max_consecutive: int = 25) -> None:
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._batch_ids: list | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_ids = batch.get("ids") if isinstance(batch, dict) else None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if finite:
            self.consecutive = 0
            return
        for p in pl_module.parameters():
            p.grad = None
        self.skipped += 1
        self.consecutive += 1
        ids = self._batch_ids
        where = f" (batch ids: {', '.join(map(str, ids[:8]))}{' ...' if len(ids) > 8 else ''})" if ids else ""
        if trainer.is_global_zero:
            print(f"[rnnlab] warning: step {trainer.global_step}: non-finite loss or gradient, step skipped"
                  f"{where}", flush=True)
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False, reduce_fx="max")
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"{self.consecutive} consecutive training steps had a non-finite loss or gradient; stopped at step "
                f"{trainer.global_step}{where}. The last checkpoint holds the last good weights: lower the "
                f"learning rate, check the data, or raise --run.max_bad_steps")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
