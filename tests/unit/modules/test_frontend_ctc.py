"""Frontend shapes/lengths/normalisation/SpecAugment, and the CTC head + loss on hand-checked cases."""

import math

import pytest
import torch

from modules.ctc import CTCAcousticModel, ctc_loss_checked, min_ctc_frames, min_ctc_frames_padded
from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend, frames_for


def test_frontend_shapes_and_lengths():
    fe = LogMelFrontend(sample_rate=16000, n_mels=40, stack_frames=1).eval()
    lengths = torch.tensor([16000, 8000, 161])
    wav = torch.randn(3, 16000) * 0.1
    feats, out_len = fe(wav, lengths)
    # 10 ms hop, centred frames: S // 160 + 1
    assert out_len.tolist() == [101, 51, 2]
    assert feats.shape == (3, 101, 40)
    assert (feats[1, 51:] == 0).all() and (feats[2, 2:] == 0).all()
    assert fe.output_lengths(lengths).tolist() == out_len.tolist()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_frame_stacking_subsamples(k):
    fe = LogMelFrontend(n_mels=20, stack_frames=k).eval()
    lengths = torch.tensor([16000, 4000])
    feats, out_len = fe(torch.randn(2, 16000), lengths)
    assert feats.shape == (2, math.ceil(101 / k), 20 * k)
    assert out_len.tolist() == [math.ceil(101 / k), math.ceil(26 / k)]
    assert fe.output_lengths(lengths).tolist() == out_len.tolist()
    assert fe.frame_rate == pytest.approx(100 / k)


def test_utterance_normalisation_over_valid_frames():
    fe = LogMelFrontend(n_mels=20, spec_augment=False).eval()
    feats, out_len = fe(torch.randn(2, 16000), torch.tensor([16000, 9600]))
    for b, n in enumerate(out_len.tolist()):
        valid = feats[b, :n]
        assert valid.mean(0).abs().max() < 1e-4
        assert (valid.std(0, unbiased=False) - 1).abs().max() < 1e-2


def test_spec_augment_only_in_training_and_masks_something():
    torch.manual_seed(0)
    fe = LogMelFrontend(n_mels=40, freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_width=20)
    wav, lengths = torch.randn(4, 32000), torch.full((4,), 32000)
    fe.eval()
    clean, _ = fe(wav, lengths)
    clean2, _ = fe(wav, lengths)
    assert torch.equal(clean, clean2)  # deterministic in eval
    fe.train()
    aug, _ = fe(wav, lengths)
    zeroed = (aug == 0) & (clean != 0)
    assert zeroed.any()
    assert zeroed.float().mean() < 0.6


def test_bad_frontend_args():
    with pytest.raises(ValueError, match="stack_frames"):
        LogMelFrontend(stack_frames=0)


def test_ctc_model_shapes_and_dimension_check():
    fe = LogMelFrontend(n_mels=20, stack_frames=2)
    enc = RecurrentEncoder(input_size=40, hidden_size=8, num_layers=1)
    model = CTCAcousticModel(frontend=fe, encoder=enc, vocab_size=29).eval()
    lp, lengths = model(torch.randn(2, 8000), torch.tensor([8000, 4000]))
    assert lp.shape == (2, 26, 29) and lengths.tolist() == [26, 13]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 26), atol=1e-5)
    assert model.output_lengths(torch.tensor([8000, 4000])).tolist() == [26, 13]
    with pytest.raises(ValueError, match=r"input_size \(30\).*\(n_mels \* stack_frames = 40\)"):
        CTCAcousticModel(frontend=fe, encoder=RecurrentEncoder(input_size=30, hidden_size=8), vocab_size=5)


def test_ctc_loss_hand_checked_single_frame():
    # One frame, target [1]: the only alignment emits token 1, so loss = -log p(1) (divided by target length 1).
    probs = torch.tensor([[[0.2, 0.7, 0.1]]])
    loss, ok = ctc_loss_checked(probs.log(), torch.tensor([1]), torch.tensor([[1]]), torch.tensor([1]))
    assert ok.tolist() == [True]
    assert loss.item() == pytest.approx(-math.log(0.7), rel=1e-5)


def test_ctc_loss_hand_checked_two_frames():
    # Two frames, target [1]: alignments (1,1), (1,b), (b,1) -> p = .7*.7 + .7*.2 + .2*.7 = 0.77
    probs = torch.tensor([[[0.2, 0.7, 0.1], [0.2, 0.7, 0.1]]])
    loss, _ = ctc_loss_checked(probs.log(), torch.tensor([2]), torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.77), rel=1e-5)


def test_unalignable_rows_are_excluded_and_reported():
    lp = torch.randn(3, 4, 5).log_softmax(-1)
    targets = torch.tensor([[1, 2, 0, 0, 0], [1, 1, 1, 1, 0], [1, 2, 3, 4, 1]])
    target_lengths = torch.tensor([2, 4, 5])
    need = min_ctc_frames([t[:n] for t, n in zip(targets, target_lengths, strict=True)])
    assert need.tolist() == [2, 7, 5]  # repeats need a blank between them
    loss, ok = ctc_loss_checked(lp, torch.tensor([4, 4, 4]), targets, target_lengths, min_frames=need)
    assert ok.tolist() == [True, False, False]
    assert torch.isfinite(loss)
    alone, _ = ctc_loss_checked(lp[:1], torch.tensor([4]), targets[:1], target_lengths[:1])
    assert loss.item() == pytest.approx(alone.item())
    none, ok = ctc_loss_checked(lp[1:], torch.tensor([4, 4]), targets[1:], target_lengths[1:], min_frames=need[1:])
    assert not ok.any() and none.item() == 0.0


def test_min_ctc_frames_padded_matches_the_per_row_count():
    # Repeats straddling the length (the padding repeats the last token) must not count.
    targets = torch.tensor([[1, 2, 0, 0, 0], [1, 1, 1, 1, 0], [1, 2, 3, 4, 1], [3, 3, 3, 3, 3], [5, 0, 0, 0, 0]])
    target_lengths = torch.tensor([2, 4, 5, 2, 1])
    assert min_ctc_frames_padded(targets, target_lengths).tolist() == [2, 7, 5, 3, 1]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        t = torch.randint(1, 3, (6, 9), generator=g)
        n = torch.randint(1, 10, (6,), generator=g)
        ref = min_ctc_frames([row[:k] for row, k in zip(t, n, strict=True)])
        assert torch.equal(min_ctc_frames_padded(t, n), ref)
    assert min_ctc_frames_padded(torch.tensor([[4], [2]]), torch.tensor([1, 1])).tolist() == [1, 1]


def test_ctc_loss_is_float32_under_bf16_input():
    lp = torch.randn(2, 6, 5).log_softmax(-1)
    targets, tl, ol = torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]), torch.tensor([6, 5])
    ref, _ = ctc_loss_checked(lp, ol, targets, tl)
    low, _ = ctc_loss_checked(lp.bfloat16(), ol, targets, tl)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=2e-2)


def test_speed_perturbation_changes_lengths_by_the_factor_and_only_in_training():
    torch.manual_seed(0)
    fe = LogMelFrontend(n_mels=20, spec_augment=False, speed_perturb=(1.25,))
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * math.pi * 400 * t)
    wav = torch.stack([tone, torch.cat([tone[:8000], torch.zeros(8000)])])
    lengths = torch.tensor([16000, 8000])
    out, new_len = fe._speed_perturb(wav, lengths)
    assert new_len.tolist() == [12800, 6400]
    assert out.shape == (2, 12800) and (out[1, 6400:] == 0).all()
    # Playing 1.25x faster raises a 400 Hz tone to 500 Hz.
    spectrum = torch.fft.rfft(out[0]).abs()
    assert int(spectrum.argmax()) * 16000 / 12800 == pytest.approx(500, abs=2)
    feats, frames = fe(wav, lengths)
    assert frames.tolist() == [12800 // 160 + 1, 6400 // 160 + 1]
    fe.eval()
    assert fe(wav, lengths)[1].tolist() == [101, 51]


def test_speed_perturbation_mixes_factors_within_a_batch():
    torch.manual_seed(1)
    fe = LogMelFrontend(n_mels=20, speed_perturb=(0.9, 1.0, 1.1))
    wav, lengths = torch.randn(32, 16000), torch.full((32,), 16000)
    _, new_len = fe._speed_perturb(wav, lengths)
    assert set(new_len.tolist()) == {17778, 16000, 14545}
    with pytest.raises(ValueError, match="speed_perturb"):
        LogMelFrontend(speed_perturb=(3.0,))


def test_global_normalisation_learns_training_statistics_of_valid_frames_only():
    torch.manual_seed(0)
    fe = LogMelFrontend(n_mels=20, spec_augment=False, normalize="global")
    wav = torch.randn(3, 16000) * torch.tensor([[0.5], [0.1], [0.02]])
    lengths = torch.tensor([16000, 8000, 4000])
    wav[1, 8000:] = 0.0
    wav[2, 4000:] = 0.0
    fe.eval()
    before = fe(wav, lengths)[0].clone()
    assert fe.feat_frames.item() == 0  # evaluation never updates the statistics
    fe.train()
    for _ in range(3):
        fe(wav, lengths)
    fe.eval()
    # The statistics equal those of the valid log-mel frames (padding excluded), pooled over the batch.
    with torch.no_grad():
        logmel = fe.melspec(wav).clamp_min(1e-10).log().transpose(1, 2)
    frames = torch.cat([logmel[b, : int(n)] for b, n in enumerate(frames_for(lengths, fe.hop_length))])
    assert fe.feat_frames.item() == 3 * frames.size(0)
    torch.testing.assert_close(fe.feat_mean, frames.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fe.feat_var, frames.var(0, unbiased=False), rtol=1e-3, atol=1e-3)
    out, n = fe(wav, lengths)
    valid = torch.cat([out[b, : int(k)] for b, k in enumerate(n)])
    assert valid.mean().abs() < 0.05 and (valid.var(0).mean() - 1).abs() < 0.05
    assert not torch.equal(out, before)
    # Each frame is normalised on its own: a prefix of the audio gives the same first frames.
    head, _ = fe(wav[:1, :8000], torch.tensor([8000]))
    torch.testing.assert_close(head[0, :40], out[0, :40], rtol=1e-5, atol=1e-5)
