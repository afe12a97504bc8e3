"""RNN transducer speech recognition: the CTC recogniser's frontend and encoder, plus an LSTM prediction network
over the emitted tokens and a joiner, trained with the transducer loss and an auxiliary CTC loss.

Run it with ``make train-rnnt`` (embedded synthetic corpus) or ``make train-rnnt DATA=english``; the CTC
recogniser's options (frontend, encoder, SpecAugment, speed perturbation, waveform degradations, the data) are
the same, so ``--model.init_args.init_from=english`` starts from the shipped CTC model's encoder.
"""

from __future__ import annotations

import torch

from data.ranges import PositiveInt, UnitIntervalRightOpen
from modules.ngram_lm import NGramLM
from modules.transducer import TransducerAcousticModel, TransducerBeamDecoder, greedy_search
from pipelines.ctc import CTCSpeechRecognizer


class TransducerSpeechRecognizer(CTCSpeechRecognizer):
    """Many-to-many speech recognition with an RNN transducer (Graves 2012) on a stacked (bi)LSTM encoder.

    Takes every option of :class:`~pipelines.ctc.CTCSpeechRecognizer`, and:

    Args:
        pred_embed_size / pred_hidden_size / pred_layers / pred_dropout: The prediction network (token
            embedding -> LSTM).
        joiner_size: The joiner's hidden size (its activations dominate training memory: rows x frames x
            (tokens + 1) x joiner_size).
        ctc_weight: Weight of the auxiliary CTC loss on the encoder (0 disables; the transducer loss gets
            ``1 - ctc_weight``).
        max_symbols: Most tokens greedy decoding emits per frame.
        max_lattice: Largest lattice (rows x frames x (tokens + 1)) whose joiner runs at once; a larger batch is
            split and each piece is recomputed in the backward pass (bounded memory: about 2.3 kB per lattice point
            with ``joiner_size`` 256 and characters, so 600000 points peak near 1.4 GB).
    """

    run_prefix = "rnnt"

    def __init__(self, *, pred_embed_size: PositiveInt = 256, pred_hidden_size: PositiveInt = 320,
                 pred_layers: PositiveInt = 1, pred_dropout: UnitIntervalRightOpen = 0.1, joiner_size: PositiveInt = 256,
                 ctc_weight: UnitIntervalRightOpen = 0.3, max_symbols: PositiveInt = 4, max_lattice: PositiveInt = 600_000,
                 **kwargs) -> None:
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        if max_symbols < 1:
            raise ValueError(f"max_symbols must be at least 1, got {max_symbols}")
        if max_lattice < 1:
            raise ValueError(f"max_lattice must be positive, got {max_lattice}")
        for name, value in (("pred_embed_size", pred_embed_size), ("pred_hidden_size", pred_hidden_size),
                            ("pred_layers", pred_layers), ("joiner_size", joiner_size)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        super().__init__(**kwargs)
        ctc = self.model
        self.model = TransducerAcousticModel(
            frontend=ctc.frontend, encoder=ctc.encoder, vocab_size=len(self.tokenizer), blank=self.tokenizer.blank,
            head_dropout=self.hparams.dropout, pred_embed_size=pred_embed_size, pred_hidden_size=pred_hidden_size,
            pred_layers=pred_layers, joiner_size=joiner_size, pred_dropout=pred_dropout)

    # -- training -----------------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict, stage: str) -> tuple[torch.Tensor, tuple]:
        enc, enc_lengths = self.model.encode(batch["waveforms"], batch["lengths"])
        tl = batch["target_lengths"].to(enc.device)
        n_tokens = int(tl.sum().clamp_min(1))
        rnnt = self.model.loss(enc, enc_lengths, batch["targets"], tl, max_positions=self.hparams.max_lattice)
        rnnt = rnnt / n_tokens  # per token, as the CTC loss
        loss = rnnt
        w = self.hparams.ctc_weight
        if w > 0:
            ctc, n_ok = self.checked_ctc_loss(self.model.head(enc), enc_lengths, batch, stage)
            loss = (1 - w) * rnnt + w * ctc if n_ok else rnnt
            if n_ok:
                self.log(f"{stage}/ctc_loss", ctc, batch_size=n_ok, sync_dist=stage != "train")
        size = len(batch["ids"])
        self.log(f"{stage}/rnnt_loss", rnnt, batch_size=size, sync_dist=stage != "train")
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, sync_dist=stage != "train")
        return loss, (enc, enc_lengths)

    def batch_hypotheses(self, outputs: tuple) -> list[str]:
        enc, enc_lengths = outputs
        decoder = self.eval_decoder if not self.trainer.training else None
        return self._decode(enc, enc_lengths, decoder)

    # -- inference ----------------------------------------------------------------------------------------------
    def _decode(self, enc: torch.Tensor, enc_lengths: torch.Tensor, decoder: TransducerBeamDecoder | None):
        if decoder is None:
            ids = greedy_search(self.model, enc, enc_lengths, max_symbols=self.hparams.max_symbols)
        else:
            ids = decoder.decode(self.model, enc, enc_lengths)
        return [self.tokenizer.decode(x) for x in ids]

    def make_decoder(self, *, beam_size: int = 1, lm_path: str | None = None, lm_weight: float = 0.5,
                     word_bonus: float = 0.0) -> TransducerBeamDecoder | None:
        """Modified beam search (None for greedy: ``beam_size <= 1`` and no LM)."""
        if beam_size <= 1 and lm_path is None:
            return None
        lm = NGramLM.from_arpa(lm_path) if lm_path else None
        return TransducerBeamDecoder(tokens=list(self.tokenizer.tokens), blank=self.tokenizer.blank,
                                     beam_size=max(beam_size, 1), lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)

    @torch.no_grad()
    def decode_waveforms(self, waveforms: torch.Tensor, lengths: torch.Tensor, decoder=None) -> list[str]:
        enc, enc_lengths = self.model.encode(waveforms, lengths)
        return self._decode(enc, enc_lengths, decoder)
