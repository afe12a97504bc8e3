"""Shared LightningModule plumbing: optimiser wiring, gradient-norm logging, checkpoint metadata, loading."""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only

from data.errors import DataError
from data.ranges import plain_numbers
from pipelines.training.checkpointing import CKPT_KEY, check_checkpoint, read_checkpoint


class RnnlabModule(L.LightningModule):
    """Base of every rnnlab pipeline.

    Subclasses set ``monitor`` / ``monitor_mode`` (the metric that selects the best checkpoint) and
    ``run_prefix`` (the name runs get), take ``vocab: dict | None`` from their DataModule (linked by the CLI)
    and call ``save_hyperparameters(ignore=["optimizer", "lr_scheduler"])`` so a checkpoint rebuilds the model
    without the training data.

    Args:
        optimizer: Optimiser factory (``class_path``/``init_args`` in YAML), called with the parameters.
        lr_scheduler: Optional scheduler factory; ``ReduceLROnPlateau`` watches ``monitor``.
        init_from: Checkpoint whose weights start a fresh ``fit`` (fine-tuning, e.g. from a model trained on a
            larger corpus): every parameter with the same name and shape is copied, the rest (say, an output
            layer over another vocabulary) keeps its initialisation and is listed. Resuming with ``--ckpt_path``
            restores the run's own weights instead.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"
    run_prefix: str = "run"

    def __init__(
        self,
        *,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.init_from = init_from
        self._unalignable: dict[str, int] = {}

    def build_augment(self, augment: dict | None, noise_dir: str | None, sample_rate: int) -> None:
        """Sets :attr:`wave_augment` (a :class:`modules.augment.WaveformAugment`, or None) from the task's options.

        ``augment`` holds its keyword arguments (``{}`` for the defaults); ``noise_dir`` a local corpus whose
        ``silence`` training clips become the noise bank, read when fitting starts (never at inference).
        """
        from modules.augment import WaveformAugment

        self.noise_dir = noise_dir
        self.wave_augment = WaveformAugment(sample_rate=sample_rate, **augment) if augment is not None else None

    def augment_batch(self, batch: dict) -> dict:
        """The batch with its waveforms degraded by :attr:`wave_augment` (training only)."""
        aug = getattr(self, "wave_augment", None)
        if aug is None or batch is None or not self.training:
            return batch
        waveforms, _ = aug(batch["waveforms"], batch["lengths"])
        return {**batch, "waveforms": waveforms}

    def setup(self, stage: str) -> None:
        if stage == "fit" and getattr(self, "wave_augment", None) is not None and self.noise_dir \
                and not self.wave_augment.noise:
            from data.noise import load_noise_clips

            self.wave_augment.set_noise(load_noise_clips(self.noise_dir, sample_rate=self.wave_augment.sample_rate))
            rank_zero_only(print)(f"[rnnlab] noise bank: {len(self.wave_augment.noise)} clips from {self.noise_dir}")
        # Runs before Lightning restores a checkpoint given with --ckpt_path, so a resumed run keeps its weights.
        if stage == "fit" and self.init_from:
            copied, kept = load_matching_weights(self, self.init_from)
            rank_zero_only(print)(f"[rnnlab] initialised {copied} tensors from {self.init_from}"
                       + (f"; kept fresh: {', '.join(kept[:8])}{' ...' if len(kept) > 8 else ''}" if kept else ""))

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return opt
        sched = self.lr_scheduler_factory(opt)
        cfg = {"scheduler": sched, "interval": "epoch"}
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            cfg["monitor"] = self.monitor
        elif isinstance(sched, torch.optim.lr_scheduler.OneCycleLR):
            cfg["interval"] = "step"
        return {"optimizer": opt, "lr_scheduler": cfg}

    def count_unalignable(self, stage: str, n: int) -> None:
        """Adds ``n`` utterances excluded from a CTC loss; logged once per epoch by :meth:`log_unalignable`.

        Counted, not logged per step: every ``self.log`` call costs Lightning ~1 ms of Python.
        """
        self._unalignable[stage] = self._unalignable.get(stage, 0) + n

    def log_unalignable(self, stage: str) -> None:
        """Logs ``{stage}/unalignable``: the epoch's count, summed over ranks."""
        self.log(f"{stage}/unalignable", float(self._unalignable.get(stage, 0)), reduce_fx="sum", sync_dist=True)
        self._unalignable[stage] = 0

    def on_before_optimizer_step(self, optimizer) -> None:
        # Logged before clipping (Lightning clips after this hook): the lecture's exploding gradients show here.
        # One fused norm that stays on the device (Lightning's per-parameter `grad_norm` copies each parameter's
        # norm to the host: one GPU sync per tensor, every step).
        # Only on the steps Lightning writes to the loggers (`log_every_n_steps`): each `self.log` call costs ~1 ms.
        connector = getattr(self.trainer, "_logger_connector", None)
        if not getattr(connector, "should_update_logs", True):
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            self.log("train/grad_norm", total, on_step=True, on_epoch=False, prog_bar=False)

    @rank_zero_only
    def show_examples(self, stage: str, examples: list[tuple[str, str, str]],
                      audio: list[torch.Tensor] | None = None, sample_rate: int | None = None) -> None:
        """Prints ``(id, reference, hypothesis)`` rows and logs them to W&B as a table (never fails training).

        With ``audio`` (one waveform per example) the clips are also logged as playable W&B audio, captioned with
        the id, reference and hypothesis.
        """
        if not examples:
            return
        from lightning.pytorch.loggers import WandbLogger

        lines = [f"  {i}\n    ref: {r}\n    hyp: {h}" for i, r, h in examples]
        self.print(f"[rnnlab] {stage} examples (epoch {self.current_epoch}):\n" + "\n".join(lines))
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    logger.log_text(key=f"{stage}/examples", columns=["id", "reference", "hypothesis"],
                                    data=[list(x) for x in examples], step=self.global_step)
                    if audio is not None and len(audio) == len(examples):
                        logger.log_audio(key=f"{stage}/audio", audios=[w.float().cpu().numpy() for w in audio],
                                         step=self.global_step, sample_rate=[sample_rate] * len(audio),
                                         caption=[f"{i} | ref: {r} | hyp: {h}" for i, r, h in examples])
                except Exception as e:  # noqa: BLE001 - tracking must never end training
                    self.print(f"[rnnlab] warning: could not log examples to W&B: {e}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "format": 1}
        # Options parsed by jsonargparse are instances of their range types (data.ranges): saved as plain numbers,
        # the checkpoint loads with weights_only (a model rebuilt from its hyperparameters holds such values).
        for key in (self.CHECKPOINT_HYPER_PARAMS_KEY, "datamodule_hyper_parameters"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint[key] = plain_numbers(checkpoint[key])


def batched_waveforms(waveforms: list[torch.Tensor], batch_size: int, device: torch.device | str = "cpu"):
    """Yields ``(indices, padded (B, S), lengths (B,))`` over ``waveforms`` sorted by length (less padding)."""
    order = sorted(range(len(waveforms)), key=lambda i: waveforms[i].numel())
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lengths = torch.tensor([waveforms[i].numel() for i in idx], dtype=torch.long)
        batch = torch.zeros(len(idx), int(lengths.max()))
        for b, i in enumerate(idx):
            batch[b, : lengths[b]] = waveforms[i]
        yield idx, batch.to(device), lengths.to(device)


def batched_by_length(fn, waveforms: list[torch.Tensor], batch_size: int, device) -> torch.Tensor:
    """Applies ``fn(padded (B, S), lengths (B,)) -> (B, D)`` over length-sorted batches; rows in input order."""
    if not waveforms:
        raise ValueError("no waveforms to process")
    rows: dict[int, torch.Tensor] = {}
    for idx, batch, lengths in batched_waveforms(waveforms, batch_size, device):
        rows.update(zip(idx, fn(batch, lengths).float().cpu(), strict=True))
    return torch.stack([rows[i] for i in range(len(waveforms))])


class InitFromError(DataError):
    """``init_from`` names no usable checkpoint (``rnnlab fit`` prints it as one line and exits 2)."""


def load_matching_weights(module: torch.nn.Module, ckpt_path: str | Path) -> tuple[int, list[str]]:
    """Copies every tensor of ``ckpt_path``'s state dict whose name and shape match ``module``'s.

    Returns the number copied and the names of ``module``'s tensors left as they were. Loads with
    ``weights_only=True`` (no pickled code runs). ``ckpt_path`` may name a shipped model (``english``).

    Raises:
        InitFromError: a missing, damaged or unrelated checkpoint (one line; ``rnnlab fit`` exits 2).
    """
    from pipelines.inference import InferenceError, resolve_checkpoint

    try:
        path = resolve_checkpoint(ckpt_path)
        state = read_checkpoint(path)
    except (FileNotFoundError, ValueError, InferenceError) as e:
        raise InitFromError(f"--model.init_args.init_from: {e}") from None
    state = state.get("state_dict", state)
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not matched:
        raise InitFromError(f"--model.init_args.init_from: {ckpt_path} shares no parameter (same name and shape) "
                            f"with {type(module).__name__} (a checkpoint of another pipeline or size?)")
    with torch.no_grad():
        for k, v in matched.items():
            own[k].copy_(v)
    return len(matched), [k for k in own if k not in matched]


def load_module(ckpt_path: str | Path, map_location: str = "cpu") -> RnnlabModule:
    """Loads any rnnlab pipeline from its checkpoint (the class is recorded in the checkpoint).

    Raises:
        FileNotFoundError / ValueError: one line naming the file (:func:`check_checkpoint`).
    """
    path = Path(ckpt_path)
    meta = check_checkpoint(path)
    module_name, _, cls_name = meta["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    model = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    model.eval()
    return model
