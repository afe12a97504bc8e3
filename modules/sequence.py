"""Padded-batch helpers every recurrent module shares: validity masks, in-length reversal, argument checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_choice", "check_dropout", "check_padded_input", "check_positive_int", "lengths_to_mask",
           "reverse_padded"]


# --------------------------------------------------------------------------- validation helpers


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, found {value!r}")


def check_positive_int(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, found {value!r}")


def check_dropout(value: object) -> None:
    """Raise ValueError unless ``value`` is a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1), found {value!r}")


def check_padded_input(x: Tensor, lengths: Tensor, input_size: int) -> None:
    """Check shapes of a padded batch ``x (B, T, F)`` and its ``lengths (B,)``."""
    if x.dim() != 3 or x.size(-1) != input_size:
        raise ValueError(f"x must have shape (B, T, {input_size}), found {tuple(x.shape)}")
    if lengths.dim() != 1 or lengths.size(0) != x.size(0):
        raise ValueError(f"lengths must have shape ({x.size(0)},), found {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor (int64), found {lengths.dtype}")


# --------------------------------------------------------------------------- padding helpers


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean validity mask.

    Args:
        lengths: ``(B,)`` integer lengths.
        max_len: padded length ``T``.

    Returns:
        ``(B, T)`` bool tensor, True at valid steps ``t < lengths[b]``.
    """
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a padded batch within its own length.

    Step ``t < lengths[b]`` of row ``b`` goes to ``lengths[b] - 1 - t``; padded steps stay in place.
    The map is an involution, so applying it twice gives back ``x``.

    Args:
        x: ``(B, T, F)`` padded batch.
        lengths: ``(B,)`` integer lengths.

    Returns:
        ``(B, T, F)`` tensor with every valid prefix reversed.
    """
    batch, steps = x.shape[:2]
    lengths = lengths.to(device=x.device, dtype=torch.long)
    t = torch.arange(steps, device=x.device).unsqueeze(0).expand(batch, steps)
    rev = lengths.unsqueeze(1) - 1 - t
    index = torch.where(rev >= 0, rev, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))
