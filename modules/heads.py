"""Many-to-one heads: pooling a padded sequence into one vector, and an utterance classifier built on it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend
from modules.networks import FrontendEncoderModel
from modules.sequence import lengths_to_mask

POOLING_CHOICES = ("last", "mean", "max", "attention")


class SequencePooling(nn.Module):
    """Pools ``(B, T, D)`` encoder outputs into ``(B, D)``, ignoring padded steps.

    ``last``: the forward direction's output at each sequence's last valid step, concatenated (bidirectional
    encoders) with the backward direction's output at step 0, i.e. both directions' final states.
    ``mean`` / ``max``: over valid steps. ``attention``: a learned score per step, softmax over valid steps.

    Args:
        input_size: D.
        mode: One of ``last``, ``mean``, ``max``, ``attention``.
        bidirectional: Whether the last D/2 features run backwards (only matters for ``last``).

    Shape:
        x ``(B, T, D)``, lengths ``(B,)`` int64 in [1, T] -> ``(B, D)``.
    """

    def __init__(self, input_size: int, mode: Literal["last", "mean", "max", "attention"] = "last", *,
                 bidirectional: bool = False) -> None:
        super().__init__()
        if mode not in POOLING_CHOICES:
            raise ValueError(f"pooling must be one of {'|'.join(POOLING_CHOICES)}, got {mode!r}")
        if bidirectional and input_size % 2:
            raise ValueError(f"a bidirectional encoder's output size must be even, got {input_size}")
        self.mode = mode
        self.bidirectional = bidirectional
        self.score = nn.Linear(input_size, 1) if mode == "attention" else None

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        lengths = lengths.to(device=x.device, dtype=torch.long)
        mask = lengths_to_mask(lengths, x.size(1))  # (B, T)
        if self.mode == "last":
            last = x[torch.arange(x.size(0), device=x.device), lengths - 1]  # (B, D)
            if not self.bidirectional:
                return last
            half = x.size(-1) // 2
            return torch.cat([last[:, :half], x[:, 0, half:]], dim=-1)
        if self.mode == "mean":
            return (x * mask[..., None]).sum(1) / lengths.clamp_min(1)[:, None].to(x.dtype)
        if self.mode == "max":
            return x.masked_fill(~mask[..., None], float("-inf")).amax(1)
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        weights = scores.softmax(-1)
        return torch.einsum("bt,btd->bd", weights, x)


def encoder_pooling(encoder: RecurrentEncoder, mode: Literal["last", "mean", "max", "attention"]) -> SequencePooling:
    """Pooling over ``encoder``'s outputs (``last`` reads both directions' final states when they are unprojected)."""
    return SequencePooling(encoder.output_size, mode,
                           bidirectional=encoder.bidirectional and encoder.projection_size is None)


class SequenceClassifier(FrontendEncoderModel):
    """Waveform -> log-mel -> stacked (bi)RNN -> pooling -> dropout -> linear logits.

    Shape:
        waveforms ``(B, S)``, lengths ``(B,)`` samples -> logits ``(B, C)``.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder, num_classes: int,
                 pooling: Literal["last", "mean", "max", "attention"] = "mean", dropout: float = 0.0) -> None:
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        super().__init__(frontend=frontend, encoder=encoder)
        self.pool = encoder_pooling(encoder, pooling)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(encoder.output_size, num_classes)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        feats, frames = self.frontend(waveforms, lengths)  # (B, T, F)
        h, frames = self.encoder(feats, frames)  # (B, T', D*H)
        return self.out(self.dropout(self.pool(h, frames)))  # (B, C)
