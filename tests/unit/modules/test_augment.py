"""Waveform augmentation: each degradation does what it says (SNR, band, level), eval mode is the identity."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from data.errors import DataError
from data.noise import load_noise_clips
from modules.augment import WaveformAugment, synthetic_rir, time_shift

OFF = dict(noise_prob=0.0, reverb_prob=0.0, band_prob=0.0, eq_prob=0.0, codec_prob=0.0, gain_prob=0.0, dc_prob=0.0)


def _tone(n=16000, f=440.0):
    return 0.3 * torch.sin(2 * torch.pi * f * torch.arange(n) / 16000)


def test_eval_mode_and_all_off_are_the_identity():
    x = torch.stack([_tone(), _tone(f=200.0)])
    lengths = torch.tensor([16000, 9000])
    aug = WaveformAugment()
    assert torch.equal(aug.eval()(x, lengths)[0], x)
    y, n = WaveformAugment(**OFF).train()(x, lengths)
    assert torch.equal(n, lengths) and torch.allclose(y[0], x[0]) and torch.allclose(y[1, :9000], x[1, :9000])
    assert torch.all(y[1, 9000:] == 0)  # padding stays zero


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_noise_is_added_at_the_drawn_snr_from_the_bank(snr):
    aug = WaveformAugment(**{**OFF, "noise_prob": 1.0, "snr_db": (snr, snr)}).train()
    bank = torch.randn(3000)  # shorter than the utterance: tiled
    aug.set_noise([bank])
    x = 0.2 * _tone()  # quiet enough that the sum is never rescaled (peaks stay under full scale)
    y = aug.augment_one(x)
    noise = y - x
    measured = 10 * torch.log10(x.pow(2).mean() / noise.pow(2).mean())
    assert abs(float(measured) - snr) < 0.01
    # the added noise is a stretch of the bank's signal, scaled: each 3000-sample period repeats
    assert torch.allclose(noise[:13000], noise[3000:16000], atol=1e-5)


def test_band_limit_removes_the_high_band():
    aug = WaveformAugment(**{**OFF, "band_prob": 1.0}).train()
    torch.manual_seed(0)
    x = _tone(f=6000.0) + _tone(f=1000.0)
    y = aug.augment_one(x)  # telephone band or a low-pass at 3-7 kHz: 6 kHz is always cut at least partly
    spec = torch.fft.rfft(y).abs()
    assert spec[6000] < 0.5 * torch.fft.rfft(x).abs()[6000]


def test_gain_clipping_and_dc():
    aug = WaveformAugment(**{**OFF, "gain_prob": 1.0, "gain_db": (20.0, 20.0)}).train()
    y = aug.augment_one(_tone())
    assert float(y.abs().max()) == pytest.approx(1.0)  # 0.3 * 10 -> normalised back to full scale
    aug = WaveformAugment(**{**OFF, "dc_prob": 1.0, "dc": 0.05}).train()
    y = aug.augment_one(_tone())
    assert 0 < abs(float(y.mean())) <= 0.05


def test_reverb_spreads_energy_in_time():
    rir = synthetic_rir(16000, 0.5, torch.Generator().manual_seed(0))
    assert rir.numel() == 8000 and float(rir.norm()) == pytest.approx(1.0)
    aug = WaveformAugment(**{**OFF, "reverb_prob": 1.0, "rt60": (0.5, 0.5)}).train()
    x = torch.zeros(16000)
    x[:800] = _tone(800)
    y = aug.augment_one(x)
    assert y[2000:6000].abs().max() > 1e-3 and torch.isfinite(y).all()


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="noise_prob must lie in"):
        WaveformAugment(noise_prob=1.5)
    with pytest.raises(ValueError, match="ranges must be"):
        WaveformAugment(snr_db=(20.0, 5.0))
    with pytest.raises(ValueError, match="shift_ms must lie in"):
        WaveformAugment(shift_ms=-5.0)


def test_time_shift_moves_the_clip_and_keeps_its_length():
    x = torch.arange(1.0, 11.0)
    assert time_shift(x, 3).tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert time_shift(x, -2).tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 0, 0]
    assert torch.equal(time_shift(x, 0), x) and time_shift(x, 10).abs().sum() == 0
    # with every shift on, a 1 s click moves by at most shift_ms and never changes the length
    click = torch.zeros(16000)
    click[8000] = 1.0
    aug = WaveformAugment(**{**OFF, "shift_prob": 1.0, "shift_ms": 100.0}).train()
    moves = set()
    for _ in range(20):
        y, n = aug(click[None], torch.tensor([16000]))
        assert y.shape == (1, 16000) and int(n) == 16000 and float(y.sum()) == 1.0
        moves.add(int(y[0].argmax()) - 8000)
    assert max(abs(m) for m in moves) <= 1600 and len(moves) > 10


def test_noise_bank_reads_the_silence_clips_of_a_corpus(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    rows = []
    for i, label in enumerate(["yes", "silence", "silence", "no"]):
        sf.write(split / f"c{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(8000)).astype("float32"), 8000)
        rows.append({"file_name": f"c{i}.wav", "label": label})
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clips = load_noise_clips(str(tmp_path), sample_rate=16000)
    assert len(clips) == 2 and all(c.numel() == 16000 for c in clips)
    with pytest.raises(DataError, match="noise directory not found"):
        load_noise_clips(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no label='bird' clips"):
        load_noise_clips(str(tmp_path), label="bird")
