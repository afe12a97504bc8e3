"""CTC acoustic model (frontend -> recurrent encoder -> CTC head) and a float32 CTC loss that reports bad rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend
from modules.networks import FrontendEncoderModel


class CTCHead(nn.Module):
    """Linear projection to the token set (blank included) + log-softmax in float32.

    Shape:
        - input: ``(B, T, D)``; output: ``(B, T, V)`` log-probabilities.
    """

    def __init__(self, *, input_size: int, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(input_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(x)).float().log_softmax(-1)


class CTCAcousticModel(FrontendEncoderModel):
    """Raw waveform in, per-frame token log-probabilities out: a checkpoint needs no feature pipeline.

    Shape:
        - waveforms ``(B, S)``, lengths ``(B,)`` samples -> log_probs ``(B, T, V)``, lengths ``(B,)`` frames.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder, vocab_size: int,
                 head_dropout: float = 0.0) -> None:
        super().__init__(frontend=frontend, encoder=encoder)
        self.head = CTCHead(input_size=encoder.output_size, vocab_size=vocab_size, dropout=head_dropout)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = self.frontend.output_lengths(lengths)
        for _ in range(getattr(self.encoder, "pyramid_layers", 0)):
            out = torch.div(out + 1, 2, rounding_mode="floor")
        return out

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, feat_lengths = self.frontend(waveforms, lengths)  # (B, T, F*k)
        enc, enc_lengths = self.encoder(feats, feat_lengths)  # (B, T', D*H)
        return self.head(enc), enc_lengths


def min_ctc_frames(targets: list[list[int]] | list[torch.Tensor]) -> torch.Tensor:
    """Fewest frames CTC needs per target: its length plus one blank between each pair of repeated tokens."""
    out = []
    for t in targets:
        t = t.tolist() if torch.is_tensor(t) else list(t)
        out.append(len(t) + sum(1 for a, b in zip(t, t[1:], strict=False) if a == b))
    return torch.tensor(out, dtype=torch.long)


def min_ctc_frames_padded(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """:func:`min_ctc_frames` of a padded ``(B, L)`` batch, computed on its device (no host copy per row)."""
    lengths = target_lengths.to(targets.device)
    if targets.size(1) < 2:
        return lengths.clone()
    steps = torch.arange(targets.size(1) - 1, device=targets.device)
    repeats = (targets[:, 1:] == targets[:, :-1]) & (steps.unsqueeze(0) < (lengths - 1).unsqueeze(1))
    return lengths + repeats.sum(1)


def ctc_loss_checked(log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor,
                     target_lengths: torch.Tensor, *, blank: int = 0,
                     min_frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-token CTC loss in float32 over the rows that can be aligned.

    Rows whose output is shorter than the frames their target needs are excluded (and reported through the
    returned mask) instead of being hidden by ``zero_infinity``.

    Args:
        log_probs: ``(B, T, V)`` log-probabilities (any dtype; computed in float32).
        out_lengths: ``(B,)`` valid frames per row.
        targets: ``(B, L)`` padded token ids.
        target_lengths: ``(B,)``.
        min_frames: ``(B,)`` frames each target needs (default: its length; see :func:`min_ctc_frames`).

    Returns:
        ``(loss, alignable)``: scalar loss (0 with no gradient path if nothing is alignable) and ``(B,)`` bool.
    """
    need = target_lengths if min_frames is None else min_frames
    # One host copy for both (each `.cpu()` of a GPU tensor waits for the device).
    host = torch.stack([out_lengths.to(need.device, torch.long), need.long()]).cpu()
    alignable = host[0] >= host[1]
    if not alignable.any():
        return log_probs.sum() * 0.0, alignable
    idx = alignable.nonzero().squeeze(1).to(log_probs.device)
    lp = log_probs.index_select(0, idx).float().transpose(0, 1)  # (T, B', V) for ctc_loss
    with torch.autocast(device_type=log_probs.device.type, enabled=False):
        loss = F.ctc_loss(lp, targets.index_select(0, idx), out_lengths.index_select(0, idx.to(out_lengths.device)),
                          target_lengths.index_select(0, idx.to(target_lengths.device)), blank=blank,
                          reduction="mean", zero_infinity=False)
    return loss, alignable
