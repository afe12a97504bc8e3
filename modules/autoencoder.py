"""Sequence autoencoder (Audio Word2Vec): a speech segment -> one vector -> the reconstructed feature sequence.

Chung, Wu, Shen, Lee and Lee (2016): a recurrent encoder reads a segment's acoustic frames into one fixed-size
vector; a recurrent decoder, given that vector alone, regenerates the frames. Trained without labels, the vector
keeps what the decoder needs to rebuild the segment, so segments of the same word land near each other. The
denoising variant corrupts the encoder's input (:func:`corrupt_features`) and still reconstructs the clean frames.

Shapes: B batch, S samples, T frames, F features per frame, E embedding size.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend
from modules.heads import encoder_pooling
from modules.networks import FrontendEncoderModel
from modules.sequence import lengths_to_mask, reverse_padded


def masked_mse(pred: Tensor, target: Tensor, lengths: Tensor) -> Tensor:
    """Mean squared error over valid frames only (padding contributes nothing, whatever it holds).

    Args:
        pred / target: ``(B, T, F)``.
        lengths: ``(B,)`` valid frames.

    Returns:
        Scalar: the sum of squared errors over valid frames divided by ``sum(lengths) * F``.
    """
    mask = lengths_to_mask(lengths.to(pred.device), pred.size(1))[..., None].to(pred.dtype)  # (B, T, 1)
    err = ((pred - target) ** 2) * mask
    return err.sum() / (mask.sum() * pred.size(-1)).clamp_min(1.0)


def corrupt_features(feats: Tensor, lengths: Tensor, *, noise_std: float = 0.0, frame_drop: float = 0.0,
                     time_masks: int = 0, time_mask_width: int = 5, freq_masks: int = 0,
                     freq_mask_width: int = 5) -> Tensor:
    """Corrupts normalised features for a denoising autoencoder (the input side only).

    Additive Gaussian noise of ``noise_std``, each frame zeroed with probability ``frame_drop``, and SpecAugment-style
    masks (``time_masks`` spans of up to ``time_mask_width`` frames, ``freq_masks`` bands of up to
    ``freq_mask_width`` bins) set to 0, the mean after per-utterance normalisation. Padded frames stay zero.

    Shape:
        feats ``(B, T, F)``, lengths ``(B,)`` -> ``(B, T, F)``.
    """
    b, t, f = feats.shape
    dev = feats.device
    out = feats
    if noise_std > 0:
        out = out + noise_std * torch.randn_like(out)
    keep = torch.ones(b, t, f, dtype=torch.bool, device=dev)
    if frame_drop > 0:
        keep &= (torch.rand(b, t, 1, device=dev) >= frame_drop)
    steps = torch.arange(t, device=dev)[None, :]
    for _ in range(time_masks):
        width = torch.randint(0, time_mask_width + 1, (b, 1), device=dev)
        start = (torch.rand(b, 1, device=dev) * (lengths[:, None].to(dev) - width + 1).clamp_min(1)).long()
        keep &= ~((steps >= start) & (steps < start + width))[..., None]
    bins = torch.arange(f, device=dev)[None, :]
    for _ in range(freq_masks):
        width = torch.randint(0, freq_mask_width + 1, (b, 1), device=dev)
        start = (torch.rand(b, 1, device=dev) * (f - width + 1)).long()
        keep &= ~((bins >= start) & (bins < start + width))[:, None, :]
    mask = lengths_to_mask(lengths.to(dev), t)[..., None]
    return out * keep * mask


class RecurrentDecoder(nn.Module):
    """Unrolls a feature sequence from one vector: the vector sets the initial state and is the input at every step.

    Args:
        embedding_size: E.
        output_size: F.
        hidden_size / num_layers / cell: The recurrent stack (``lstm`` or ``gru``).

    Shape:
        z ``(B, E)``, ``steps`` -> ``(B, steps, F)``.
    """

    def __init__(self, *, embedding_size: int, output_size: int, hidden_size: int = 256, num_layers: int = 1,
                 cell: Literal["lstm", "gru"] = "lstm") -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"decoder cell must be lstm|gru, got {cell!r}")
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(embedding_size, hidden_size, num_layers=num_layers, batch_first=True)
        n_states = 2 if cell == "lstm" else 1
        self.init_state = nn.Linear(embedding_size, n_states * num_layers * hidden_size)
        self.out = nn.Linear(hidden_size, output_size)

    def forward(self, z: Tensor, steps: int) -> Tensor:
        b = z.size(0)
        states = torch.tanh(self.init_state(z)).view(b, -1, self.num_layers, self.hidden_size)  # (B, 1|2, L, H)
        states = states.permute(1, 2, 0, 3).contiguous()  # (1|2, L, B, H)
        hx = (states[0], states[1]) if self.cell == "lstm" else states[0]
        y, _ = self.rnn(z[:, None, :].expand(b, steps, z.size(-1)), hx)  # (B, steps, H)
        return self.out(y)  # (B, steps, F)


class SequenceAutoencoder(FrontendEncoderModel):
    """Audio Word2Vec: waveform -> log-mel -> recurrent encoder -> pooled vector ``z`` -> decoder -> frames.

    Args:
        frontend: Log-mel features; they are both the encoder's input and the reconstruction target, so its
            SpecAugment must be off (corruption for denoising is applied here, to the input only).
        encoder: Stacked (bi)RNN over the frames.
        embedding_size: E.
        pooling: How encoder outputs become one vector (see :class:`~modules.heads.SequencePooling`).
        decoder_hidden_size / decoder_layers / decoder_cell: The decoder.
        reverse_target: The decoder emits the frames last-to-first (the first frame it must produce is the one
            the encoder read last), as in sequence-to-sequence autoencoders; outputs are flipped back, so
            ``reconstruction`` always aligns with ``features``.

    Shape:
        waveforms ``(B, S)``, lengths ``(B,)`` -> dict with ``embedding (B, E)``, ``features``/``reconstruction``
        ``(B, T, F)`` (zero past ``frames``), ``frames (B,)``. Given ``targets`` (other waveforms and lengths, one
        per input: a correspondence autoencoder's partners), ``features``, ``reconstruction`` and ``frames`` are
        the targets' (``(B, T', F)``), decoded from the inputs' embeddings.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder, embedding_size: int = 128,
                 pooling: Literal["last", "mean", "max", "attention"] = "last", decoder_hidden_size: int = 256,
                 decoder_layers: int = 1, decoder_cell: Literal["lstm", "gru"] = "lstm",
                 reverse_target: bool = True) -> None:
        if frontend.spec_augment:
            raise ValueError("the autoencoder's frontend must have spec_augment=False (its output is the target); "
                             "use the denoising corruption options instead")
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        super().__init__(frontend=frontend, encoder=encoder)
        self.pool = encoder_pooling(encoder, pooling)
        self.to_embedding = nn.Linear(encoder.output_size, embedding_size)
        self.decoder = RecurrentDecoder(embedding_size=embedding_size, output_size=frontend.output_size,
                                        hidden_size=decoder_hidden_size, num_layers=decoder_layers, cell=decoder_cell)
        self.reverse_target = reverse_target
        self.embedding_size = embedding_size

    def features(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Clean normalised features ``(B, T, F)`` and frame lengths ``(B,)``."""
        return self.frontend(waveforms, lengths)

    def encode_features(self, feats: Tensor, frames: Tensor) -> Tensor:
        h, out_frames = self.encoder(feats, frames)  # (B, T, D*H)
        return self.to_embedding(self.pool(h, out_frames))  # (B, E)

    def decode(self, z: Tensor, frames: Tensor) -> Tensor:
        """Reconstruction ``(B, max(frames), F)`` from ``z`` alone, zero past each length."""
        y = self.decoder(z, int(frames.max()))
        if self.reverse_target:
            y = reverse_padded(y, frames)
        return y * lengths_to_mask(frames.to(y.device), y.size(1))[..., None].to(y.dtype)

    def embed(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        """Embeddings ``(B, E)`` of clean waveforms."""
        feats, frames = self.features(waveforms, lengths)
        return self.encode_features(feats, frames)

    def forward(self, waveforms: Tensor, lengths: Tensor, corruption: dict | None = None,
                targets: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        feats, frames = self.features(waveforms, lengths)
        inp = corrupt_features(feats, frames, **corruption) if corruption else feats
        z = self.encode_features(inp, frames)
        if targets is not None:
            feats, frames = self.features(*targets)
        return {"embedding": z, "features": feats, "reconstruction": self.decode(z, frames), "frames": frames}
