"""Speech frontend inside the model: waveform -> log-mel features, normalisation, SpecAugment, frame stacking."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchaudio
from torch import nn


def frames_for(num_samples: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Number of STFT frames (``center=True``) for waveforms of ``num_samples`` samples."""
    return torch.div(num_samples, hop_length, rounding_mode="floor") + 1


def lengths_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, T)`` bool mask, True at valid steps."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def normalize_utterances(feats: torch.Tensor, mask: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Each utterance's features ``(B, T, F)`` minus its mean over its valid frames, over its standard deviation."""
    n = frame_lengths.clamp_min(1)[:, None, None].to(feats)
    mean = (feats * mask).sum(1, keepdim=True) / n
    var = (((feats - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (feats - mean) / (var + 1e-5).sqrt()


class LogMelFrontend(nn.Module):
    """Waveforms to normalised log-mel frames, with SpecAugment in training and optional frame stacking.

    Args:
        sample_rate: Input sample rate (Hz); audio is resampled to it before the model.
        n_mels: Mel bins.
        win_ms / hop_ms: Analysis window and hop in milliseconds (25 / 10 by default).
        normalize: ``utterance``: per-utterance mean/variance over valid frames; ``none``.
        spec_augment: Apply frequency and time masking while training.
        freq_masks / freq_mask_width: Number and maximum width (bins) of frequency masks.
        time_masks / time_mask_width: Number and maximum width (frames) of time masks; each mask is also
            capped at ``time_mask_max_frac`` of the utterance.
        stack_frames: Concatenate this many consecutive frames and keep every ``stack_frames``-th (x1-x4),
            shortening the sequence the recurrent stack runs over.
        speed_perturb: Speed factors drawn uniformly per utterance while training (e.g. ``(0.9, 1.0, 1.1)``:
            resampling changes tempo and pitch together, as in Kaldi/sox ``speed``); ``None`` disables.

    Shape:
        - waveforms: ``(B, S)`` float, zero-padded; lengths ``(B,)`` samples.
        - output: ``(B, T, n_mels * stack_frames)``, lengths ``(B,)`` frames, zeros past each length.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        normalize: Literal["utterance", "global", "none"] = "utterance",
        spec_augment: bool = True,
        freq_masks: int = 2,
        freq_mask_width: int = 15,
        time_masks: int = 2,
        time_mask_width: int = 40,
        time_mask_max_frac: float = 0.1,
        stack_frames: int = 1,
        speed_perturb: tuple[float, ...] | list[float] | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= stack_frames <= 8:
            raise ValueError(f"stack_frames must be between 1 and 8, got {stack_frames}")
        if speed_perturb is not None and (not speed_perturb or any(not 0.5 <= f <= 2.0 for f in speed_perturb)):
            raise ValueError(f"speed_perturb factors must lie in [0.5, 2.0], got {speed_perturb!r}")
        self.speed_perturb = tuple(float(f) for f in speed_perturb) if speed_perturb else None
        if normalize not in ("utterance", "global", "none"):
            raise ValueError(f"normalize must be one of utterance|global|none, got {normalize!r}")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.win_length = int(round(sample_rate * win_ms / 1000))
        self.hop_length = int(round(sample_rate * hop_ms / 1000))
        n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.normalize = normalize
        self.spec_augment = spec_augment
        self.freq_masks, self.freq_mask_width = freq_masks, freq_mask_width
        self.time_masks, self.time_mask_width, self.time_mask_max_frac = time_masks, time_mask_width, time_mask_max_frac
        self.stack_frames = stack_frames
        if normalize == "global":
            # Mean and variance of every log-mel bin over all training frames seen (cumulative, then a slow moving
            # average); saved with the model. Each frame is normalised on its own, so streaming stays exact.
            self.register_buffer("feat_mean", torch.zeros(n_mels))
            self.register_buffer("feat_var", torch.ones(n_mels))
            self.register_buffer("feat_frames", torch.zeros((), dtype=torch.float64))
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=self.win_length, hop_length=self.hop_length,
            n_mels=n_mels, center=True, power=2.0)

    @property
    def output_size(self) -> int:
        return self.n_mels * self.stack_frames

    @property
    def frame_rate(self) -> float:
        """Output frames per second (after stacking)."""
        return self.sample_rate / self.hop_length / self.stack_frames

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        frames = frames_for(lengths, self.hop_length)
        return torch.div(frames + self.stack_frames - 1, self.stack_frames, rounding_mode="floor")

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Features in float32 even under autocast: log of small powers is fragile in half precision.
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            if self.training and self.speed_perturb:
                waveforms, lengths = self._speed_perturb(waveforms.float(), lengths)
            short = self.melspec.n_fft // 2 + 1 - waveforms.size(-1)
            if short > 0:  # the centred STFT's reflection padding needs more samples than half a window
                waveforms = torch.nn.functional.pad(waveforms, (0, short))
            feats = self.melspec(waveforms.float()).clamp_min(1e-10).log()  # (B, F, T)
            feats = feats.transpose(1, 2)  # (B, T, F)
            frame_lengths = frames_for(lengths, self.hop_length).clamp(max=feats.size(1))
            mask = lengths_mask(frame_lengths, feats.size(1))[..., None]  # (B, T, 1)
            if self.normalize == "utterance":
                feats = normalize_utterances(feats, mask, frame_lengths)
            elif self.normalize == "global":
                if self.training:
                    self._update_global_stats(feats, mask)
                feats = (feats - self.feat_mean) / (self.feat_var + 1e-5).sqrt()
            if self.training and self.spec_augment:
                feats = self._spec_augment(feats, frame_lengths)
            feats = feats * mask
            if self.stack_frames > 1:
                feats, frame_lengths = self._stack(feats, frame_lengths)
        return feats, frame_lengths

    @torch.no_grad()
    def _update_global_stats(self, feats: torch.Tensor, mask: torch.Tensor) -> None:
        # Tensor arithmetic only (no host sync per step on an accelerator).
        n = mask.sum().to(self.feat_frames.dtype)
        safe = n.clamp_min(1)
        mean = (feats * mask).sum((0, 1)) / safe.to(feats.dtype)
        var = (((feats - mean) * mask) ** 2).sum((0, 1)) / safe.to(feats.dtype)
        # Cumulative average over the frames seen so far, never weighting a batch below 1e-3 (a batch without
        # valid frames weighs 0).
        w = torch.where(n > 0, (n / (self.feat_frames + safe)).clamp_min(1e-3), torch.zeros_like(n)).to(feats.dtype)
        delta = mean - self.feat_mean
        self.feat_var.mul_(1 - w).add_(w * var + w * (1 - w) * delta**2)
        self.feat_mean.add_(w * delta)
        self.feat_frames += n

    def _speed_perturb(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Resamples each utterance by a factor drawn from :attr:`speed_perturb` (one resample call per factor)."""
        factors = torch.tensor(self.speed_perturb)
        choice = torch.randint(len(factors), (waveforms.size(0),))
        if bool((factors[choice] == 1.0).all()):
            return waveforms, lengths
        pieces: list[tuple[int, torch.Tensor]] = []
        new_lengths = lengths.clone()
        for k, f in enumerate(self.speed_perturb):
            rows = (choice == k).nonzero().flatten().tolist()
            if not rows:
                continue
            if f == 1.0:
                pieces += [(r, waveforms[r, : lengths[r]]) for r in rows]
                continue
            # Playing at speed f: the signal, read as if sampled at f * rate, is resampled to the model's rate.
            orig = int(round(self.sample_rate * f))
            longest = int(lengths[rows].max())
            out = torchaudio.functional.resample(waveforms[rows, :longest], orig, self.sample_rate)
            for j, r in enumerate(rows):
                n = max(1, min(out.size(1), int(round(int(lengths[r]) * self.sample_rate / orig))))
                new_lengths[r] = n
                pieces.append((r, out[j, :n]))
        result = waveforms.new_zeros(waveforms.size(0), int(new_lengths.max()))
        for r, wav in pieces:
            result[r, : wav.numel()] = wav
        return result, new_lengths

    def _spec_augment(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Independent masks per utterance; masked values set to 0 (the mean after normalisation)."""
        b, t, f = feats.shape
        keep = torch.ones_like(feats, dtype=torch.bool)
        bins = torch.arange(f, device=feats.device)[None, :]
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_mask_width + 1, (b, 1), device=feats.device)
            start = (torch.rand(b, 1, device=feats.device) * (f - width + 1)).long()
            keep &= ~((bins >= start) & (bins < start + width))[:, None, :]
        steps = torch.arange(t, device=feats.device)[None, :]
        max_w = torch.minimum(torch.full_like(lengths, self.time_mask_width),
                              (lengths.float() * self.time_mask_max_frac).long())
        for _ in range(self.time_masks):
            width = (torch.rand(b, device=feats.device) * (max_w + 1).float()).long()[:, None]
            start = (torch.rand(b, 1, device=feats.device) * (lengths[:, None] - width + 1).clamp_min(1).float()).long()
            keep &= ~((steps >= start) & (steps < start + width))[:, :, None]
        return feats * keep

    def _stack(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.stack_frames
        b, t, f = feats.shape
        pad = (-t) % k
        if pad:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, pad))
        feats = feats.reshape(b, (t + pad) // k, k * f)  # (B, T/k, k*F)
        return feats, torch.div(lengths + k - 1, k, rounding_mode="floor")
