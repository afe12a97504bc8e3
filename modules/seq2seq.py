"""Attention decoder ("speller") and its decoding: teacher forcing, scheduled sampling, greedy and beam search.

The speller is an LSTM that reads the previous output token and (input feeding) the previous attention
context, attends over the encoder's memory with its top hidden state as the query, and predicts the next
token from ``tanh(W [h; context])`` (Luong et al., 2015; the "Spell" of Listen-Attend-Spell, Chan et al., 2016).

Output classes are the tokenizer's ids plus one extra id, :attr:`Speller.eos`, that serves as both the
start symbol fed at the first step and the end-of-sequence prediction. ``suppress`` lists ids that must never
be predicted (the CTC blank of a character tokenizer shared with a CTC head).

Beam search (:func:`beam_search`) supports length normalisation, an end-of-sequence threshold and joint
CTC/attention scoring with the CTC prefix score of Watanabe et al. (2017), computed by :class:`CTCPrefixScorer`.
Every decoder stops at a maximum output length derived from the input length, so a model that never
predicts ``<eos>`` cannot loop forever.

The two networks built on the speller: :class:`LASNetwork` (waveform -> log-mel -> pyramidal listener ->
speller, with an optional CTC head on the listener) and :class:`G2PNetwork` (letters -> embedding -> encoder ->
speller).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.attention import build_attention
from modules.ctc import CTCHead
from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend, lengths_mask
from modules.networks import FrontendEncoderModel, build_encoder


@dataclass
class SpellerState:
    hidden: list[tuple[Tensor, Tensor]]  # per layer (h, c), each (B, H)
    context: Tensor  # (B, K)
    weights: Tensor | None  # (B, T) previous attention weights


class Speller(nn.Module):
    """Attention LSTM decoder.

    Args:
        vocab_size: Tokenizer size (ids ``0..vocab_size-1``); one more class is added for ``<sos>/<eos>``.
        memory_size: Width K of the encoder memory.
        embed_size / hidden_size / num_layers: Token embedding, LSTM width and depth.
        attention: ``additive`` | ``dot`` | ``general`` | ``location``; ``attention_size`` is the width of the
            additive/location scoring layer.
        input_feeding: Feed the previous attention context into the LSTM with the previous token.
        dropout: Dropout on embeddings, between LSTM layers and before the output layer.
        suppress: Token ids never predicted (e.g. a CTC blank).
    """

    def __init__(self, *, vocab_size: int, memory_size: int, embed_size: int = 128, hidden_size: int = 256,
                 num_layers: int = 1, attention: str = "location", attention_size: int = 128,
                 input_feeding: bool = True, dropout: float = 0.1, suppress: tuple[int, ...] = ()) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"speller num_layers must be >= 1, got {num_layers}")
        self.vocab_size = vocab_size
        self.num_classes = vocab_size + 1
        self.eos = vocab_size
        self.memory_size = memory_size
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        self.embedding = nn.Embedding(self.num_classes, embed_size)
        first = embed_size + (memory_size if input_feeding else 0)
        self.cells = nn.ModuleList(nn.LSTMCell(first if i == 0 else hidden_size, hidden_size)
                                   for i in range(num_layers))
        self.attention = build_attention(attention, query_size=hidden_size, memory_size=memory_size,
                                         attention_size=attention_size)
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size)
        self.output = nn.Linear(hidden_size, self.num_classes)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("suppress_mask", torch.zeros(self.num_classes, dtype=torch.bool), persistent=False)
        for i in suppress:
            self.suppress_mask[i] = True

    # -- one step -------------------------------------------------------------------------------------------------
    def initial_state(self, memory: Tensor) -> SpellerState:
        b = memory.size(0)
        zeros = memory.new_zeros(b, self.hidden_size)
        return SpellerState([(zeros, zeros) for _ in self.cells], memory.new_zeros(b, self.memory_size), None)

    def step(self, prev: Tensor, state: SpellerState, memory: Tensor, keys: Tensor,
             mask: Tensor) -> tuple[Tensor, SpellerState]:
        """Logits ``(B, C)`` for the next token given the previous tokens ``prev (B,)``."""
        x = self.dropout(self.embedding(prev))
        if self.input_feeding:
            x = torch.cat([x, state.context], dim=-1)
        hidden = []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, state.hidden[i])
            hidden.append((h, c))
            x = self.dropout(h) if i < len(self.cells) - 1 else h
        context, weights = self.attention(x, memory, keys, mask, state.weights)
        out = torch.tanh(self.combine(torch.cat([x, context], dim=-1)))
        logits = self.output(self.dropout(out)).float()
        logits = logits.masked_fill(self.suppress_mask, float("-inf"))
        return logits, SpellerState(hidden, context, weights)

    # -- training -------------------------------------------------------------------------------------------------
    def forward(self, memory: Tensor, memory_lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                sampling_prob: float = 0.0) -> tuple[Tensor, Tensor]:
        """Teacher forcing: logits ``(B, L+1, C)`` predicting ``targets`` then ``<eos>``, and weights ``(B, L+1, T)``.

        With ``sampling_prob > 0`` (scheduled sampling, Bengio et al., 2015) each row's previous token is,
        with that probability, the model's own previous argmax instead of the reference.
        """
        b, steps = targets.size(0), int(target_lengths.max()) + 1
        mask = lengths_mask(memory_lengths.to(memory.device), memory.size(1))
        keys = self.attention.prepare(memory)
        state = self.initial_state(memory)
        prev = torch.full((b,), self.eos, dtype=torch.long, device=memory.device)
        all_logits, all_weights = [], []
        for t in range(steps):
            logits, state = self.step(prev, state, memory, keys, mask)
            all_logits.append(logits)
            all_weights.append(state.weights)
            if t + 1 < steps:
                prev = targets[:, t] if t < targets.size(1) else prev
                if sampling_prob > 0:
                    own = logits.detach().argmax(-1)
                    use_own = torch.rand(b, device=memory.device) < sampling_prob
                    prev = torch.where(use_own, own, prev)
        return torch.stack(all_logits, 1), torch.stack(all_weights, 1)


class LASNetwork(FrontendEncoderModel):
    """Listen, Attend and Spell: ``frontend`` -> ``encoder`` (the listener, pyramidal) -> ``speller``, and a CTC
    head on the listener's memory when ``ctc_head`` is set (joint CTC/attention training and decoding).

    Args:
        frontend / encoder: The log-mel frontend and the listener over its frames (see :meth:`from_options`).
        vocab_size: Tokenizer size.
        speller: Keyword arguments of :class:`Speller` besides the sizes, dropout and ``suppress``
            (``embed_size``, ``hidden_size``, ``num_layers``, ``attention``, ``attention_size``, ``input_feeding``).
        dropout: In the speller and the CTC head.
        blank: The tokenizer's CTC blank, which the speller never predicts (None: nothing suppressed).
        ctc_head: Build the CTC head.

    Shape:
        :meth:`encode`: waveforms ``(B, S)``, lengths ``(B,)`` samples -> memory ``(B, T, K)``, lengths ``(B,)``.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder, vocab_size: int,
                 speller: Mapping[str, Any], dropout: float = 0.0, blank: int | None = None,
                 ctc_head: bool = True) -> None:
        super().__init__(frontend=frontend, encoder=encoder)
        self.speller = Speller(vocab_size=vocab_size, memory_size=encoder.output_size, dropout=dropout,
                               suppress=() if blank is None else (blank,), **speller)
        self.ctc_head = (CTCHead(input_size=encoder.output_size, vocab_size=vocab_size, dropout=dropout)
                         if ctc_head else None)

    @property
    def time_reduction(self) -> int:
        """Frontend hops per memory frame: the frame stacking times the pyramid's halvings."""
        return self.frontend.stack_frames * 2 ** self.encoder.pyramid_layers

    def encode(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The listener's memory and its lengths."""
        feats, frames = self.frontend(waveforms, lengths)
        return self.encoder(feats, frames)

    def forward(self, waveforms: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                sampling_prob: float = 0.0) -> tuple[Tensor, Tensor]:
        """Teacher-forced speller logits ``(B, L+1, C)`` and attention weights (see :meth:`Speller.forward`)."""
        memory, frames = self.encode(waveforms, lengths)
        return self.speller(memory, frames, targets, target_lengths, sampling_prob=sampling_prob)


class G2PNetwork(nn.Module):
    """Grapheme-to-phoneme: letter ids -> ``embedding`` -> ``encoder`` -> ``speller`` over phonemes.

    Args:
        encoder: The recurrent encoder over the letter embeddings (``input_size`` = ``embed_size``).
        num_graphemes / num_phonemes: Input and output vocabulary sizes (grapheme 0 is padding).
        embed_size: Grapheme embedding width.
        speller: Keyword arguments of :class:`Speller` besides the sizes and dropout, as for :class:`LASNetwork`
            (its phoneme ``embed_size`` is the grapheme one unless given).
        dropout: In the speller.

    Shape:
        :meth:`encode`: inputs ``(B, L)`` letter ids, lengths ``(B,)`` -> memory ``(B, L, K)``, lengths ``(B,)``.
    """

    ctc_head = None  # no CTC branch: a word can have more phonemes than letters

    def __init__(self, *, encoder: RecurrentEncoder, num_graphemes: int, num_phonemes: int, embed_size: int,
                 speller: Mapping[str, Any], dropout: float = 0.0) -> None:
        super().__init__()
        if encoder.input_size != embed_size:
            raise ValueError(f"encoder input_size ({encoder.input_size}) must equal embed_size ({embed_size})")
        self.embedding = nn.Embedding(num_graphemes, embed_size, padding_idx=0)
        self.encoder = encoder
        self.speller = Speller(vocab_size=num_phonemes, memory_size=encoder.output_size, dropout=dropout,
                               **{"embed_size": embed_size, **speller})

    @classmethod
    def from_options(cls, *, encoder: Mapping[str, Any], embed_size: int, **kwargs: Any) -> G2PNetwork:
        """The network with an encoder built from the ``encoder`` options over ``embed_size`` inputs."""
        return cls(encoder=build_encoder(encoder, input_size=embed_size), embed_size=embed_size, **kwargs)

    def encode(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's memory over the letters, and its lengths."""
        return self.encoder(self.embedding(inputs), lengths)

    def forward(self, inputs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                sampling_prob: float = 0.0) -> tuple[Tensor, Tensor]:
        """Teacher-forced speller logits and attention weights, as :meth:`LASNetwork.forward`."""
        memory, memory_lengths = self.encode(inputs, lengths)
        return self.speller(memory, memory_lengths, targets, target_lengths, sampling_prob=sampling_prob)


def decoder_targets(targets: Tensor, target_lengths: Tensor, eos: int) -> Tensor:
    """``(B, L+1)`` targets with ``<eos>`` after each sequence and ``-100`` (ignored) past it."""
    b = targets.size(0)
    steps = int(target_lengths.max()) + 1
    out = torch.full((b, steps), -100, dtype=torch.long, device=targets.device)
    width = min(targets.size(1), steps)
    valid = lengths_mask(target_lengths, steps)
    out[:, :width] = torch.where(valid[:, :width], targets[:, :width], out[:, :width])
    out[torch.arange(b, device=targets.device), target_lengths] = eos
    return out


def attention_loss(logits: Tensor, targets: Tensor, target_lengths: Tensor, eos: int,
                   label_smoothing: float = 0.0) -> Tensor:
    """Mean per-token cross entropy of teacher-forced logits (``<eos>`` included), with label smoothing.

    Smoothing mass goes only to classes the speller can predict (suppressed ids have ``-inf`` logits).
    """
    gold = decoder_targets(targets, target_lengths, eos)
    logp = F.log_softmax(logits.float(), dim=-1)
    valid = gold != -100
    nll = -logp.gather(-1, gold.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    if label_smoothing > 0:
        allowed = torch.isfinite(logp)
        smooth = -(logp.masked_fill(~allowed, 0.0)).sum(-1) / allowed.sum(-1).clamp_min(1)
        nll = (1 - label_smoothing) * nll + label_smoothing * smooth
    # where, not a product: a padded position's placeholder target can be a suppressed class (-inf * 0 = NaN).
    return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum().clamp_min(1)


def max_output_lengths(memory_lengths: Tensor, ratio: float, extra: int) -> Tensor:
    """Decoding step limit per input: ``ceil(ratio * input_length) + extra``."""
    return torch.ceil(memory_lengths.float() * ratio).long() + extra


@torch.no_grad()
def greedy_decode(speller: Speller, memory: Tensor, memory_lengths: Tensor, *, max_ratio: float = 2.0,
                  max_extra: int = 5) -> tuple[list[list[int]], list[Tensor]]:
    """Batched greedy decoding: token ids (without ``<eos>``) and attention weights ``(steps, T_b)`` per input."""
    b = memory.size(0)
    mask = lengths_mask(memory_lengths.to(memory.device), memory.size(1))
    keys = speller.attention.prepare(memory)
    state = speller.initial_state(memory)
    limits = max_output_lengths(memory_lengths, max_ratio, max_extra).tolist()
    prev = torch.full((b,), speller.eos, dtype=torch.long, device=memory.device)
    done = [False] * b
    steps = [0] * b  # attention rows recorded per input (its tokens, plus <eos> if it ended by itself)
    tokens: list[list[int]] = [[] for _ in range(b)]
    all_weights: list[Tensor] = []
    for t in range(max(limits)):
        logits, state = speller.step(prev, state, memory, keys, mask)
        all_weights.append(state.weights)
        prev = logits.argmax(-1)
        for i, tok in enumerate(prev.tolist()):
            if done[i]:
                continue
            steps[i] += 1
            if tok == speller.eos or t + 1 >= limits[i]:
                done[i] = True
                if tok != speller.eos:
                    tokens[i].append(tok)
            else:
                tokens[i].append(tok)
        if all(done):
            break
    weights = torch.stack(all_weights, 1).float().cpu()  # (B, steps, T): one copy, not one per input and step
    return tokens, [weights[i, : steps[i], : int(n)] for i, n in enumerate(memory_lengths.tolist())]


class CTCPrefixScorer:
    """CTC prefix probabilities ``log p_ctc(g ...)`` of hypotheses ``g`` (Watanabe et al., 2017, Algorithm 2).

    ``r_n[t]`` / ``r_b[t]`` are the log-probabilities that the first ``t+1`` frames emit prefix ``g`` ending in a
    non-blank / blank. Extending ``g`` by ``c`` costs one pass over time, vectorised over candidate tokens.

    Args:
        log_probs: ``(T, V)`` CTC log-probabilities of one utterance (over the tokenizer's ids).
        blank: The blank id.
        eos: The speller's ``<eos>`` id (``>= V``): its prefix score is the full-sequence probability.
    """

    def __init__(self, log_probs: Tensor, blank: int, eos: int) -> None:
        self.x = log_probs.float().cpu()
        self.T = self.x.size(0)
        self.blank = blank
        self.eos = eos

    def initial(self) -> tuple[Tensor, Tensor, float]:
        """State of the empty prefix: ``(r_n (T,), r_b (T,), prefix score 0)``."""
        r_n = torch.full((self.T,), -math.inf)
        r_b = torch.cumsum(self.x[:, self.blank], 0)
        return r_n, r_b, 0.0

    def extend(self, state: tuple[Tensor, Tensor, float], last: int | None,
               candidates: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix scores ``(M,)`` for ``g + c`` for every candidate ``c``, and their states ``r_n, r_b (T, M)``."""
        r_n_g, r_b_g, _ = state
        m = len(candidates)
        x = self.x
        is_eos = torch.tensor([c == self.eos for c in candidates])
        cand = torch.tensor([0 if c == self.eos else c for c in candidates], dtype=torch.long)
        xc = x[:, cand]  # (T, M)
        r_n = torch.full((self.T, m), -math.inf)
        r_b = torch.full((self.T, m), -math.inf)
        if last is None:
            r_n[0] = xc[0]
        g_total = torch.logaddexp(r_n_g, r_b_g)  # (T,)
        # phi_t: probability of g at t that can be followed by c (a repeated label needs a blank in between)
        same = torch.tensor([c == last for c in candidates])
        phi = torch.where(same[None, :], r_b_g[:, None], g_total[:, None])  # (T, M)
        psi = r_n[0].clone()
        for t in range(1, self.T):
            r_n[t] = torch.logaddexp(r_n[t - 1], phi[t - 1]) + xc[t]
            r_b[t] = torch.logaddexp(r_b[t - 1], r_n[t - 1]) + x[t, self.blank]
            psi = torch.logaddexp(psi, phi[t - 1] + xc[t])
        psi = torch.where(is_eos, g_total[-1], psi)
        return psi, r_n, r_b


@dataclass
class _Hyp:
    tokens: list[int]
    att: float  # sum of attention log-probs
    ctc_state: tuple[Tensor, Tensor, float] | None
    score: float


@torch.no_grad()
def beam_search(speller: Speller, memory: Tensor, memory_length: int, *, beam_size: int = 8,
                length_penalty: float = 1.0, eos_threshold: float = 0.0, ctc_log_probs: Tensor | None = None,
                ctc_weight: float = 0.0, blank: int = 0, max_ratio: float = 2.0, max_extra: int = 5,
                pre_beam: int | None = None) -> list[int]:
    """Beam search for one input ``memory (T, K)``; returns the best token ids (without ``<eos>``).

    Hypotheses are ranked by ``(1 - ctc_weight) * attention + ctc_weight * CTC prefix`` log-probability;
    a finished hypothesis is compared to others by that score divided by ``length ** length_penalty``
    (0 disables normalisation). ``<eos>`` is a candidate only when ``p(eos) >= eos_threshold * max p(other
    token)`` (0 disables the check), which keeps the search from ending hypotheses early.
    Search ends at the input-derived length limit, or once ``beam_size`` hypotheses have finished and none of
    the live ones, ended at its next step, would score above the best finished one.
    """
    device = memory.device
    t_len = int(memory_length)
    mem = memory[:t_len].unsqueeze(0)
    keys = speller.attention.prepare(mem)
    mask = torch.ones(1, t_len, dtype=torch.bool, device=device)
    limit = int(max_output_lengths(torch.tensor([t_len]), max_ratio, max_extra)[0])
    use_ctc = ctc_log_probs is not None and ctc_weight > 0
    scorer = CTCPrefixScorer(ctc_log_probs, blank, speller.eos) if use_ctc else None
    pre_beam = pre_beam or max(beam_size, int(1.5 * beam_size))
    hyps = [_Hyp([], 0.0, scorer.initial() if scorer else None, 0.0)]
    state = speller.initial_state(mem)
    finished: list[tuple[float, list[int]]] = []
    log_eos_thr = math.log(eos_threshold) if eos_threshold > 0 else -math.inf

    for step in range(limit + 1):
        k = len(hyps)
        prev = torch.tensor([h.tokens[-1] if h.tokens else speller.eos for h in hyps], device=device)
        logits, new_state = speller.step(prev, state, mem.expand(k, -1, -1), keys.expand(k, -1, -1),
                                         mask.expand(k, -1))
        logp = F.log_softmax(logits, dim=-1).cpu()
        if step == limit:  # out of steps: every live hypothesis ends here
            only_eos = torch.full_like(logp, -math.inf)
            only_eos[:, speller.eos] = logp[:, speller.eos]
            logp = only_eos
        candidates: list[tuple[float, int, int, float, tuple | None]] = []
        for i, h in enumerate(hyps):
            row = logp[i]
            if step < limit and eos_threshold > 0:
                others = torch.cat([row[: speller.eos], row[speller.eos + 1:]])
                if float(row[speller.eos]) < log_eos_thr + float(others.max()):
                    row = row.clone()
                    row[speller.eos] = -math.inf
            top = torch.topk(row, min(pre_beam, int(torch.isfinite(row).sum()))).indices.tolist()
            if scorer is not None:
                psi, r_n, r_b = scorer.extend(h.ctc_state, h.tokens[-1] if h.tokens else None, top)
            for j, c in enumerate(top):
                att = h.att + float(row[c])
                if scorer is not None:
                    ctc_total = float(psi[j])
                    score = (1 - ctc_weight) * att + ctc_weight * ctc_total
                    cstate = (r_n[:, j], r_b[:, j], ctc_total)
                else:
                    score, cstate = att, None
                candidates.append((score, i, c, att, cstate))
        candidates.sort(key=lambda x: -x[0])
        new_hyps, keep_rows = [], []
        for score, i, c, att, cstate in candidates:
            if c == speller.eos:
                finished.append((_normalised(score, len(hyps[i].tokens) + 1, length_penalty), hyps[i].tokens))
            else:
                new_hyps.append(_Hyp(hyps[i].tokens + [c], att, cstate, score))
                keep_rows.append(i)
            if len(new_hyps) >= beam_size:
                break
        if not new_hyps:
            break
        if len(finished) >= beam_size:
            # Stop once no live hypothesis, even if it ended at its next step, could outrank the best
            # finished one. Stopping as soon as `beam_size` hypotheses have ended (whatever their scores)
            # lets early, low-scoring endings ("fifty o") win over the complete hypothesis still in the beam.
            best_live = max(_normalised(h.score, len(h.tokens) + 1, length_penalty) for h in new_hyps)
            if max(f[0] for f in finished) >= best_live:
                break
        idx = torch.tensor(keep_rows, device=device)
        state = _select_state(new_state, idx)
        hyps = new_hyps
    if not finished:
        best_live = max(hyps, key=lambda h: h.score)
        return best_live.tokens
    return max(finished, key=lambda f: f[0])[1]


def _normalised(score: float, length: int, length_penalty: float) -> float:
    return score / (max(length, 1) ** length_penalty) if length_penalty > 0 else score


def _select_state(state: SpellerState, idx: Tensor) -> SpellerState:
    return SpellerState([(h[idx], c[idx]) for h, c in state.hidden], state.context[idx],
                        None if state.weights is None else state.weights[idx])


def beam_search_batch(speller: Speller, memory: Tensor, memory_lengths: Tensor, *,
                      ctc_log_probs: Tensor | None = None, ctc_lengths: Tensor | None = None,
                      **kw) -> list[list[int]]:
    """:func:`beam_search` for every input of a padded batch; results in input order."""
    out = []
    for i in range(memory.size(0)):
        ctc = None
        if ctc_log_probs is not None:
            n = int(ctc_lengths[i]) if ctc_lengths is not None else ctc_log_probs.size(1)
            ctc = ctc_log_probs[i, :n]
        out.append(beam_search(speller, memory[i], int(memory_lengths[i]), ctc_log_probs=ctc, **kw))
    return out
