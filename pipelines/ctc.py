"""CTC speech recognition: raw waveform -> log-mel -> stacked (bi)LSTM/GRU -> CTC, with WER/CER and decoding.

Run it with ``make train-ctc`` (embedded synthetic corpus), ``make train-ctc DATA=arctic`` or
``rnnlab fit -c defaults -c ctc [-c speech-arctic -c ctc-arctic]``.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.text import CharErrorRate, WordErrorRate

from data.audio import load_audio
from data.ranges import NonNegativeInt, UnitIntervalRightOpen
from data.tokenizers import tokenizer_from_dict
from modules.ctc import CTCAcousticModel, ctc_loss_checked, min_ctc_frames_padded
from modules.ctc_decoding import CTCBeamDecoder, greedy_decode
from modules.ngram_lm import NGramLM
from pipelines.base import (
    FLAT_SPEECH,
    EncoderOptions,
    FrontendOptions,
    RnnlabModule,
    batched_waveforms,
)


class CTCSpeechRecognizer(RnnlabModule):
    """Many-to-many speech recognition trained with CTC.

    Args:
        vocab: Tokenizer dict from the DataModule (saved in the checkpoint).
        frontend: Log-mel frontend options (:class:`~pipelines.base.FrontendOptions`). A unidirectional model with
            ``normalize: global`` or ``none`` streams exactly (``transcribe --stream``), also while the audio
            still arrives.
        encoder: Recurrent encoder options (:class:`~pipelines.base.EncoderOptions`; fused cuDNN path on GPU,
            ``lstm`` or ``gru``).
        dropout: Before the CTC head, and between encoder layers unless ``encoder.dropout`` is set.
        augment: Waveform degradations while training (noise, reverberation, band limits, EQ, codec, gain, DC):
            keyword arguments of :class:`modules.augment.WaveformAugment` (``{}``: its defaults); None disables.
        noise_dir: Local corpus whose ``silence`` training clips are the noise bank of ``augment`` (e.g.
            ``../shared/data/speech_commands``); None: synthetic white/pink noise.
        val_examples: Reference/hypothesis pairs printed and logged each validation epoch.
        init_from: Checkpoint to start from (fine-tuning); see :class:`~pipelines.base.RnnlabModule`.
        legacy: The flat options of checkpoints and callers from before ``frontend``/``encoder`` (``n_mels``,
            ``hidden_size``, ...), read at their nested place.
    """

    monitor = "val/cer"
    monitor_mode = "min"
    run_prefix = "ctc"
    legacy_options = FLAT_SPEECH

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        frontend: FrontendOptions = FrontendOptions(stack_frames=2),
        encoder: EncoderOptions = EncoderOptions(hidden_size=320, num_layers=4),
        dropout: UnitIntervalRightOpen = 0.15,
        augment: dict | None = None,
        noise_dir: str | None = None,
        val_examples: NonNegativeInt = 4,
        init_from: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, init_from=init_from)
        if vocab is None:
            raise ValueError("CTCSpeechRecognizer needs vocab (the tokenizer; the CLI links it from the DataModule)")
        options = self.save_network_options(legacy, frontend=frontend, encoder=encoder, dropout=dropout)
        self.tokenizer = tokenizer_from_dict(vocab)
        self.build_augment(augment, noise_dir, options["frontend"]["sample_rate"])
        self.model = CTCAcousticModel.from_options(**options, vocab_size=len(self.tokenizer), head_dropout=dropout)
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({"wer": WordErrorRate(), "cer": CharErrorRate()}) for stage in ("val", "test")})
        self._examples: list[tuple[str, str, str]] = []
        self._example_audio: list[torch.Tensor] = []
        # Set by `rnnlab validate/test --decode.beam_size N --decode.lm FILE`; None = greedy.
        self.eval_decoder: CTCBeamDecoder | None = None
        # Per-corpus WER/CER when the DataModule mixes several sources (built in `setup`, never saved).
        self.source_metrics: nn.ModuleDict | None = None
        self._source_names: list[str] = []

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``(B, T, V)`` and frame lengths ``(B,)`` for waveforms ``(B, S)``."""
        return self.model(waveforms, lengths)

    def decode_greedy(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(ids) for ids in greedy_decode(log_probs, lengths, blank=self.tokenizer.blank)]

    def _shared_step(self, batch: dict | None, stage: str, batch_idx: int = 0):
        if batch is None:
            # Every file of the batch failed to decode (already counted and warned). A zero loss that touches
            # every parameter keeps DDP ranks in step (each expects gradients for all parameters).
            return sum(p.sum() for p in self.parameters()) * 0.0 if stage == "train" else None
        if stage == "train":
            batch = self.augment_batch(batch)
        loss, outputs = self.compute_loss(batch, stage)
        if stage in ("val", "test"):
            hyps = self.batch_hypotheses(outputs)
            refs = batch["texts"]
            self.metrics[stage]["wer"].update(hyps, refs)
            self.metrics[stage]["cer"].update(hyps, refs)
            if "sources" in batch and self.source_metrics is not None:
                self._update_source_metrics(batch["sources"].tolist(), hyps, refs)
            # A fixed, spread-out sample (by a hash of the id), not just the first (shortest) batch.
            for b, (i, h, r) in enumerate(zip(batch["ids"], hyps, refs, strict=True)):
                if len(self._examples) < self.hparams.val_examples and zlib.crc32(str(i).encode()) % 8 == 0:
                    self._examples.append((i, r, h))
                    self._example_audio.append(batch["waveforms"][b, : int(batch["lengths"][b])].detach().cpu())
        return loss

    def compute_loss(self, batch: dict, stage: str) -> tuple[torch.Tensor, tuple]:
        """The batch's loss (logged as ``{stage}/loss``) and what :meth:`batch_hypotheses` decodes."""
        log_probs, out_lengths = self(batch["waveforms"], batch["lengths"])
        loss, n_ok = self.checked_ctc_loss(log_probs, out_lengths, batch, stage)
        if n_ok:
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n_ok, sync_dist=stage != "train")
        return loss, (log_probs, out_lengths)

    def checked_ctc_loss(self, log_probs: torch.Tensor, out_lengths: torch.Tensor, batch: dict,
                         stage: str) -> tuple[torch.Tensor, int]:
        """CTC loss over the rows whose audio is long enough for their text (the rest counted and named)."""
        need = min_ctc_frames_padded(batch["targets"], batch["target_lengths"])
        loss, alignable = ctc_loss_checked(log_probs, out_lengths, batch["targets"], batch["target_lengths"],
                                           blank=self.tokenizer.blank, min_frames=need)
        n_bad = int((~alignable).sum())
        self.count_unalignable(stage, n_bad)
        if n_bad and stage == "train":
            bad = [i for i, ok in zip(batch["ids"], alignable.tolist(), strict=True) if not ok]
            self.print(f"[rnnlab] excluded {n_bad} utterance(s) too long for their audio after subsampling: "
                       f"{', '.join(bad[:5])}")
        return loss, int(alignable.sum())

    def batch_hypotheses(self, outputs: tuple) -> list[str]:
        """Texts of a validation/test batch: greedy, or ``eval_decoder`` when ``rnnlab validate/test`` set one."""
        log_probs, out_lengths = outputs
        if self.eval_decoder is not None and not self.trainer.training:
            ids = self.eval_decoder.decode(log_probs.float().cpu(), out_lengths.cpu())
            return [self.tokenizer.decode(x) for x in ids]
        return self.decode_greedy(log_probs, out_lengths)

    def setup(self, stage: str) -> None:
        super().setup(stage)  # init_from weights
        dm = getattr(self.trainer, "datamodule", None) if getattr(self, "_trainer", None) is not None else None
        names = list(getattr(dm, "source_names", None) or [])
        self._source_names = names
        self._eval_sources = {st: [s.name for s in dm.sources if s.split(st)] for st in ("val", "test")} if names else {}
        self.source_metrics = nn.ModuleDict({
            n: nn.ModuleDict({"wer": WordErrorRate(), "cer": CharErrorRate()}) for n in names}).to(self.device) \
            if names else None

    def _update_source_metrics(self, sources: list[int], hyps: list[str], refs: list[str]) -> None:
        for k in sorted(set(sources)):
            pick = [b for b, s in enumerate(sources) if s == k]
            m = self.source_metrics[self._source_names[k]]
            m["wer"].update([hyps[b] for b in pick], [refs[b] for b in pick])
            m["cer"].update([hyps[b] for b in pick], [refs[b] for b in pick])

    def _log_source_metrics(self, stage: str) -> None:
        # Every rank computes every source in the same order: torchmetrics reduces across ranks inside compute().
        import warnings

        for name in self._eval_sources.get(stage, []):
            m = self.source_metrics[name]
            with warnings.catch_warnings():  # a rank (or a sanity check) may have seen none of this source's utterances
                warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
                self.log(f"{stage}/{name}/wer", m["wer"].compute() * 100)
                self.log(f"{stage}/{name}/cer", m["cer"].compute() * 100)
            m["wer"].reset()
            m["cer"].reset()

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        frac = dm.padding_fraction("train") if dm is not None and hasattr(dm, "padding_fraction") else None
        if frac is not None:
            self.log("train/padding_fraction", frac, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.log_unalignable("train")

    def _epoch_end(self, stage: str) -> None:
        self.log_unalignable(stage)
        wer = self.metrics[stage]["wer"].compute()
        cer = self.metrics[stage]["cer"].compute()
        self.log(f"{stage}/wer", wer * 100, prog_bar=True)
        self.log(f"{stage}/cer", cer * 100, prog_bar=True)
        for m in self.metrics[stage].values():
            m.reset()
        if self.source_metrics is not None:
            self._log_source_metrics(stage)
        if not self.trainer.sanity_checking:
            self.show_examples(stage, self._examples, audio=self._example_audio, sample_rate=self.sample_rate)
        self._examples, self._example_audio = [], []

    # -- inference ----------------------------------------------------------------------------------------------
    def make_decoder(self, *, beam_size: int = 1, lm_path: str | None = None, lm_weight: float = 0.5,
                     word_bonus: float = 0.0) -> CTCBeamDecoder | None:
        """A prefix beam search decoder (None for greedy: ``beam_size <= 1`` and no LM)."""
        if beam_size <= 1 and lm_path is None:
            return None
        lm = NGramLM.from_arpa(lm_path) if lm_path else None
        tokens = list(self.tokenizer.tokens)
        return CTCBeamDecoder(tokens=tokens, blank=self.tokenizer.blank, beam_size=max(beam_size, 1), lm=lm,
                              lm_weight=lm_weight, word_bonus=word_bonus)

    @torch.no_grad()
    def transcribe_waveforms(self, waveforms: list[torch.Tensor], decoder: CTCBeamDecoder | None = None,
                             batch_size: int = 8) -> list[str]:
        """Transcribes mono waveforms already at ``sample_rate``."""
        self.eval()
        results: dict[int, str] = {}
        for idx, batch, lengths in batched_waveforms(waveforms, batch_size, self.device):
            results.update(zip(idx, self.decode_waveforms(batch, lengths, decoder), strict=True))
        return [results[i] for i in range(len(waveforms))]

    def decode_waveforms(self, waveforms: torch.Tensor, lengths: torch.Tensor, decoder=None) -> list[str]:
        """Texts of a padded batch ``(B, S)``: greedy, or with ``decoder`` (from :meth:`make_decoder`)."""
        log_probs, out_lengths = self(waveforms, lengths)
        if decoder is None:
            return self.decode_greedy(log_probs, out_lengths)
        return [self.tokenizer.decode(ids) for ids in decoder.decode(log_probs.cpu(), out_lengths.cpu())]

    def transcribe_files(self, paths: list[str], **kw) -> list[str]:
        from data.audio import AudioRef

        wavs = [load_audio(AudioRef(path=str(p)), self.sample_rate) for p in paths]
        return self.transcribe_waveforms(wavs, **kw)
