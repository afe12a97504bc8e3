"""Sequence-tagging blocks for slot filling: word context windows, character features, attention and a CRF.

Everything here is pure torch and works on padded batches ``(B, T, ...)`` with a ``lengths (B,)`` vector:

- :func:`context_window`: each step sees its neighbours' features (Mesnil et al. 2015's word window).
- :class:`CharCNN`: a word vector from its characters (convolution + max over characters), which gives unseen
  words and numbers a representation the word embedding cannot.
- :class:`SlotAttention` / :class:`IntentAttention`: the attention-based joint model of Liu & Lane (2016): a
  context vector per tag position and an attention-pooled sentence vector for the intent.
- :class:`SlotGate`: the slot gate of Goo et al. (2018), which lets the intent context steer each tag.
- :class:`LinearChainCRF`: a linear-chain conditional random field (forward algorithm for the likelihood,
  Viterbi for decoding), optionally forbidding transitions the BIO scheme cannot produce
  (:func:`bio_transition_mask`).
- :class:`SlotTagger`: the joint slot-filling and intent network assembled from these blocks and a recurrent
  encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.encoders import RecurrentEncoder
from modules.heads import SequencePooling
from modules.networks import build_encoder
from modules.sequence import lengths_to_mask

__all__ = [
    "CharCNN",
    "IntentAttention",
    "LinearChainCRF",
    "SlotAttention",
    "SlotGate",
    "SlotTagger",
    "bio_transition_mask",
    "context_window",
]


def context_window(x: Tensor, lengths: Tensor, size: int) -> Tensor:
    """Concatenates each step's features with those of its ``size`` left and right neighbours.

    Steps outside a sentence (before its start, past its length) contribute zeros, so the window never
    reads padding or another sentence.

    Args:
        x: ``(B, T, D)`` features.
        lengths: ``(B,)`` valid steps per row.
        size: Neighbours on each side (0 returns ``x``).

    Returns:
        ``(B, T, (2 * size + 1) * D)``: features of steps ``t - size .. t + size`` in that order.
    """
    if size <= 0:
        return x
    mask = lengths_to_mask(lengths.to(x.device), x.size(1))[..., None]
    x = x * mask
    b, t, d = x.shape
    padded = torch.cat([x.new_zeros(b, size, d), x, x.new_zeros(b, size, d)], dim=1)
    return torch.cat([padded[:, k:k + t] for k in range(2 * size + 1)], dim=-1)


class CharCNN(nn.Module):
    """A vector per word from its characters: embedding, 1-D convolution, ReLU, max over characters.

    Args:
        num_chars: Character vocabulary size (index 0 is padding).
        char_dim: Character embedding size.
        channels: Convolution channels = output size.
        kernel_size: Characters the convolution sees at once.

    Shape:
        chars ``(B, T, L)`` int64 (0 = padding) -> ``(B, T, channels)``.
    """

    def __init__(self, num_chars: int, char_dim: int = 32, channels: int = 64, kernel_size: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, channels, kernel_size, padding=kernel_size // 2)
        self.output_size = channels

    def forward(self, chars: Tensor) -> Tensor:
        b, t, n = chars.shape
        x = self.embedding(chars.reshape(b * t, n)).transpose(1, 2)  # (B*T, C_in, L)
        h = torch.relu(self.conv(x))
        # Padding characters must not win the max: ReLU outputs are >= 0, so zero them out.
        h = h.masked_fill((chars.reshape(b * t, 1, n) == 0), 0.0)
        return h.amax(-1).reshape(b, t, -1)


class SlotAttention(nn.Module):
    """Attention from every step to every valid step: a context vector ``c_i`` per position.

    ``e_ij = (W h_i) . (U h_j) / sqrt(a)``, ``a_ij = softmax_j(e_ij)`` over valid ``j``, ``c_i = sum_j a_ij h_j``.
    Liu & Lane (2016) and Goo et al. (2018) score pairs with a small feed-forward net (additive attention); a
    bilinear score gives the same kind of context for a matrix product instead of a ``(B, T, T, a)`` tanh, which
    made training several times slower on CPU.

    Shape:
        h ``(B, T, D)``, lengths ``(B,)`` -> ``(B, T, D)`` contexts and ``(B, T, T)`` weights.
    """

    def __init__(self, size: int, attention_size: int | None = None) -> None:
        super().__init__()
        a = attention_size or size
        self.query = nn.Linear(size, a, bias=False)
        self.key = nn.Linear(size, a)
        self.scale = a ** -0.5

    def forward(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        valid = lengths_to_mask(lengths.to(h.device), h.size(1))  # (B, T)
        e = (self.query(h) @ self.key(h).transpose(1, 2)) * self.scale  # (B, T, T)
        a = e.masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)
        return a @ h, a


class IntentAttention(nn.Module):
    """Attention pooling for the intent: ``a_j = softmax_j(v^T tanh(W h_j))``, ``c = sum_j a_j h_j``.

    Shape:
        h ``(B, T, D)``, lengths ``(B,)`` -> ``(B, D)``.
    """

    def __init__(self, size: int, attention_size: int | None = None) -> None:
        super().__init__()
        a = attention_size or size
        self.proj = nn.Linear(size, a)
        self.score = nn.Linear(a, 1, bias=False)

    def forward(self, h: Tensor, lengths: Tensor) -> Tensor:
        valid = lengths_to_mask(lengths.to(h.device), h.size(1))
        e = self.score(torch.tanh(self.proj(h))).squeeze(-1).masked_fill(~valid, float("-inf"))
        return (e.softmax(-1)[..., None] * h).sum(1)


class SlotGate(nn.Module):
    """Goo et al. (2018)'s slot gate: ``g_i = v^T tanh(c_i + W c_I)``; tags read ``h_i + g_i * c_i``.

    Shape:
        h, slot_context ``(B, T, D)``, intent_context ``(B, D)`` -> ``(B, T, D)``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.intent = nn.Linear(size, size)
        self.v = nn.Linear(size, 1, bias=False)

    def forward(self, h: Tensor, slot_context: Tensor, intent_context: Tensor) -> Tensor:
        g = self.v(torch.tanh(slot_context + self.intent(intent_context)[:, None, :]))  # (B, T, 1)
        return h + g * slot_context


def bio_transition_mask(tags: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Which tag transitions the BIO scheme allows: ``I-x`` only after ``B-x`` or ``I-x``, never first.

    Args:
        tags: Tag names such as ``O``, ``B-city``, ``I-city``; names outside BIO (``<pad>``...) are unconstrained.

    Returns:
        ``allowed (K, K)`` bool (``[i, j]``: tag j may follow tag i) and ``start (K,)`` bool (tag may open).
    """
    k = len(tags)
    allowed = torch.ones(k, k, dtype=torch.bool)
    start = torch.ones(k, dtype=torch.bool)
    for j, tag in enumerate(tags):
        if not tag.startswith("I-"):
            continue
        kind = tag[2:]
        start[j] = False
        for i, prev in enumerate(tags):
            allowed[i, j] = prev in (f"B-{kind}", f"I-{kind}")
    return allowed, start


class LinearChainCRF(nn.Module):
    """A linear-chain CRF over emission scores: negative log-likelihood and Viterbi decoding.

    Score of a tag path ``y``: ``start[y_0] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_last]``.
    Forbidden transitions (``allowed`` false) get a large negative constant that is not learned.

    Args:
        num_tags: K.
        allowed: Optional ``(K, K)`` bool, ``[i, j]`` = tag j may follow tag i.
        start_allowed: Optional ``(K,)`` bool, tags a sentence may start with.
    """

    FORBIDDEN = -1e4

    def __init__(self, num_tags: int, allowed: Tensor | None = None, start_allowed: Tensor | None = None) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        trans_pen = torch.zeros(num_tags, num_tags)
        start_pen = torch.zeros(num_tags)
        if allowed is not None:
            trans_pen = trans_pen.masked_fill(~allowed, self.FORBIDDEN)
        if start_allowed is not None:
            start_pen = start_pen.masked_fill(~start_allowed, self.FORBIDDEN)
        self.register_buffer("transition_penalty", trans_pen, persistent=False)
        self.register_buffer("start_penalty", start_pen, persistent=False)

    def _scores(self) -> tuple[Tensor, Tensor]:
        return self.transitions + self.transition_penalty, self.start + self.start_penalty

    def nll(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        """Per-sentence negative log-likelihood ``(B,)`` of ``tags (B, T)`` (values past a length are ignored)."""
        trans, start = self._scores()
        b, t, _ = emissions.shape
        lengths = lengths.to(emissions.device)
        valid = lengths_to_mask(lengths, t)
        tags = tags.masked_fill(~valid, 0)
        rows = torch.arange(b, device=emissions.device)
        # Gold path score.
        emit = emissions.gather(2, tags[..., None]).squeeze(-1)  # (B, T)
        gold = start[tags[:, 0]] + (emit * valid).sum(1)
        step = trans[tags[:, :-1], tags[:, 1:]] * valid[:, 1:]
        gold = gold + step.sum(1) + self.end[tags[rows, lengths - 1]]
        # Partition function by the forward algorithm; rows past their length keep their alpha. Each step's
        # logsumexp over previous tags is a (B, K) x (K, K) product of exponentials, shifted by the row and
        # column maxima so nothing overflows: about 15x faster on a CPU than a (B, K, K) logsumexp, same value.
        # A sum that underflows to 0 (a state ~1e-30 times less likely than the best) is clamped, not -inf.
        alpha = start[None] + emissions[:, 0]  # (B, K)
        col_max = trans.max(0, keepdim=True).values.detach()
        exp_trans = (trans - col_max).exp()
        for i in range(1, t):
            row_max = alpha.max(-1, keepdim=True).values.detach()
            nxt = ((alpha - row_max).exp() @ exp_trans).clamp_min(1e-30).log() + row_max + col_max + emissions[:, i]
            alpha = torch.where(valid[:, i, None], nxt, alpha)
        log_z = torch.logsumexp(alpha + self.end[None], dim=1)
        return log_z - gold

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        """The highest-scoring tag path of each row (Viterbi), cut to its length."""
        trans, start = self._scores()
        b, t, _ = emissions.shape
        lengths = lengths.to(emissions.device)
        valid = lengths_to_mask(lengths, t)
        score = start[None] + emissions[:, 0]
        back = []
        for i in range(1, t):
            total = score[:, :, None] + trans[None]  # (B, K_prev, K)
            best, idx = total.max(1)
            back.append(idx)
            score = torch.where(valid[:, i, None], best + emissions[:, i], score)
        last = (score + self.end[None]).argmax(-1)
        paths = []
        for r in range(b):
            n = int(lengths[r])
            y = [int(last[r])]
            for i in range(n - 1, 0, -1):
                y.append(int(back[i - 1][r, y[-1]]))
            paths.append(y[::-1])
        return paths


class SlotTagger(nn.Module):
    """Joint slot filling (a tag per word) and intent detection (one per sentence) over word ids.

    Word embedding (+ :class:`CharCNN` vector) -> dropout -> :func:`context_window` -> ``encoder`` -> dropout ->
    ``tag_head`` per word and ``intent_head`` over the pooled states; ``joint`` adds the attention contexts of Liu
    & Lane (2016) or Goo et al. (2018)'s slot gate, and a :class:`LinearChainCRF` can score whole tag sequences.

    Args:
        encoder: The recurrent encoder; its ``input_size`` is :meth:`encoder_input_size` of the options below.
        vocab_size: Word vocabulary size (id 0 is padding).
        tags: Tag names (their number sizes the tag head; with ``crf`` the BIO-impossible transitions are
            forbidden).
        num_intents: Intent classes (at least one output is built).
        embedding_dim: Word embedding size.
        dropout: On the (word + character) embeddings and on the encoder outputs.
        intent_pooling: How the encoder outputs are pooled for the intent head.
        context_window: Neighbouring words on each side in each word's input.
        num_chars: Character vocabulary size of the character features (0: none; ids 0 and 1 are padding and
            unseen characters).
        char_dim / char_channels: Character embedding size and CNN output size.
        joint: ``pooled``, ``attention`` or ``slot_gated``.
        crf: Score tag sequences with a linear-chain CRF (decoded with Viterbi).

    Shape:
        tokens ``(B, T)``, lengths ``(B,)``, chars ``(B, T, L)`` (with character features) -> tag scores
        ``(B, T, len(tags))`` and intent logits ``(B, max(1, num_intents))``.
    """

    def __init__(self, *, encoder: RecurrentEncoder, vocab_size: int, tags: Sequence[str], num_intents: int,
                 embedding_dim: int = 100, dropout: float = 0.0,
                 intent_pooling: Literal["mean", "max", "last", "attention"] = "max", context_window: int = 0,
                 num_chars: int = 0, char_dim: int = 32, char_channels: int = 64,
                 joint: Literal["pooled", "attention", "slot_gated"] = "pooled", crf: bool = False) -> None:
        super().__init__()
        if joint not in ("pooled", "attention", "slot_gated"):
            raise ValueError(f"joint must be pooled, attention or slot_gated, got {joint!r}")
        want = self.encoder_input_size(embedding_dim=embedding_dim, context_window=context_window,
                                       num_chars=num_chars, char_channels=char_channels)
        if encoder.input_size != want:
            raise ValueError(f"encoder input_size ({encoder.input_size}) must be {want} (the word and character "
                             f"features of {2 * context_window + 1} words)")
        self.context_window = context_window
        self.joint = joint
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.char_cnn = CharCNN(num_chars, char_dim, char_channels) if num_chars else None
        self.encoder = encoder
        d = encoder.output_size
        self.pooling = SequencePooling(d, intent_pooling, bidirectional=encoder.bidirectional)
        tag_in, intent_in = d, d
        if joint != "pooled":
            self.slot_attention = SlotAttention(d)
            self.intent_attention = IntentAttention(d)
            intent_in = 2 * d
            if joint == "attention":
                tag_in = 2 * d
            else:
                self.slot_gate = SlotGate(d)
        self.tag_head = nn.Linear(tag_in, len(tags))
        self.intent_head = nn.Linear(intent_in, max(1, num_intents))
        self.crf = LinearChainCRF(len(tags), *bio_transition_mask(tags)) if crf else None

    @staticmethod
    def encoder_input_size(*, embedding_dim: int, context_window: int = 0, num_chars: int = 0,
                           char_channels: int = 64) -> int:
        """The features the encoder reads per word: its window's word (and character) vectors."""
        if context_window < 0:
            raise ValueError(f"context_window must be >= 0, got {context_window}")
        return (embedding_dim + (char_channels if num_chars else 0)) * (2 * context_window + 1)

    @classmethod
    def from_options(cls, *, encoder: Mapping[str, Any], embedding_dim: int, **kwargs: Any) -> SlotTagger:
        """The network with an encoder built from the ``encoder`` options over the word features."""
        sizes = {k: kwargs[k] for k in ("context_window", "num_chars", "char_channels") if k in kwargs}
        size = cls.encoder_input_size(embedding_dim=embedding_dim, **sizes)
        return cls(encoder=build_encoder(encoder, input_size=size), embedding_dim=embedding_dim, **kwargs)

    def forward(self, tokens: Tensor, lengths: Tensor, chars: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.embedding(tokens)  # (B, T, E)
        if self.char_cnn is not None:
            if chars is None:
                raise ValueError("this tagger reads character features: give chars (B, T, L)")
            x = torch.cat([x, self.char_cnn(chars)], dim=-1)
        x = context_window(self.dropout(x), lengths, self.context_window)
        h, _ = self.encoder(x, lengths)  # (B, T, D*H), zeros past each length
        h = self.dropout(h)
        pooled = self.pooling(h, lengths.to(h.device))
        if self.joint == "pooled":
            return self.tag_head(h), self.intent_head(pooled)
        slot_context, _ = self.slot_attention(h, lengths)
        intent_context = self.intent_attention(h, lengths)
        tag_in = (torch.cat([h, slot_context], -1) if self.joint == "attention"
                  else self.slot_gate(h, slot_context, intent_context))
        return self.tag_head(tag_in), self.intent_head(torch.cat([pooled, intent_context], -1))

    def tag_loss(self, tag_logits: Tensor, tags: Tensor, lengths: Tensor, ignore_index: int = -100) -> Tensor:
        """Mean per-word loss of the gold ``tags (B, T)`` (``ignore_index`` marks padding and unseen tags).

        With the CRF, a sentence holding an unseen tag has no path and is left out; the sentence NLL is divided
        by the words scored, so the loss means the same with and without the CRF.
        """
        if self.crf is None:
            return F.cross_entropy(tag_logits.flatten(0, 1), tags.flatten(), ignore_index=ignore_index)
        valid = torch.arange(tags.size(1), device=tags.device)[None] < lengths[:, None].to(tags.device)
        keep = ~((tags == ignore_index) & valid).any(1)
        if not keep.any():
            return tag_logits.sum() * 0.0
        nll = self.crf.nll(tag_logits[keep], tags[keep].clamp_min(0), lengths[keep])
        return nll.sum() / lengths[keep].sum().to(nll)

    def decode_tags(self, tag_logits: Tensor, lengths: Tensor) -> list[list[int]]:
        """The best tag ids of each sentence (Viterbi with the CRF, else per word), cut to its length."""
        ids = self.crf.decode(tag_logits, lengths) if self.crf is not None else tag_logits.argmax(-1).tolist()
        return [row[:n] for row, n in zip(ids, lengths.tolist(), strict=True)]
