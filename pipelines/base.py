"""Shared LightningModule plumbing: the nested network options, optimiser wiring, gradient-norm logging,
checkpoint metadata, loading."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only

from data.errors import DataError
from data.ranges import (
    ClosedUnitInterval,
    NonNegativeInt,
    OneToEight,
    PositiveFloat,
    PositiveInt,
    SpeedFactor,
    UnitIntervalRightOpen,
    plain_numbers,
)
from pipelines.training.checkpointing import CKPT_KEY, check_checkpoint, read_checkpoint, renamed_keys


@dataclasses.dataclass(frozen=True)
class FrontendOptions:
    """The log-mel frontend (:class:`modules.frontend.LogMelFrontend`): ``--model.init_args.frontend.NAME``.

    Each task sets its own defaults; a config names only what it changes (``frontend: {stack_frames: 3}``).

    Attributes:
        sample_rate / n_mels / win_ms / hop_ms: Input rate (Hz), mel bins, analysis window and hop (ms).
        normalize: ``utterance`` (each utterance's mean and variance), ``global`` (of all training frames, saved
            with the model; a unidirectional model then streams exactly) or ``none``.
        stack_frames: Frames concatenated and subsampled before the encoder (1-8).
        spec_augment / freq_masks / freq_mask_width / time_masks / time_mask_width / time_mask_max_frac:
            SpecAugment while training (a time mask is also capped at that fraction of the utterance).
        speed_perturb: Speed factors drawn per utterance while training (e.g. ``[0.9, 1.0, 1.1]``); null disables.
    """

    sample_rate: PositiveInt = 16000
    n_mels: PositiveInt = 80
    win_ms: PositiveFloat = 25.0
    hop_ms: PositiveFloat = 10.0
    normalize: Literal["utterance", "global", "none"] = "utterance"
    stack_frames: OneToEight = 1
    spec_augment: bool = True
    freq_masks: NonNegativeInt = 2
    freq_mask_width: NonNegativeInt = 15
    time_masks: NonNegativeInt = 2
    time_mask_width: NonNegativeInt = 40
    time_mask_max_frac: ClosedUnitInterval = 0.1
    speed_perturb: list[SpeedFactor] | None = None


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
    """The recurrent encoder (:class:`modules.encoders.RecurrentEncoder`): ``--model.init_args.encoder.NAME``.

    Each task sets its own defaults; a config names only what it changes (``encoder: {hidden_size: 256}``).

    Attributes:
        cell: ``lstm`` or ``gru`` (the slot tagger's also ``elman`` and ``jordan``).
        hidden_size / num_layers / bidirectional: Units per direction, layers (1-8), a backward direction per layer.
        dropout: Between layers; null: the model's own ``dropout``.
        implementation: ``fused`` (torch kernels), ``reference`` (from-scratch cells) or ``auto`` (fused where
            torch has the cell).
        length_handling: Exact lengths through reversal within each length (``reverse``) or PackedSequence
            (``packed``); the same numbers.
        pyramid_layers: The last layer boundaries that halve time (below ``num_layers``).
        projection_size: A linear layer after the stack to this width; null: none.
    """

    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: PositiveInt = 256
    num_layers: OneToEight = 2
    bidirectional: bool = True
    dropout: UnitIntervalRightOpen | None = None
    implementation: Literal["auto", "fused", "reference"] = "auto"
    length_handling: Literal["reverse", "packed"] = "reverse"
    pyramid_layers: NonNegativeInt = 0
    projection_size: PositiveInt | None = None


#: The old flat names of the frontend and encoder options, read at their nested place (``legacy_options``).
FLAT_FRONTEND = tuple(f.name for f in dataclasses.fields(FrontendOptions) if f.name != "time_mask_max_frac")
FLAT_ENCODER = ("cell", "hidden_size", "num_layers", "bidirectional", "implementation", "length_handling")


def flat_names(group: str, names: tuple[str, ...], **renamed: str) -> dict[str, str]:
    """``{old flat name: "group.name"}`` for ``names``, and for ``renamed`` old names (``listener_hidden=
    "hidden_size"``)."""
    return {**{n: f"{group}.{n}" for n in names}, **{old: f"{group}.{new}" for old, new in renamed.items()}}


#: The flat options of the audio tasks that had every frontend and encoder option (CTC, classifier, siamese).
FLAT_SPEECH = {**flat_names("frontend", FLAT_FRONTEND), **flat_names("encoder", FLAT_ENCODER)}


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected a mapping of options, got {value!r}")


def _upgrade_loaded_state(module: RnnlabModule, state_dict: dict, prefix: str, *_: Any) -> None:
    """Load pre-hook: renames, in the state dict being loaded, the weights :attr:`RnnlabModule.legacy_state_prefixes`
    lists (under the module's own ``prefix``)."""
    mine = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    for old, new in renamed_keys(mine, type(module).legacy_state_prefixes).items():
        state_dict[prefix + new] = state_dict.pop(prefix + old)


def _declared_default(cls: type, name: str) -> Any:
    """The default of ``name`` in the first ``__init__`` up ``cls``'s MRO that declares it."""
    for klass in inspect.getmro(cls):
        init = vars(klass).get("__init__")
        if init is not None and name in inspect.signature(init).parameters:
            return inspect.signature(init).parameters[name].default
    raise TypeError(f"{cls.__name__} has no option {name!r}")


class RnnlabModule(L.LightningModule):
    """Base of every rnnlab pipeline.

    Subclasses set ``monitor`` / ``monitor_mode`` (the metric that selects the best checkpoint) and
    ``run_prefix`` (the name runs get), take ``vocab: dict | None`` from their DataModule (linked by the CLI),
    take their network's nested ``frontend`` / ``encoder`` options and call :meth:`save_network_options` (which
    also saves the hyperparameters, so a checkpoint rebuilds the model without the training data), and
    implement ``_shared_step(batch, stage, batch_idx)`` and ``_epoch_end(stage)``.

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
    #: Old flat option names the task still reads (checkpoints, configs and callers from before the nested
    #: options) and where each now lives, e.g. ``{"hidden_size": "encoder.hidden_size"}``.
    legacy_options: ClassVar[dict[str, str]] = {}
    #: Old weight-name prefixes of layers that moved into the task's network class, and where they now live
    #: (``{"speller.": "model.speller."}``): every load of an older state dict reads them at the new place
    #: (:meth:`upgrade_state_dict`).
    legacy_state_prefixes: ClassVar[dict[str, str]] = {}

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
        # Every load_state_dict (load_from_checkpoint, a resumed fit, validate/test --ckpt) renames old weights.
        self.register_load_state_dict_pre_hook(_upgrade_loaded_state)

    @classmethod
    def upgrade_state_dict(cls, state: Mapping[str, Any]) -> dict:
        """``state`` with the weights of :attr:`legacy_state_prefixes` under their current names (the rest, and
        a state dict already current, as they are)."""
        renames = renamed_keys(state, cls.legacy_state_prefixes)
        return {renames.get(k, k): v for k, v in state.items()}

    @classmethod
    def upgrade_options(cls, options: Mapping[str, Any]) -> dict:
        """``options`` (a config's ``init_args``, saved hyperparameters) with every old flat name of
        :attr:`legacy_options` moved to its nested place (``hidden_size: 256`` -> ``encoder: {hidden_size: 256}``;
        a flat value wins over the same nested one)."""
        out = dict(options)
        for old, new in cls.legacy_options.items():
            if old in out:
                group, _, name = new.partition(".")
                out[group] = {**_as_dict(out.get(group)), name: out.pop(old)}
        return out

    def save_network_options(self, legacy: dict, *, dropout: float | None = None, **given: Any) -> dict[str, dict]:
        """The nested options of the task's network, complete, as plain dicts; saved as hyperparameters with the
        rest of the calling ``__init__``'s arguments (optimiser and scheduler left out), so a checkpoint rebuilds
        the model without the training data.

        Each of ``given`` (``frontend=...``, ``encoder=...``: a dataclass from the parser, or a partial mapping from
        Python or a checkpoint) is laid over the task's default for it, with the old flat names of ``legacy`` (the
        ``**legacy`` keywords of ``__init__``) applied; no old flat name is saved. An encoder's null ``dropout``
        becomes ``dropout``. Raises TypeError for a keyword the task never had, ValueError (one line) for a bad
        option.
        """
        unknown = sorted(set(legacy) - set(self.legacy_options))
        if unknown:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}")
        upgraded = self.upgrade_options({**given, **legacy})
        legacy.clear()  # saved hyperparameters hold the nested form only
        out = {}
        for group in given:
            base = _as_dict(_declared_default(type(self), group))
            value = _as_dict(upgraded[group])
            if bad := sorted(set(value) - set(base)):
                raise ValueError(f"{group}.{bad[0]} is not an option (options: {', '.join(base)})")
            out[group] = {**base, **value}
        if "encoder" in out:
            enc = out["encoder"]
            if not 0 <= enc["pyramid_layers"] < enc["num_layers"]:
                raise ValueError(f"encoder.pyramid_layers must be below encoder.num_layers = {enc['num_layers']} "
                                 f"(each halves time between two layers), got {enc['pyramid_layers']}")
            if enc["dropout"] is None:
                enc["dropout"] = dropout if dropout is not None else 0.0
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"], frame=inspect.currentframe().f_back)
        for hp in (self._hparams, self._hparams_initial):
            for old in self.legacy_options:
                hp.pop(old, None)
            hp.update(out)
        return out

    @property
    def sample_rate(self) -> int | None:
        """The sample rate (Hz) the model's frontend expects; None for a model of text."""
        frontend = self.hparams.get("frontend")
        return int(frontend["sample_rate"]) if frontend else None

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

    # -- one shared step for train/val/test; the epoch's metrics logged by ``_epoch_end`` ------------------------
    def _shared_step(self, batch, stage: str, batch_idx: int = 0):  # pragma: no cover - each task has its own
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test", batch_idx)

    def _epoch_end(self, stage: str) -> None:
        """Logs (and resets) the ``val`` or ``test`` epoch's metrics."""

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

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
    if isinstance(module, RnnlabModule):
        state = module.upgrade_state_dict(state)
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
