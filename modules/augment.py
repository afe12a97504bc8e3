"""Waveform augmentation for voices and microphones a model never heard: noise, reverberation, channel, level.

A shipped recogniser meets strangers: other rooms, other microphones, other levels. :class:`WaveformAugment`
degrades each training utterance on the fly, each effect drawn independently per utterance:

- additive noise at a random SNR, cut from a bank of real noise recordings (:meth:`WaveformAugment.set_noise`;
  white/pink noise when the bank is empty);
- simulated reverberation: a synthetic room impulse response (exponentially decaying noise, RT60 drawn);
- channel: a band limit (telephone-like 300-3400 Hz or a random low-pass) and a random two-band EQ tilt;
- codec: 8-bit mu-law quantisation (the G.711 telephone codec), optionally at 8 kHz;
- level: a gain in dB and a DC offset;
- time shift: the signal moved by up to ``shift_ms`` earlier or later, zeros filling in (keyword spotters' shift).

Shapes: ``waveforms (B, S)`` float32 with ``lengths (B,)`` samples; the output keeps both (padding stays zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def band_filter(wav: Tensor, sample_rate: int, low_hz: float, high_hz: float) -> Tensor:
    """Zeroes the spectrum outside ``[low_hz, high_hz]`` with 50 Hz-wide raised-cosine edges (one FFT)."""
    n = wav.numel()
    spec = torch.fft.rfft(wav)
    freqs = torch.fft.rfftfreq(n, 1.0 / sample_rate)
    edge = 50.0
    lo = ((freqs - (low_hz - edge)) / edge).clamp(0, 1)
    hi = (((high_hz + edge) - freqs) / edge).clamp(0, 1)
    gain = 0.5 - 0.5 * torch.cos(math.pi * lo * hi)
    return torch.fft.irfft(spec * gain, n=n)


def _tilt(wav: Tensor, sample_rate: int, low_db: float, high_db: float, split_hz: float) -> Tensor:
    """A smooth two-band EQ: ``low_db`` under ``split_hz``, ``high_db`` above it (one FFT)."""
    n = wav.numel()
    spec = torch.fft.rfft(wav)
    freqs = torch.fft.rfftfreq(n, 1.0 / sample_rate)
    w = torch.sigmoid((freqs - split_hz) / (0.25 * split_hz))
    gain_db = low_db * (1 - w) + high_db * w
    return torch.fft.irfft(spec * 10 ** (gain_db / 20), n=n)


def time_shift(wav: Tensor, samples: int) -> Tensor:
    """``wav (S,)`` moved ``samples`` later (earlier if negative), same length, zeros filling in."""
    n = wav.numel()
    if samples == 0 or abs(samples) >= n:
        return wav if samples == 0 else torch.zeros_like(wav)
    out = torch.zeros_like(wav)
    if samples > 0:
        out[samples:] = wav[:n - samples]
    else:
        out[:samples] = wav[-samples:]
    return out


def synthetic_rir(sample_rate: int, rt60: float, generator: torch.Generator | None = None) -> Tensor:
    """A room impulse response: a direct path then exponentially decaying noise reaching -60 dB at ``rt60`` s."""
    n = max(2, int(rt60 * sample_rate))
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    tail = torch.randn(n, generator=generator) * torch.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB
    tail[0] = 0.0
    pre = int(0.002 * sample_rate)  # 2 ms before the first reflections
    tail[:pre] = 0.0
    rir = tail / tail.norm().clamp_min(1e-8) * 0.7
    rir[0] = 1.0
    return rir / rir.norm()


class WaveformAugment(nn.Module):
    """Random degradations of training waveforms (identity in eval mode).

    Args:
        sample_rate: Rate of the waveforms.
        noise_prob / snr_db: Chance of added noise and its SNR range (dB, drawn uniformly).
        reverb_prob / rt60: Chance of reverberation and the RT60 range (seconds).
        band_prob: Chance of a band limit (half telephone 300-3400 Hz, half a low-pass at 3-7 kHz).
        eq_prob / eq_db: Chance of a two-band EQ tilt and its range (dB per band).
        codec_prob: Chance of 8-bit mu-law quantisation (G.711-like).
        gain_prob / gain_db: Chance of a gain change and its range (dB).
        dc_prob / dc: Chance of a DC offset and its largest magnitude (fraction of full scale).
        shift_prob / shift_ms: Chance of a time shift and its largest size (milliseconds, either way; the length
            stays, zeros fill in). Off by default: it suits fixed-length clips (keywords), not sentences.
    """

    def __init__(self, *, sample_rate: int = 16000, noise_prob: float = 0.5, snr_db: tuple[float, float] = (0.0, 25.0),
                 reverb_prob: float = 0.3, rt60: tuple[float, float] = (0.15, 0.8), band_prob: float = 0.2,
                 eq_prob: float = 0.3, eq_db: float = 8.0, codec_prob: float = 0.1, gain_prob: float = 0.5,
                 gain_db: tuple[float, float] = (-15.0, 6.0), dc_prob: float = 0.1, dc: float = 0.05,
                 shift_prob: float = 0.0, shift_ms: float = 100.0) -> None:
        super().__init__()
        for name, p in (("noise_prob", noise_prob), ("reverb_prob", reverb_prob), ("band_prob", band_prob),
                        ("eq_prob", eq_prob), ("codec_prob", codec_prob), ("gain_prob", gain_prob),
                        ("dc_prob", dc_prob), ("shift_prob", shift_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        if not 0.0 <= shift_ms <= 1000.0:
            raise ValueError(f"shift_ms must lie in [0, 1000], got {shift_ms}")
        if snr_db[0] > snr_db[1] or rt60[0] > rt60[1] or rt60[0] <= 0 or gain_db[0] > gain_db[1]:
            raise ValueError(f"ranges must be (low, high) with low <= high (rt60 > 0): snr_db={snr_db}, "
                             f"rt60={rt60}, gain_db={gain_db}")
        self.sample_rate = sample_rate
        self.noise_prob, self.snr_db = noise_prob, (float(snr_db[0]), float(snr_db[1]))
        self.reverb_prob, self.rt60 = reverb_prob, (float(rt60[0]), float(rt60[1]))
        self.band_prob, self.eq_prob, self.eq_db = band_prob, eq_prob, float(eq_db)
        self.codec_prob = codec_prob
        self.gain_prob, self.gain_db = gain_prob, (float(gain_db[0]), float(gain_db[1]))
        self.dc_prob, self.dc = dc_prob, float(dc)
        self.shift_prob, self.shift_ms = shift_prob, float(shift_ms)
        self.noise: list[Tensor] = []  # never saved: the bank is training data, not weights

    def set_noise(self, clips: list[Tensor]) -> None:
        """The noise bank: 1-D float tensors at :attr:`sample_rate` (e.g. background-noise recordings)."""
        self.noise = [c.float().flatten() for c in clips if c.numel() > 0 and c.abs().max() > 0]

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def _noise_like(self, n: int) -> Tensor:
        if self.noise:
            clip = self.noise[int(torch.randint(len(self.noise), ()))]
            if clip.numel() < n:  # tile short clips
                clip = clip.repeat(n // clip.numel() + 1)
            start = int(torch.randint(clip.numel() - n + 1, ()))
            return clip[start:start + n]
        white = torch.randn(n)
        if torch.rand(()) < 0.5:
            return white
        # pink-ish: white noise with a 1/sqrt(f) spectrum
        spec = torch.fft.rfft(white)
        f = torch.arange(spec.numel(), dtype=torch.float32).clamp_min(1.0)
        return torch.fft.irfft(spec / f.sqrt(), n=n)

    def augment_one(self, wav: Tensor) -> Tensor:
        """One utterance ``(S,)``, degraded."""
        sr = self.sample_rate
        n = wav.numel()
        if n < 16:
            return wav
        out = wav
        if self.shift_prob > 0 and torch.rand(()) < self.shift_prob:
            out = time_shift(out, int(round(self._uniform(-self.shift_ms, self.shift_ms) * sr / 1000)))
        if torch.rand(()) < self.reverb_prob:
            rir = synthetic_rir(sr, self._uniform(*self.rt60))
            from torchaudio.functional import fftconvolve

            out = fftconvolve(out, rir)[:n]
        if torch.rand(()) < self.band_prob:
            if torch.rand(()) < 0.5:
                out = band_filter(out, sr, 300.0, min(3400.0, sr / 2 - 60))
            else:
                out = band_filter(out, sr, 0.0, min(self._uniform(3000.0, 7000.0), sr / 2 - 60))
        if torch.rand(()) < self.eq_prob:
            out = _tilt(out, sr, self._uniform(-self.eq_db, self.eq_db), self._uniform(-self.eq_db, self.eq_db),
                        self._uniform(500.0, 3000.0))
        if torch.rand(()) < self.noise_prob:
            noise = self._noise_like(n)
            p_sig = out.pow(2).mean().clamp_min(1e-10)
            p_noise = noise.pow(2).mean().clamp_min(1e-10)
            snr = self._uniform(*self.snr_db)
            out = out + noise * torch.sqrt(p_sig / (p_noise * 10 ** (snr / 10)))
        if torch.rand(()) < self.gain_prob:
            out = out * 10 ** (self._uniform(*self.gain_db) / 20)
        peak = out.abs().max()
        if peak > 1.0:  # a real microphone clips; keep the waveform in range instead
            out = out / peak
        if torch.rand(()) < self.codec_prob:
            mu = 255.0
            q = torch.sign(out) * torch.log1p(mu * out.abs().clamp(max=1.0)) / math.log1p(mu)
            q = torch.round((q + 1) / 2 * mu) / mu * 2 - 1
            out = torch.sign(q) * ((1 + mu) ** q.abs() - 1) / mu
        if torch.rand(()) < self.dc_prob:
            out = out + self._uniform(-self.dc, self.dc)
        return out

    @torch.no_grad()
    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return waveforms, lengths
        out = waveforms.clone()
        for b, n in enumerate(lengths.tolist()):
            out[b, :n] = self.augment_one(waveforms[b, :n].float().cpu()).to(out)
            out[b, n:] = 0.0
        return out, lengths


def degrade(wav: Tensor, sr: int, kind: str, *, snr: float = 10.0, rt60: float = 0.5,
            noise: list[Tensor] | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One waveform ``(S,)`` degraded for evaluation (deterministic for ``generator``).

    ``noise``: a clip of ``noise`` (or white noise without one) mixed at ``snr`` dB; ``codec``: a telephone
    channel (300-3400 Hz, 8 kHz, 8-bit mu-law, back to ``sr``); ``reverb``: a simulated room of ``rt60`` s.
    """
    import torchaudio.functional as AF

    def resample(x: Tensor, a: int, b: int) -> Tensor:
        g = math.gcd(a, b)
        return AF.resample(x, a // g, b // g)

    if kind == "noise":
        noise = noise or [torch.randn(sr, generator=generator)]
        clip = noise[int(torch.randint(len(noise), (), generator=generator))]
        n = wav.numel()
        reps = n // clip.numel() + 1
        clip = clip.repeat(reps)
        start = int(torch.randint(clip.numel() - n + 1, (), generator=generator))
        seg = clip[start:start + n]
        scale = torch.sqrt(wav.pow(2).mean().clamp_min(1e-10) / (seg.pow(2).mean().clamp_min(1e-10) * 10 ** (snr / 10)))
        out = wav + seg * scale
    elif kind == "codec":
        band = band_filter(wav, sr, 300.0, 3400.0)
        narrow = resample(band, sr, 8000)
        aug = WaveformAugment(sample_rate=8000, noise_prob=0, reverb_prob=0, band_prob=0, eq_prob=0, codec_prob=1,
                              gain_prob=0, dc_prob=0)
        out = resample(aug.augment_one(narrow), 8000, sr)[: wav.numel()]
    elif kind == "reverb":
        rir = synthetic_rir(sr, rt60, generator)
        out = AF.fftconvolve(wav, rir)[: wav.numel()]
    else:
        raise ValueError(f"degradation must be noise, codec or reverb, got {kind!r}")
    peak = out.abs().max()
    return out / peak * 0.99 if peak > 0.99 else out
