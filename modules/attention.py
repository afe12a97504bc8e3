"""Attention over an encoder's memory: additive (Bahdanau), dot/general (Luong) and location-aware (Chorowski).

Every attention here scores each memory frame against the decoder's query, masks frames past each
sequence's length and normalises with a softmax, so the weights sum to 1 over valid frames and are exactly 0
on padding. Keys are projected once per utterance (:meth:`Attention.prepare`), not once per output step.

Shapes: B batch, T memory frames, K memory width, Q query width. ``memory (B, T, K)``, ``mask (B, T)`` bool
(True at valid frames), ``query (B, Q)``, ``prev_weights (B, T)``. A step returns ``context (B, K)`` and
``weights (B, T)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

ATTENTION_KINDS = ("additive", "dot", "general", "location")


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis restricted to ``mask``; exactly 0 where ``mask`` is False."""
    scores = scores.float().masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    # A row with no valid frame would be NaN; such rows never reach here (lengths >= 1), but stay finite anyway.
    return torch.nan_to_num(weights, nan=0.0)


class Attention(nn.Module):
    """Base class: ``prepare`` once per batch, then ``forward`` once per output step."""

    def prepare(self, memory: Tensor) -> Tensor:
        """Per-utterance key projections (the part of the score that does not depend on the query)."""
        return memory

    def score(self, query: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor, mask: Tensor,
                prev_weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weights = masked_softmax(self.score(query, keys, prev_weights), mask)
        context = torch.bmm(weights.unsqueeze(1).to(memory.dtype), memory).squeeze(1)
        return context, weights


class AdditiveAttention(Attention):
    """Bahdanau et al. (2015): ``score = v^T tanh(W q + U k)``."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int = 128) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)
        self.key_proj = nn.Linear(memory_size, attention_size)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)

    def energy(self, query: Tensor, keys: Tensor) -> Tensor:
        return keys + self.query_proj(query).unsqueeze(1)

    def score(self, query: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        return self.v(torch.tanh(self.energy(query, keys))).squeeze(-1)


class LocationAwareAttention(AdditiveAttention):
    """Chorowski et al. (2015): additive attention plus a convolution over the previous step's weights.

    The previous alignment tells the attention where it was, which keeps it moving forward monotonically
    over long utterances. At the first step the previous weights are all on the first frame.
    """

    def __init__(self, query_size: int, memory_size: int, attention_size: int = 128, channels: int = 10,
                 kernel_size: int = 31) -> None:
        super().__init__(query_size, memory_size, attention_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"location kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(1, channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.location_proj = nn.Linear(channels, attention_size, bias=False)

    def score(self, query: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        if prev_weights is None:
            prev_weights = torch.zeros(keys.shape[:2], device=keys.device, dtype=keys.dtype)
            prev_weights[:, 0] = 1.0
        loc = self.conv(prev_weights.to(keys.dtype).unsqueeze(1)).transpose(1, 2)  # (B, T, C)
        return self.v(torch.tanh(self.energy(query, keys) + self.location_proj(loc))).squeeze(-1)


class LuongAttention(Attention):
    """Luong et al. (2015): ``dot`` (``q . k``, needs equal widths) or ``general`` (``q^T W k``)."""

    def __init__(self, query_size: int, memory_size: int, kind: Literal["dot", "general"] = "general") -> None:
        super().__init__()
        if kind == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size} and {memory_size} "
                             "(use 'general')")
        self.kind = kind
        self.key_proj = nn.Linear(memory_size, query_size, bias=False) if kind == "general" else None

    def prepare(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory) if self.key_proj is not None else memory

    def score(self, query: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)


def build_attention(kind: str, *, query_size: int, memory_size: int, attention_size: int = 128,
                    location_channels: int = 10, location_kernel: int = 31) -> Attention:
    """``additive`` | ``dot`` | ``general`` | ``location``."""
    if kind == "additive":
        return AdditiveAttention(query_size, memory_size, attention_size)
    if kind == "location":
        return LocationAwareAttention(query_size, memory_size, attention_size, location_channels, location_kernel)
    if kind in ("dot", "general"):
        return LuongAttention(query_size, memory_size, kind)  # type: ignore[arg-type]
    raise ValueError(f"attention must be one of {'|'.join(ATTENTION_KINDS)}, got {kind!r}")


__all__ = ["ATTENTION_KINDS", "AdditiveAttention", "Attention", "LocationAwareAttention", "LuongAttention",
           "build_attention", "masked_softmax"]
