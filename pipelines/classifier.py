"""Many-to-one classification of utterances (spoken digit recognition on FSDD): BiLSTM + pooling -> softmax.

Run it with ``make train-digits`` (= ``rnnlab fit -c defaults -c digits``), then
``rnnlab test --ckpt <run>/checkpoints/best.ckpt`` for the FSDD test accuracy.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from data.ranges import ClosedUnitInterval, UnitIntervalRightOpen
from modules.heads import SequenceClassifier
from pipelines.base import (
    FLAT_SPEECH,
    EncoderOptions,
    FrontendOptions,
    RnnlabModule,
    batched_by_length,
)


class UtteranceClassifier(RnnlabModule):
    """One label per utterance: log-mel -> stacked (bi)LSTM/GRU -> pooling -> dropout -> linear -> softmax.

    Args:
        vocab: Label set from the DataModule (``{"labels": [...]}``, saved in the checkpoint).
        frontend: Log-mel frontend options (:class:`~pipelines.base.FrontendOptions`; SpecAugment and speed
            perturbation act while training only).
        encoder: Recurrent encoder options (:class:`~pipelines.base.EncoderOptions`).
        dropout: Before the output layer, and between encoder layers unless ``encoder.dropout`` is set.
        augment / noise_dir: Waveform degradations while training and their noise bank, as for
            :class:`~pipelines.ctc.CTCSpeechRecognizer`.
        pooling: ``last`` / ``mean`` / ``max`` / ``attention`` over the encoder's outputs.
        label_smoothing: Cross-entropy label smoothing.
        init_from: Checkpoint to start from; see :class:`~pipelines.base.RnnlabModule`.
        legacy: Flat options from before ``frontend``/``encoder`` (``n_mels``, ``hidden_size``, ...).
    """

    monitor = "val/acc"
    monitor_mode = "max"
    run_prefix = "classifier"
    legacy_options = FLAT_SPEECH

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        frontend: FrontendOptions = FrontendOptions(sample_rate=8000, n_mels=40, freq_mask_width=6,
                                                    time_mask_width=8, time_mask_max_frac=0.2),
        encoder: EncoderOptions = EncoderOptions(hidden_size=128, num_layers=2),
        dropout: UnitIntervalRightOpen = 0.2,
        augment: dict | None = None,
        noise_dir: str | None = None,
        pooling: Literal["last", "mean", "max", "attention"] = "mean",
        label_smoothing: ClosedUnitInterval = 0.0,
        init_from: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, init_from=init_from)
        labels = list((vocab or {}).get("labels", []))
        if len(labels) < 2:
            raise ValueError(f"UtteranceClassifier needs vocab={{'labels': [...]}} with at least 2 labels (the CLI "
                             f"links it from the DataModule), got {vocab!r}")
        options = self.save_network_options(legacy, frontend=frontend, encoder=encoder, dropout=dropout)
        self.labels = labels
        self.build_augment(augment, noise_dir, options["frontend"]["sample_rate"])
        self.model = SequenceClassifier.from_options(**options, num_classes=len(labels), pooling=pooling,
                                                     dropout=dropout)
        self.metrics = nn.ModuleDict({
            stage: MulticlassAccuracy(num_classes=len(labels), average="micro", ignore_index=-1)
            for stage in ("val", "test")})

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for waveforms ``(B, S)``."""
        return self.model(waveforms, lengths)

    def _shared_step(self, batch: dict, stage: str, batch_idx: int = 0) -> torch.Tensor:
        if stage == "train":
            batch = self.augment_batch(batch)
        logits = self(batch["waveforms"], batch["lengths"])
        labels = batch["labels"]
        # -1 marks a label the training vocabulary lacks: it cannot be predicted, so it counts as neither loss
        # nor accuracy (and is reported by the DataModule's skip counts instead).
        loss = F.cross_entropy(logits, labels, ignore_index=-1, label_smoothing=self.hparams.label_smoothing)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch["ids"]), sync_dist=stage != "train")
        if stage != "train":
            self.metrics[stage].update(logits.argmax(-1), labels)
        return loss

    def _epoch_end(self, stage: str) -> None:
        self.log(f"{stage}/acc", self.metrics[stage].compute() * 100, prog_bar=True)
        self.metrics[stage].reset()

    @torch.no_grad()
    def classify_waveforms(self, waveforms: list[torch.Tensor], batch_size: int = 32) -> list[str]:
        """Predicted labels of mono waveforms already at ``sample_rate``."""
        probs = self.class_probabilities(waveforms, batch_size)
        return [self.labels[i] for i in probs.argmax(-1).tolist()]

    @torch.no_grad()
    def class_probabilities(self, waveforms: list[torch.Tensor], batch_size: int = 32) -> torch.Tensor:
        """Softmax probabilities ``(N, C)`` (columns in :attr:`labels` order) of mono waveforms at ``sample_rate``."""
        self.eval()
        logits = batched_by_length(lambda w, n: self(w, n), waveforms, batch_size, self.device)
        return logits.float().softmax(-1)
