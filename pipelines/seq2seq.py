"""Attention sequence-to-sequence: Listen-Attend-Spell speech recognition (with optional joint CTC) and G2P.

Input and output lengths are unrelated and no alignment is given: the speller's attention reads the part of
the encoder memory it needs. Two pipelines share the training, decoding and attention-map code here; their
networks are :class:`~modules.seq2seq.LASNetwork` and :class:`~modules.seq2seq.G2PNetwork` (``self.model``):

- :class:`LASRecognizer`: waveform -> log-mel -> pyramidal BiLSTM listener -> attention speller (characters),
  trained with ``ctc_weight * CTC + (1 - ctc_weight) * attention`` when ``ctc_weight > 0`` (a CTC head on the
  listener), and decoded greedily or with beam search that can add CTC prefix scores.
- :class:`G2PModel`: letters -> BiLSTM encoder -> attention speller (phonemes), scored by phoneme error rate
  and word error rate against every pronunciation of a word.

Run them with ``make train-seq2seq`` / ``make train-g2p`` (``rnnlab fit -c defaults -c seq2seq`` / ``-c g2p``).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchmetrics.text import CharErrorRate, WordErrorRate

from data.audio import load_audio
from data.g2p import G2PVocab
from data.ranges import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitIntervalRightOpen,
)
from data.text import normalize_text
from data.tokenizers import tokenizer_from_dict
from modules.ctc import ctc_loss_checked, min_ctc_frames_padded
from modules.seq2seq import G2PNetwork, LASNetwork, attention_loss, beam_search_batch, greedy_decode
from pipelines.base import EncoderOptions, FrontendOptions, RnnlabModule, batched_waveforms, flat_names
from pipelines.training.metrics import PhonemeErrorRates
from pipelines.training.plots import plot_attention_maps


class Seq2SeqModule(RnnlabModule):
    """Shared training, decoding and attention maps of the attention encoder-decoder pipelines.

    Subclasses build ``self.model`` (a network with a ``speller`` and a ``ctc_head``, None without a CTC branch)
    and implement :meth:`encode`, :meth:`detokenize` and :meth:`_update_metrics`.
    """

    # Where the layers of checkpoints from before the network classes now live (see upgrade_state_dict).
    legacy_state_prefixes = {"speller.": "model.speller.", "ctc_head.": "model.ctc_head."}

    def _init_decoding(self, *, ctc_weight: float, sampling_prob: float) -> None:
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        if not 0.0 <= sampling_prob <= 1.0:
            raise ValueError(f"sampling_prob must be in [0, 1], got {sampling_prob}")
        self._examples: list[tuple[str, str, str]] = []
        self._example_audio: list[torch.Tensor] = []
        self._attention_maps: list[tuple] = []
        # Set by `rnnlab validate/test --decode.beam_size N`; None = the model's own settings.
        self.eval_decoder: dict | None = None

    @staticmethod
    def speller_options(*, embed_size: int, speller_hidden: int, speller_layers: int, attention: str,
                        attention_size: int, input_feeding: bool) -> dict:
        """The :class:`~modules.seq2seq.Speller` keyword arguments of the pipeline's flat speller options."""
        return {"embed_size": embed_size, "hidden_size": speller_hidden, "num_layers": speller_layers,
                "attention": attention, "attention_size": attention_size, "input_feeding": input_feeding}

    @property
    def ctc_weight(self) -> float:
        """lambda of the joint loss (0 for models without a CTC branch, such as G2P: a word can have more
        phonemes than letters)."""
        return float(self.hparams.get("ctc_weight", 0.0))

    # -- to implement -------------------------------------------------------------------------------------------
    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:  # pragma: no cover
        raise NotImplementedError

    def _update_metrics(self, stage: str, hyps: list[str], batch: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def _references(self, batch: dict) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def _input_labels(self, batch: dict, k: int) -> list[str] | None:
        """Tick labels for the input axis of attention plots (None: frame numbers)."""
        return None

    def _output_labels(self, ids: list[int]) -> list[str]:
        return [self.detokenize([i]) or "_" for i in ids] + ["</s>"]

    # -- decoding -----------------------------------------------------------------------------------------------
    def _decode_kwargs(self) -> dict:
        hp = self.hparams
        return {"max_ratio": hp.max_output_ratio, "max_extra": hp.max_output_extra}

    def make_decoder(self, *, beam_size: int = 1, lm_path: str | None = None, ctc_weight: float | None = None,
                     **_: Any) -> dict | None:
        """Decoding settings for validate/test (None: greedy, as during training)."""
        if lm_path:
            raise ValueError("attention models decode without a word LM (--decode.lm is for CTC models)")
        if beam_size <= 1 and ctc_weight is None:
            return None
        return {"beam_size": max(beam_size, 1), "ctc_weight": ctc_weight}

    def decode(self, memory: torch.Tensor, lengths: torch.Tensor, *, beam_size: int | None = None,
               ctc_weight: float | None = None, ctc: tuple[torch.Tensor, torch.Tensor] | None = None,
               ) -> tuple[list[list[int]], list[torch.Tensor] | None]:
        """Token ids per input (input order) and, for greedy decoding, attention weights per input."""
        hp = self.hparams
        beam = hp.beam_size if beam_size is None else beam_size
        weight = hp.decode_ctc_weight if ctc_weight is None else ctc_weight
        if weight is None:
            weight = self.ctc_weight
        if ctc is None or self.model.ctc_head is None:
            weight = 0.0
        if beam <= 1 and weight == 0:
            return greedy_decode(self.model.speller, memory, lengths, **self._decode_kwargs())
        ids = beam_search_batch(
            self.model.speller, memory, lengths, beam_size=beam, length_penalty=hp.length_penalty,
            eos_threshold=hp.eos_threshold, ctc_log_probs=ctc[0] if weight > 0 else None,
            ctc_lengths=ctc[1] if weight > 0 else None, ctc_weight=weight, blank=getattr(self, "blank", 0),
            **self._decode_kwargs())
        return ids, None

    def _ctc(self, memory: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        head = self.model.ctc_head
        return (head(memory), lengths) if head is not None else None

    # -- steps --------------------------------------------------------------------------------------------------
    def _sampling_prob(self) -> float:
        hp = self.hparams
        return hp.sampling_prob if self.training and self.current_epoch >= hp.sampling_start_epoch else 0.0

    def _shared_step(self, batch: dict | None, stage: str, batch_idx: int = 0):
        if batch is None:
            return sum(p.sum() for p in self.parameters()) * 0.0 if stage == "train" else None
        hp = self.hparams
        memory, lengths = self.encode(batch)
        targets, target_lengths = batch["targets"], batch["target_lengths"]
        speller = self.model.speller
        logits, _ = speller(memory, lengths, targets, target_lengths, sampling_prob=self._sampling_prob())
        att = attention_loss(logits, targets, target_lengths, speller.eos, hp.label_smoothing)
        bs = len(batch["ids"])
        loss = att
        ctc = self._ctc(memory, lengths)
        if ctc is not None and self.ctc_weight > 0:
            ctc_loss, ok = ctc_loss_checked(ctc[0], ctc[1], targets, target_lengths, blank=self.blank,
                                            min_frames=min_ctc_frames_padded(targets, target_lengths))
            self.count_unalignable(stage, int((~ok).sum()))
            if ok.any():
                loss = self.ctc_weight * ctc_loss + (1 - self.ctc_weight) * att
                self.log(f"{stage}/ctc_loss", ctc_loss, batch_size=bs, sync_dist=stage != "train")
        self.log(f"{stage}/att_loss", att, batch_size=bs, sync_dist=stage != "train")
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        if stage in ("val", "test"):
            if self.trainer.state.fn == "fit":
                settings = {"beam_size": 1, "ctc_weight": 0.0}  # validation while training: fast greedy, with maps
            else:
                settings = self.eval_decoder or {}
            ids, weights = self.decode(memory, lengths, ctc=ctc, **settings)
            hyps = [self.detokenize(x) for x in ids]
            self._update_metrics(stage, hyps, batch)
            refs = self._references(batch)
            for k, (i, h, r) in enumerate(zip(batch["ids"], hyps, refs, strict=True)):
                if len(self._examples) < hp.val_examples and zlib.crc32(str(i).encode()) % 8 == 0:
                    self._examples.append((str(i), r, h))
                    if "waveforms" in batch:
                        self._example_audio.append(batch["waveforms"][k, : int(batch["lengths"][k])].detach().cpu())
                if weights is not None and batch_idx == 0 and k < hp.attention_plots:
                    self._attention_maps.append((str(i), h, weights[k], self._input_labels(batch, k),
                                                 self._output_labels(ids[k])))
        return loss

    def _log_unalignable(self, stage: str) -> None:
        if self.model.ctc_head is not None and self.ctc_weight > 0:
            self.log_unalignable(stage)

    def on_train_epoch_end(self) -> None:
        self._log_unalignable("train")

    def _epoch_end(self, stage: str) -> None:
        self._log_unalignable(stage)
        for name, value in self._compute_metrics(stage).items():
            self.log(f"{stage}/{name}", value * 100, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.show_examples(stage, self._examples, audio=self._example_audio or None,
                               sample_rate=self.sample_rate)
            self._plot_attention(stage)
        self._examples, self._attention_maps, self._example_audio = [], [], []

    @rank_zero_only
    def _plot_attention(self, stage: str) -> None:
        """Saves the attention maps of a few fixed validation inputs as one PNG (and logs it to W&B)."""
        if not self._attention_maps or self.trainer is None:
            return
        out = Path(self.trainer.default_root_dir) / "attention" / f"{stage}_epoch{self.current_epoch:03d}.png"
        try:
            path = plot_attention_maps(self._attention_maps, out, title=f"{stage}, epoch {self.current_epoch}",
                                       input_label=self.attention_input_label)
        except Exception as e:  # noqa: BLE001 - a plot must never end training
            self.print(f"[rnnlab] warning: could not plot attention: {e}")
            return
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    logger.log_image(key=f"{stage}/attention", images=[str(path)], step=self.global_step)
                except Exception as e:  # noqa: BLE001
                    self.print(f"[rnnlab] warning: could not log attention maps to W&B: {e}")

    attention_input_label = "encoder frame"


_DECODING_DOC = """
        beam_size: Beam used by validate/test/transcribe (validation during training is always greedy attention
            decoding: fast, and it gives the attention maps).
        decode_ctc_weight: CTC weight in joint beam search (None = ``ctc_weight``; needs a CTC head); with a
            weight above 0, decoding is a beam search even for ``beam_size`` 1.
        length_penalty: Finished hypotheses are ranked by score / length ** length_penalty.
        eos_threshold: ``<eos>`` enters the beam only if p(eos) >= threshold * max p(other) (0 = always).
        max_output_ratio / max_output_extra: Output length limit ``ceil(ratio * encoder_length) + extra``.
        label_smoothing: Attention cross-entropy label smoothing.
        sampling_prob / sampling_start_epoch: Scheduled sampling: from that epoch on, each previous token is the
            model's own prediction with this probability.
        attention_plots: Validation inputs whose attention maps are saved (PNG under the run dir) each epoch.
        val_examples: Reference/hypothesis pairs printed each validation epoch."""


class LASRecognizer(Seq2SeqModule):
    """Listen, Attend and Spell: speech to characters with attention, optionally joint with CTC.

    Args:
        vocab: Tokenizer dict from the speech DataModule (saved in the checkpoint).
        frontend: Log-mel frontend options (:class:`~pipelines.base.FrontendOptions`).
        encoder: The listener (:class:`~pipelines.base.EncoderOptions`): a stacked BiLSTM whose last
            ``pyramid_layers`` layer boundaries halve time (x8 for 3).
        dropout: In the speller and the CTC head, and between listener layers unless ``encoder.dropout`` is set.
        attention / attention_size / embed_size / speller_hidden / speller_layers / input_feeding: Speller.
        ctc_weight: lambda of ``lambda * CTC + (1 - lambda) * attention``; 0 builds no CTC head.
        legacy: Flat options from before ``frontend``/``encoder`` (``n_mels``, ``listener_hidden``,
            ``listener_layers``, ``pyramid_layers``, ...).
    """ + _DECODING_DOC

    monitor = "val/cer"
    monitor_mode = "min"
    run_prefix = "seq2seq"
    legacy_state_prefixes = {**Seq2SeqModule.legacy_state_prefixes, "frontend.": "model.frontend.",
                             "listener.": "model.encoder."}
    legacy_options = {
        **flat_names("frontend", ("sample_rate", "n_mels", "stack_frames", "spec_augment", "speed_perturb")),
        **flat_names("encoder", ("cell", "pyramid_layers"), listener_hidden="hidden_size",
                     listener_layers="num_layers")}

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        frontend: FrontendOptions = FrontendOptions(),
        encoder: EncoderOptions = EncoderOptions(hidden_size=256, num_layers=4, pyramid_layers=3),
        dropout: UnitIntervalRightOpen = 0.15,
        attention: Literal["additive", "dot", "general", "location"] = "location",
        attention_size: PositiveInt = 128,
        embed_size: PositiveInt = 64,
        speller_hidden: PositiveInt = 256,
        speller_layers: PositiveInt = 1,
        input_feeding: bool = True,
        ctc_weight: UnitIntervalRightOpen = 0.3,
        label_smoothing: ClosedUnitInterval = 0.1,
        sampling_prob: ClosedUnitInterval = 0.0,
        sampling_start_epoch: NonNegativeInt = 0,
        beam_size: PositiveInt = 1,
        decode_ctc_weight: ClosedUnitInterval | None = None,
        length_penalty: NonNegativeFloat = 1.0,
        eos_threshold: NonNegativeFloat = 0.0,
        max_output_ratio: PositiveFloat = 3.0,
        max_output_extra: NonNegativeInt = 10,
        attention_plots: NonNegativeInt = 3,
        val_examples: NonNegativeInt = 4,
        init_from: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, init_from=init_from)
        if vocab is None:
            raise ValueError("LASRecognizer needs vocab (the tokenizer; the CLI links it from the DataModule)")
        options = self.save_network_options(legacy, frontend=frontend, encoder=encoder, dropout=dropout)
        self.tokenizer = tokenizer_from_dict(vocab)
        self.blank = self.tokenizer.blank
        speller = self.speller_options(embed_size=embed_size, speller_hidden=speller_hidden,
                                       speller_layers=speller_layers, attention=attention,
                                       attention_size=attention_size, input_feeding=input_feeding)
        self.model = LASNetwork.from_options(**options, vocab_size=len(self.tokenizer), speller=speller,
                                             dropout=dropout, blank=self.blank, ctc_head=ctc_weight > 0)
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({"wer": WordErrorRate(), "cer": CharErrorRate()}) for stage in ("val", "test")})
        self._init_decoding(ctc_weight=ctc_weight, sampling_prob=sampling_prob)

    @property
    def time_reduction(self) -> int:
        return self.model.time_reduction

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(batch["waveforms"], batch["lengths"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def _references(self, batch: dict) -> list[str]:
        return batch["texts"]

    def _update_metrics(self, stage: str, hyps: list[str], batch: dict) -> None:
        self.metrics[stage]["wer"].update(hyps, batch["texts"])
        self.metrics[stage]["cer"].update(hyps, batch["texts"])

    def _compute_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        out = {name: m.compute() for name, m in self.metrics[stage].items()}
        for m in self.metrics[stage].values():
            m.reset()
        return out

    @torch.no_grad()
    def transcribe_waveforms(self, waveforms: list[torch.Tensor], decoder: dict | None = None,
                             batch_size: int = 8) -> list[str]:
        """Transcribes mono waveforms already at ``sample_rate`` (greedy, or ``decoder`` settings)."""
        self.eval()
        results: dict[int, str] = {}
        for idx, batch, lengths in batched_waveforms(waveforms, batch_size, self.device):
            memory, mem_lengths = self.encode({"waveforms": batch, "lengths": lengths})
            ids, _ = self.decode(memory, mem_lengths, ctc=self._ctc(memory, mem_lengths), **(decoder or {}))
            results.update(zip(idx, [self.detokenize(x) for x in ids], strict=True))
        return [results[i] for i in range(len(waveforms))]

    def transcribe_files(self, paths: list[str], **kw) -> list[str]:
        from data.audio import AudioRef

        wavs = [load_audio(AudioRef(path=str(p)), self.sample_rate) for p in paths]
        return self.transcribe_waveforms(wavs, **kw)


class G2PModel(Seq2SeqModule):
    """Grapheme-to-phoneme conversion: letters -> BiLSTM encoder -> attention LSTM speller -> phonemes.

    Args:
        vocab: Grapheme/phoneme vocabularies from the G2P DataModule (saved in the checkpoint).
        embed_size: Grapheme and phoneme embedding width.
        encoder: The encoder over the letters (:class:`~pipelines.base.EncoderOptions`; bidirectional).
        dropout: In the speller, and between encoder layers unless ``encoder.dropout`` is set.
        attention / attention_size / speller_hidden / speller_layers / input_feeding: Speller.
        legacy: Flat options from before ``encoder`` (``cell``, ``encoder_hidden``, ``encoder_layers``).
    """ + _DECODING_DOC

    monitor = "val/wer"
    monitor_mode = "min"
    run_prefix = "g2p"
    attention_input_label = "letter"
    legacy_state_prefixes = {"embedding.": "model.embedding.", "encoder.": "model.encoder.",
                             **Seq2SeqModule.legacy_state_prefixes}
    legacy_options = flat_names("encoder", ("cell",), encoder_hidden="hidden_size", encoder_layers="num_layers")

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        embed_size: PositiveInt = 64,
        encoder: EncoderOptions = EncoderOptions(hidden_size=256, num_layers=2),
        dropout: UnitIntervalRightOpen = 0.2,
        attention: Literal["additive", "dot", "general", "location"] = "additive",
        attention_size: PositiveInt = 128,
        speller_hidden: PositiveInt = 256,
        speller_layers: PositiveInt = 1,
        input_feeding: bool = True,
        label_smoothing: ClosedUnitInterval = 0.1,
        sampling_prob: ClosedUnitInterval = 0.0,
        sampling_start_epoch: NonNegativeInt = 0,
        beam_size: PositiveInt = 1,
        decode_ctc_weight: ClosedUnitInterval | None = None,
        length_penalty: NonNegativeFloat = 1.0,
        eos_threshold: NonNegativeFloat = 0.0,
        max_output_ratio: PositiveFloat = 2.0,
        max_output_extra: NonNegativeInt = 5,
        attention_plots: NonNegativeInt = 4,
        val_examples: NonNegativeInt = 6,
        init_from: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler, init_from=init_from)
        if vocab is None:
            raise ValueError("G2PModel needs vocab (the CLI links it from the G2P DataModule)")
        options = self.save_network_options(legacy, encoder=encoder, dropout=dropout)
        self.vocab = G2PVocab.from_dict(vocab)
        speller = self.speller_options(embed_size=embed_size, speller_hidden=speller_hidden,
                                       speller_layers=speller_layers, attention=attention,
                                       attention_size=attention_size, input_feeding=input_feeding)
        self.model = G2PNetwork.from_options(encoder=options["encoder"], embed_size=embed_size, speller=speller,
                                             num_graphemes=len(self.vocab.graphemes),
                                             num_phonemes=len(self.vocab.phonemes), dropout=dropout)
        self.metrics = nn.ModuleDict({stage: PhonemeErrorRates() for stage in ("val", "test")})
        self._init_decoding(ctc_weight=0.0, sampling_prob=sampling_prob)

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(batch["inputs"], batch["input_lengths"])

    def detokenize(self, ids: list[int]) -> str:
        return " ".join(self.vocab.phonemes.decode(ids))

    def _references(self, batch: dict) -> list[str]:
        return [" | ".join(r) for r in batch["references"]]

    def _input_labels(self, batch: dict, k: int) -> list[str] | None:
        return list(batch["ids"][k])

    def _update_metrics(self, stage: str, hyps: list[str], batch: dict) -> None:
        self.metrics[stage].update(hyps, batch["references"])

    def _compute_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        out = self.metrics[stage].compute()
        self.metrics[stage].reset()
        return out

    def check_word(self, word: str) -> str:
        """The lower-cased word; ``ValueError`` naming it if it is empty, several words or has unknown letters."""
        w = normalize_text(word, "lower")
        if not w:
            raise ValueError(f"empty word (input {word!r})")
        if " " in w:
            raise ValueError(f"{word!r}: one word per line expected")
        self.vocab.encode_word(w)
        return w

    @torch.no_grad()
    def pronounce(self, words: list[str], *, beam_size: int | None = None, batch_size: int = 256) -> list[str]:
        """Phoneme strings for ``words`` (lower-cased); raises ``ValueError`` naming a word with unknown letters."""
        self.eval()
        clean = [self.check_word(w) for w in words]
        out: list[str] = []
        for start in range(0, len(clean), batch_size):
            chunk = clean[start:start + batch_size]
            lengths = torch.tensor([len(w) for w in chunk])
            inputs = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
            for i, w in enumerate(chunk):
                inputs[i, : len(w)] = torch.tensor(self.vocab.encode_word(w))
            memory, mem_lengths = self.encode({"inputs": inputs.to(self.device), "input_lengths": lengths})
            ids, _ = self.decode(memory, mem_lengths, beam_size=beam_size)
            out += [self.detokenize(x) for x in ids]
        return out
