"""RNN transducer (Graves 2012): a recurrent encoder, an LSTM prediction network over the emitted tokens and a
joiner, trained with :func:`torchaudio.functional.rnnt_loss`; greedy and (modified) beam search decoding.

CTC scores each frame on its own; the transducer's prediction network reads the tokens emitted so far, so the
model learns a language model together with the acoustics and still decodes frame by frame (it streams with a
unidirectional encoder).

Memory: the joiner's activations are ``rows x frames x (tokens + 1) x joiner_size``, far more than the encoder's.
:func:`transducer_loss` computes a batch whose lattice fits in ``max_positions`` points at once; a larger batch is
split into row chunks that each fit, and each chunk is recomputed in the backward pass (activation
checkpointing), so what such a batch keeps between forward and backward is the encoder's and prediction network's
outputs, and the peak is one chunk's lattice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from modules.ctc import CTCAcousticModel
from modules.ctc_decoding import WordScorer
from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend

__all__ = ["Joiner", "Predictor", "TransducerAcousticModel", "TransducerBeamDecoder", "greedy_search",
           "lattice_chunks", "transducer_loss"]


class Predictor(nn.Module):
    """Prediction network: the previous non-blank token (the blank id starts a sentence) -> embedding -> LSTM.

    Shape:
        - ``forward``: targets ``(B, U)`` -> ``(B, U + 1, H)`` (position 0 reads the start symbol).
        - ``step``: tokens ``(B,)`` and a state -> ``(B, H)`` and the next state.
    """

    def __init__(self, *, vocab_size: int, blank: int, embed_size: int = 256, hidden_size: int = 320,
                 num_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"the prediction network needs at least one layer, got {num_layers}")
        self.blank = blank
        self.hidden_size = hidden_size
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, targets: Tensor) -> Tensor:
        start = targets.new_full((targets.size(0), 1), self.blank)
        x = self.dropout(self.embed(torch.cat([start, targets], 1)))
        out, _ = self.lstm(x)
        return self.dropout(out)

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(self.embed(tokens)[:, None], state)
        return out[:, 0], state


class Joiner(nn.Module):
    """``out(tanh(enc_proj(encoder frame) + pred_proj(prediction)))``: logits over the tokens (blank included).

    The two projections are applied once per frame and once per token (:meth:`project_encoder`,
    :meth:`project_prediction`); :meth:`forward` joins projected tensors that broadcast against each other.
    """

    def __init__(self, *, encoder_size: int, prediction_size: int, joiner_size: int, vocab_size: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(encoder_size, joiner_size)
        self.pred_proj = nn.Linear(prediction_size, joiner_size, bias=False)
        self.out = nn.Linear(joiner_size, vocab_size)

    def project_encoder(self, enc: Tensor) -> Tensor:
        return self.enc_proj(enc)

    def project_prediction(self, pred: Tensor) -> Tensor:
        return self.pred_proj(pred)

    def forward(self, enc_p: Tensor, pred_p: Tensor) -> Tensor:
        return self.out(torch.tanh(enc_p + pred_p))


def lattice_chunks(enc_lengths: Sequence[int], target_lengths: Sequence[int], max_positions: int) -> list[list[int]]:
    """Consecutive row groups whose padded lattice (rows x max frames x (max tokens + 1)) stays under
    ``max_positions`` (a row larger than that on its own is a group of one)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    t_max = u_max = 0
    for b, (t, u) in enumerate(zip(enc_lengths, target_lengths, strict=True)):
        nt, nu = max(t_max, int(t)), max(u_max, int(u) + 1)
        if cur and (len(cur) + 1) * nt * nu > max_positions:
            groups.append(cur)
            cur, nt, nu = [], int(t), int(u) + 1
        cur.append(b)
        t_max, u_max = nt, nu
    if cur:
        groups.append(cur)
    return groups


def transducer_loss(joiner: Joiner, enc_p: Tensor, enc_lengths: Tensor, pred_p: Tensor, targets: Tensor,
                    target_lengths: Tensor, *, blank: int, max_positions: int = 600_000,
                    recompute: bool = True) -> Tensor:
    """Summed transducer negative log-likelihood of a batch (float32), computed in lattice chunks.

    Args:
        joiner: The joiner (its output layer runs inside each chunk).
        enc_p: ``(B, T, J)`` projected encoder frames; ``pred_p``: ``(B, U + 1, J)`` projected predictions.
        enc_lengths / target_lengths: ``(B,)``; targets ``(B, U)`` token ids (blank never appears).
        max_positions: Largest padded lattice (rows x frames x (tokens + 1)) computed at once.
        recompute: When the batch takes several chunks, recompute each in the backward pass instead of keeping its
            activations (a batch that fits in one chunk is computed once and kept).
    """
    host_t = enc_lengths.tolist()
    host_u = target_lengths.tolist()
    total = enc_p.new_zeros((), dtype=torch.float32)
    groups = lattice_chunks(host_t, host_u, max_positions)
    # One piece keeps its activations (no second joiner and loss pass); several are each recomputed in backward.
    recompute = recompute and len(groups) > 1 and torch.is_grad_enabled()
    for rows in groups:
        t, u = max(host_t[b] for b in rows), max(host_u[b] for b in rows)
        idx = torch.tensor(rows, device=enc_p.device)
        args = (enc_p.index_select(0, idx)[:, :t], pred_p.index_select(0, idx)[:, : u + 1],
                targets.index_select(0, idx)[:, :u].to(torch.int32),
                enc_lengths.index_select(0, idx).to(torch.int32), target_lengths.index_select(0, idx).to(torch.int32))
        if recompute:
            total = total + checkpoint(_chunk_loss, joiner, blank, *args, use_reentrant=False)
        else:
            total = total + _chunk_loss(joiner, blank, *args)
    return total


def _chunk_loss(joiner: Joiner, blank: int, enc_p: Tensor, pred_p: Tensor, targets: Tensor, t_len: Tensor,
                u_len: Tensor) -> Tensor:
    from torchaudio.functional import rnnt_loss

    logits = joiner(enc_p[:, :, None], pred_p[:, None]).float()  # (b, T, U + 1, V)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return rnnt_loss(logits, targets, t_len, u_len, blank=blank, reduction="sum", fused_log_softmax=True)


class TransducerAcousticModel(CTCAcousticModel):
    """Frontend -> recurrent encoder, shared by an auxiliary CTC head (:attr:`head`, as in
    :class:`~modules.ctc.CTCAcousticModel`, so CTC weights load into it) and the transducer's prediction
    network and joiner.

    ``forward`` keeps the CTC interface (the CTC head's log-probabilities); :meth:`encode` gives the encoder
    frames the transducer decodes.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder, vocab_size: int, blank: int,
                 head_dropout: float = 0.0, pred_embed_size: int = 256, pred_hidden_size: int = 320,
                 pred_layers: int = 1, joiner_size: int = 256, pred_dropout: float = 0.1) -> None:
        super().__init__(frontend=frontend, encoder=encoder, vocab_size=vocab_size, head_dropout=head_dropout)
        self.blank = blank
        self.predictor = Predictor(vocab_size=vocab_size, blank=blank, embed_size=pred_embed_size,
                                   hidden_size=pred_hidden_size, num_layers=pred_layers, dropout=pred_dropout)
        self.joiner = Joiner(encoder_size=encoder.output_size, prediction_size=pred_hidden_size,
                             joiner_size=joiner_size, vocab_size=vocab_size)

    def encode(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder frames ``(B, T, D)`` and their lengths ``(B,)``."""
        feats, feat_lengths = self.frontend(waveforms, lengths)
        return self.encoder(feats, feat_lengths)

    def loss(self, enc: Tensor, enc_lengths: Tensor, targets: Tensor, target_lengths: Tensor,
             max_positions: int = 600_000) -> Tensor:
        """Summed transducer loss of a batch (see :func:`transducer_loss`)."""
        u = int(target_lengths.max()) if target_lengths.numel() else 0
        pred_p = self.joiner.project_prediction(self.predictor(targets[:, :u]))
        return transducer_loss(self.joiner, self.joiner.project_encoder(enc), enc_lengths, pred_p, targets,
                               target_lengths, blank=self.blank, max_positions=max_positions)


@torch.no_grad()
def greedy_search(model: TransducerAcousticModel, enc: Tensor, lengths: Tensor, *, max_symbols: int = 4,
                  state: dict | None = None) -> list[list[int]]:
    """Frame-synchronous greedy decoding of a batch: at each frame, emit the best token until blank wins (at
    most ``max_symbols`` per frame).

    ``state`` (a dict, updated in place) carries the prediction network across calls for one utterance fed in
    pieces (streaming): ``{"tokens": [...], "pred_p": (1, J), "hidden": LSTM state}``.
    """
    joiner, predictor, blank = model.joiner, model.predictor, model.blank
    enc_p = joiner.project_encoder(enc)
    batch = enc_p.size(0)
    if state is not None and state.get("pred_p") is not None:
        pred_p, hidden = state["pred_p"], state["hidden"]
        hyps = [list(state["tokens"])]
    else:
        out, hidden = predictor.step(enc_p.new_full((batch,), blank, dtype=torch.long), None)
        pred_p = joiner.project_prediction(out)
        hyps = [[] for _ in range(batch)]
    lens = lengths.tolist()
    for t in range(enc_p.size(1)):
        active = torch.tensor([t < n for n in lens], device=enc_p.device)
        if not active.any():
            break
        frame = enc_p[:, t]
        for _ in range(max_symbols):
            k = joiner(frame, pred_p).argmax(-1)
            emit = (k != blank) & active
            if not emit.any():
                break
            for b in emit.nonzero().squeeze(1).tolist():
                hyps[b].append(int(k[b]))
            out, new_hidden = predictor.step(k.masked_fill(~emit, blank), hidden)
            keep = emit[:, None]
            pred_p = torch.where(keep, joiner.project_prediction(out), pred_p)
            hidden = tuple(torch.where(keep[None], n, o) for n, o in zip(new_hidden, hidden, strict=True))
    if state is not None:
        state.update(tokens=hyps[0], pred_p=pred_p, hidden=hidden)
    return hyps


@dataclass
class _Hyp:
    tokens: tuple[int, ...]
    acoustic: float
    lm: tuple  # WordScorer state: (score, context, partial word)
    pred_p: Tensor  # (J,)
    hidden: tuple[Tensor, Tensor]  # (layers, 1, H) each

    @property
    def score(self) -> float:
        return self.acoustic + self.lm[0]


def _logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def _add(cands: dict, tokens: tuple[int, ...], acoustic: float, lm: tuple, parent: _Hyp, token: int) -> None:
    """Adds a candidate; the same token sequence reached by two paths becomes one with both probabilities."""
    old = cands.get(tokens)
    cands[tokens] = (acoustic, lm, parent, token) if old is None else (_logaddexp(old[0], acoustic), *old[1:])


class TransducerBeamDecoder:
    """Modified beam search (at most one token per frame per hypothesis, as icefall's
    ``modified_beam_search``), with optional word n-gram shallow fusion through the CTC decoder's word scorer.

    Args:
        tokens: Token strings by id; ``blank`` the blank id.
        beam_size: Hypotheses kept per frame.
        lm / lm_weight / word_bonus: Word n-gram LM (:class:`modules.ngram_lm.NGramLM`), its weight and a
            per-word bonus, applied when a word ends (as :class:`modules.ctc_decoding.CTCBeamDecoder`).
    """

    def __init__(self, *, tokens: Sequence[str], blank: int = 0, beam_size: int = 4, lm=None, lm_weight: float = 0.5,
                 word_bonus: float = 0.0) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.tokens, self.blank, self.beam_size = list(tokens), blank, beam_size
        self.lm, self.lm_weight, self.word_bonus = lm, lm_weight, word_bonus
        self.scorer = WordScorer(self.tokens, lm, lm_weight, word_bonus)

    def __repr__(self) -> str:
        return f"TransducerBeamDecoder(beam_size={self.beam_size}, lm={self.lm!r}, lm_weight={self.lm_weight})"

    @torch.no_grad()
    def decode(self, model: TransducerAcousticModel, enc: Tensor, lengths: Tensor) -> list[list[int]]:
        """Best token ids per utterance of encoder frames ``(B, T, D)``."""
        enc_p = model.joiner.project_encoder(enc)
        return [self._search(model, enc_p[b, : int(n)]) for b, n in enumerate(lengths.tolist())]

    def _search(self, model: TransducerAcousticModel, enc_p: Tensor) -> list[int]:
        joiner, predictor, blank, beam = model.joiner, model.predictor, self.blank, self.beam_size
        out, hidden = predictor.step(enc_p.new_full((1,), blank, dtype=torch.long), None)
        hyps = [_Hyp((), 0.0, self.scorer.initial(), joiner.project_prediction(out)[0], hidden)]
        for t in range(enc_p.size(0)):
            logp = joiner(enc_p[t][None], torch.stack([h.pred_p for h in hyps])).float().log_softmax(-1)  # (n, V)
            cands: dict[tuple[int, ...], tuple[float, tuple, _Hyp, int]] = {}
            top = logp.topk(min(beam + 1, logp.size(1)), dim=-1)
            for i, h in enumerate(hyps):
                _add(cands, h.tokens, h.acoustic + float(logp[i, blank]), h.lm, h, -1)
                for lp, k in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True):
                    if k != blank:
                        _add(cands, h.tokens + (k,), h.acoustic + lp, self.scorer.extend(h.lm, k), h, k)
            best = sorted(cands.items(), key=lambda kv: kv[1][0] + kv[1][1][0], reverse=True)[:beam]
            grow = [(tok, v) for tok, v in best if v[3] >= 0]
            new_p: dict[tuple[int, ...], tuple[Tensor, tuple]] = {}
            if grow:
                parents = [v[2] for _, v in grow]
                hid = tuple(torch.cat([p.hidden[j] for p in parents], 1) for j in range(2))
                out, hid = predictor.step(torch.tensor([v[3] for _, v in grow], device=enc_p.device), hid)
                proj = joiner.project_prediction(out)
                for i, (tok, _) in enumerate(grow):
                    new_p[tok] = (proj[i], (hid[0][:, i:i + 1], hid[1][:, i:i + 1]))
            hyps = []
            for tok, (acoustic, lm, parent, token) in best:
                pred_p, hidden = new_p[tok] if token >= 0 else (parent.pred_p, parent.hidden)
                hyps.append(_Hyp(tok, acoustic, lm, pred_p, hidden))
        final = max(hyps, key=lambda h: h.acoustic + self.scorer.final(h.lm))
        return list(final.tokens)
