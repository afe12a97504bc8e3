"""Discriminative acoustic word embeddings: a Siamese recurrent encoder trained with a cosine triplet loss.

Run it with ``rnnlab fit -c defaults -c siamese`` (Speech Commands words; see the config's header). Training
batches hold K labels x M tokens (``data.init_args.labels_per_batch`` / ``tokens_per_label``) so every token has
same-word positives and other-word negatives in its batch. Each validation epoch logs the same-different average
precision of all validation pairs (``val/ap``, which picks the best checkpoint) and query-by-example retrieval
(``val/map``, ``val/p_at_k``), as the autoencoder does. ``rnnlab evaluate-retrieval`` / ``embed`` /
``linear-probe`` take its checkpoints as they take an autoencoder's.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from data.ranges import PositiveFloat, PositiveInt, UnitIntervalRightOpen
from modules.word_embedding import SequenceEmbedder, cosine_triplet_loss
from pipelines.base import (
    FLAT_SPEECH,
    EncoderOptions,
    FrontendOptions,
    RnnlabModule,
    batched_by_length,
)
from pipelines.training.metrics import log_retrieval


class SiameseWordEmbedder(RnnlabModule):
    """Log-mel frames -> (bi)RNN -> pooled -> linear embedding, trained so same-word tokens are cosine-close.

    The encoder's weights are named as :class:`~pipelines.autoencoder.AudioAutoencoder`'s (``model.frontend``,
    ``model.encoder``, ``model.pool``, ``model.to_embedding``): ``init_from`` an autoencoder checkpoint of the
    same sizes starts from its encoder.

    Args:
        vocab: Label set from the DataModule (``{"labels": [...]}``, saved in the checkpoint).
        frontend: Log-mel frontend options (:class:`~pipelines.base.FrontendOptions`; no SpecAugment by default).
        encoder: Recurrent encoder options (:class:`~pipelines.base.EncoderOptions`).
        dropout: Between encoder layers (unless ``encoder.dropout`` is set).
        embedding_size / pooling: The fixed-size vector and how encoder outputs are pooled into it.
        margin: Cosine triplet hinge margin: ``max(0, margin + cos(a, n) - cos(a, p))``.
        negatives: In-batch negative of each (anchor, positive) pair: ``hardest`` (most similar other-word token)
            or ``semi_hard`` (most similar one still less similar than the positive).
        retrieval_ks: Cut-offs of the precision@k logged each validation epoch.
        init_from: Checkpoint to start from (e.g. an autoencoder's); see :class:`~pipelines.base.RnnlabModule`.
        legacy: Flat options from before ``frontend``/``encoder`` (``n_mels``, ``hidden_size``, ...).
    """

    monitor = "val/ap"
    monitor_mode = "max"
    run_prefix = "siamese"
    legacy_options = FLAT_SPEECH

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        frontend: FrontendOptions = FrontendOptions(sample_rate=8000, n_mels=40, spec_augment=False,
                                                    freq_mask_width=6, time_mask_width=8, time_mask_max_frac=0.2),
        encoder: EncoderOptions = EncoderOptions(hidden_size=128, num_layers=2),
        dropout: UnitIntervalRightOpen = 0.0,
        embedding_size: PositiveInt = 128,
        pooling: Literal["last", "mean", "max", "attention"] = "last",
        margin: PositiveFloat = 0.4,
        negatives: Literal["hardest", "semi_hard"] = "semi_hard",
        retrieval_ks: tuple[PositiveInt, ...] = (1, 10),
        init_from: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, init_from=init_from)
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        options = self.save_network_options(legacy, frontend=frontend, encoder=encoder, dropout=dropout)
        self.labels = list((vocab or {}).get("labels", []))
        self.model = SequenceEmbedder.from_options(**options, embedding_size=embedding_size, pooling=pooling)
        self._val: dict[str, list] = {}

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, E)`` of waveforms ``(B, S)``."""
        return self.model(waveforms, lengths)

    def _shared_step(self, batch: dict, stage: str, batch_idx: int = 0) -> torch.Tensor | None:
        emb = self(batch["waveforms"], batch["lengths"])
        if stage != "train":  # validation and test: embeddings for the epoch's retrieval scores
            self._val.setdefault("emb", []).append(emb.detach().float().cpu())
            self._val.setdefault("labels", []).extend(batch["labels"].tolist())
            return None
        loss, stats = cosine_triplet_loss(emb, batch["labels"], margin=self.hparams.margin,
                                          negatives=self.hparams.negatives)
        n = len(batch["ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({"train/active_triplets": stats["active"], "train/pos_sim": stats["pos_sim"],
                       "train/neg_sim": stats["neg_sim"]}, batch_size=n)
        return loss

    def _epoch_end(self, stage: str) -> None:
        data, self._val = self._val, {}
        if not data.get("emb"):
            return
        log_retrieval(self, stage, torch.cat(data["emb"]), data["labels"], self.hparams.retrieval_ks)

    # -- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_waveforms(self, waveforms: list[torch.Tensor], batch_size: int = 32) -> torch.Tensor:
        """Embeddings ``(N, E)`` of mono waveforms already at ``sample_rate`` (batched by length)."""
        self.eval()
        return batched_by_length(lambda w, n: self(w, n), waveforms, batch_size, self.device)
