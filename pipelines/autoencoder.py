"""Audio Word2Vec training: a sequence autoencoder (optionally denoising) over spoken words, no labels used.

Run it with ``make train-autoencoder`` (FSDD digits) or ``rnnlab fit -c defaults -c autoencoder
[-c autoencoder-denoising]``. Labels, when the data has them, serve only to score retrieval each validation
epoch (``val/map``) and to colour the embedding plot.

``target: same_word`` makes it a correspondence autoencoder (Kamper et al. 2015): the decoder rebuilds another
token of the same word (``data.init_args.pairs: true`` supplies it), usually started from a trained autoencoder
with ``init_from`` (``-c autoencoder-correspondence``). This one uses the labels for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only

from data.ranges import NonNegativeFloat, NonNegativeInt, PositiveInt, UnitIntervalRightOpen
from modules.autoencoder import SequenceAutoencoder, masked_mse
from pipelines.base import (
    FLAT_ENCODER,
    EncoderOptions,
    FrontendOptions,
    RnnlabModule,
    batched_by_length,
    flat_names,
)
from pipelines.training.metrics import log_retrieval
from pipelines.training.plots import log_images, pca_2d, save_embedding_plot, save_reconstruction_plot


class AudioAutoencoder(RnnlabModule):
    """Sequence autoencoder: log-mel frames -> (bi)RNN -> pooled embedding -> RNN decoder -> frames.

    Args:
        vocab: Label set from the DataModule (``{"labels": [...]}``), used only to name plot colours.
        frontend: Log-mel frontend options (:class:`~pipelines.base.FrontendOptions`; no SpecAugment by default:
            its frames are also the reconstruction target).
        encoder: Recurrent encoder options (:class:`~pipelines.base.EncoderOptions`).
        dropout: Between encoder layers (unless ``encoder.dropout`` is set).
        embedding_size / pooling: The fixed-size vector and how encoder outputs are pooled into it.
        decoder_hidden_size / decoder_layers / reverse_target: Decoder (see :class:`SequenceAutoencoder`).
        target: What the decoder rebuilds while training: ``self`` (the input's own frames, an autoencoder) or
            ``same_word`` (the frames of the batch's ``partner_waveforms``, another token of the same label, with
            the partner's length: a correspondence autoencoder; needs ``data.init_args.pairs: true``).
            Validation always scores reconstructing the input itself (``val/loss``) and retrieval (``val/map``).
        noise_std / frame_drop / time_masks / time_mask_width / freq_masks / freq_mask_width: Denoising: the
            training input is corrupted this way (all zero: a plain autoencoder); the target stays clean.
        retrieval_ks: Cut-offs of the precision@k logged each validation epoch.
        plot_examples: Spectrograms (input vs reconstruction) drawn each validation epoch; 0 disables plots.
        init_from: Checkpoint to start from; see :class:`~pipelines.base.RnnlabModule`.
        legacy: Flat options from before ``frontend``/``encoder`` (``n_mels``, ``hidden_size``, ...).
    """

    monitor = "val/map"
    monitor_mode = "max"
    run_prefix = "autoencoder"
    # The flat time_masks / freq_masks ... were (and are) the denoising corruption, not the frontend's SpecAugment.
    legacy_options = {**flat_names("frontend", ("sample_rate", "n_mels", "win_ms", "hop_ms", "stack_frames")),
                      **flat_names("encoder", FLAT_ENCODER)}

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        frontend: FrontendOptions = FrontendOptions(sample_rate=8000, n_mels=40, spec_augment=False),
        encoder: EncoderOptions = EncoderOptions(hidden_size=128, num_layers=2),
        dropout: UnitIntervalRightOpen = 0.0,
        embedding_size: PositiveInt = 128,
        pooling: Literal["last", "mean", "max", "attention"] = "last",
        decoder_hidden_size: PositiveInt = 128,
        decoder_layers: PositiveInt = 1,
        reverse_target: bool = True,
        target: Literal["self", "same_word"] = "self",
        noise_std: NonNegativeFloat = 0.0,
        frame_drop: UnitIntervalRightOpen = 0.0,
        time_masks: NonNegativeInt = 0,
        time_mask_width: NonNegativeInt = 5,
        freq_masks: NonNegativeInt = 0,
        freq_mask_width: NonNegativeInt = 5,
        retrieval_ks: tuple[PositiveInt, ...] = (1, 10),
        plot_examples: NonNegativeInt = 3,
        init_from: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, init_from=init_from)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if not 0 <= frame_drop < 1:
            raise ValueError(f"frame_drop must be in [0, 1), got {frame_drop}")
        if target not in ("self", "same_word"):
            raise ValueError(f"target must be self or same_word, got {target!r}")
        options = self.save_network_options(legacy, frontend=frontend, encoder=encoder, dropout=dropout)
        self.labels = list((vocab or {}).get("labels", []))
        self.model = SequenceAutoencoder.from_options(**options, embedding_size=embedding_size, pooling=pooling,
                                                      decoder_hidden_size=decoder_hidden_size,
                                                      decoder_layers=decoder_layers, reverse_target=reverse_target)
        corruption = {"noise_std": noise_std, "frame_drop": frame_drop, "time_masks": time_masks,
                      "time_mask_width": time_mask_width, "freq_masks": freq_masks, "freq_mask_width": freq_mask_width}
        self.corruption = corruption if (noise_std > 0 or frame_drop > 0 or time_masks or freq_masks) else None
        self._val: dict[str, list] = {}

    @property
    def denoising(self) -> bool:
        return self.corruption is not None

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, E)`` of waveforms ``(B, S)``."""
        return self.model.embed(waveforms, lengths)

    def _shared_step(self, batch: dict, stage: str, batch_idx: int = 0) -> torch.Tensor:
        targets = None
        if stage == "train" and self.hparams.target == "same_word":
            if "partner_waveforms" not in batch:
                raise ValueError("target: same_word needs training batches with partners: set "
                                 "data.init_args.pairs: true (a WordDataModule)")
            targets = (batch["partner_waveforms"], batch["partner_lengths"])
        out = self.model(batch["waveforms"], batch["lengths"], self.corruption if stage == "train" else None,
                         targets=targets)
        loss = masked_mse(out["reconstruction"], out["features"], out["frames"])
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch["ids"]), sync_dist=stage != "train")
        if stage != "train":
            self._val.setdefault("emb", []).append(out["embedding"].detach().float().cpu())
            self._val.setdefault("labels", []).extend(batch["labels"].tolist())
            if len(self._val.setdefault("examples", [])) < self.hparams.plot_examples:
                n = min(self.hparams.plot_examples - len(self._val["examples"]), len(batch["ids"]))
                k = self.model.frontend.stack_frames
                for b in range(n):
                    t = int(out["frames"][b])
                    # Stacked frames (T, k*F) are drawn as the k*T plain frames they hold.
                    feats, recon = (x[b, :t].detach().float().cpu().reshape(t * k, -1)
                                    for x in (out["features"], out["reconstruction"]))
                    self._val["examples"].append((batch["ids"][b], feats, recon))
        return loss

    def _epoch_end(self, stage: str) -> None:
        data, self._val = self._val, {}
        if not data.get("emb"):
            return
        emb = torch.cat(data["emb"])
        labels = data["labels"]
        log_retrieval(self, stage, emb, labels, self.hparams.retrieval_ks)
        if not self.trainer.sanity_checking and self.hparams.plot_examples > 0:
            self._plots(stage, emb, labels, data.get("examples", []))

    @rank_zero_only
    def _plots(self, stage: str, emb: torch.Tensor, labels: list[int], examples: list) -> None:
        # Pictures are a courtesy: a plotting or W&B failure is reported, never raised.
        try:
            out_dir = Path(self.trainer.default_root_dir) / "plots"
            tag = f"{stage}-epoch{self.current_epoch:03d}"
            names = [self.labels[i] if 0 <= i < len(self.labels) else str(i) for i in labels]
            paths = {
                f"{stage}/reconstruction": save_reconstruction_plot(examples, out_dir / f"{tag}-reconstruction.png"),
                f"{stage}/embeddings_pca": save_embedding_plot(pca_2d(emb), names, out_dir / f"{tag}-pca.png",
                                                               title=f"{stage} embeddings (PCA), epoch "
                                                                     f"{self.current_epoch}"),
            }
        except Exception as e:  # noqa: BLE001
            self.print(f"[rnnlab] warning: could not draw {stage} plots: {e}")
            return
        log_images(self.loggers, paths, step=self.global_step, warn=self.print)

    # -- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_waveforms(self, waveforms: list[torch.Tensor], batch_size: int = 32) -> torch.Tensor:
        """Embeddings ``(N, E)`` of mono waveforms already at ``sample_rate`` (batched by length)."""
        self.eval()
        return batched_by_length(lambda w, n: self(w, n), waveforms, batch_size, self.device)
