"""Sequence autoencoder and pooling: padding never matters, embeddings are fixed-size and deterministic in eval."""

import pytest
import torch

from modules.autoencoder import RecurrentDecoder, SequenceAutoencoder, corrupt_features, masked_mse
from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend
from modules.heads import SequenceClassifier, SequencePooling


def _autoencoder(embedding_size=12, pooling="last", bidirectional=True):
    torch.manual_seed(0)
    fe = LogMelFrontend(sample_rate=8000, n_mels=16, spec_augment=False)
    enc = RecurrentEncoder(input_size=16, hidden_size=10, num_layers=2, bidirectional=bidirectional)
    return SequenceAutoencoder(frontend=fe, encoder=enc, embedding_size=embedding_size, pooling=pooling,
                               decoder_hidden_size=14)


def test_masked_mse_ignores_whatever_the_padding_holds():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 2])
    loss = masked_mse(pred, target, lengths)
    pred2, target2 = pred.clone(), target.clone()
    pred2[1, 2:] = 1e3  # garbage in the padding of row 1
    target2[1, 2:] = -7.0
    assert torch.allclose(masked_mse(pred2, target2, lengths), loss)
    by_hand = (((pred[0] - target[0]) ** 2).sum() + ((pred[1, :2] - target[1, :2]) ** 2).sum()) / (8 * 3)
    assert torch.allclose(loss, by_hand)


@pytest.mark.parametrize("mode", ["last", "mean", "max", "attention"])
def test_pooling_row_alone_equals_row_in_padded_batch(mode):
    torch.manual_seed(0)
    pool = SequencePooling(6, mode, bidirectional=True)
    x = torch.randn(2, 5, 6)
    lengths = torch.tensor([5, 3])
    x[1, 3:] = 100.0  # padding must not leak into any mode
    batch = pool(x, lengths)
    alone = pool(x[1:, :3], torch.tensor([3]))
    assert batch.shape == (2, 6)
    assert torch.allclose(batch[1], alone[0], atol=1e-6)


def test_last_pooling_takes_forward_end_and_backward_start():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    out = SequencePooling(4, "last", bidirectional=True)(x, torch.tensor([4, 2]))
    assert out[1].tolist() == [x[1, 1, 0].item(), x[1, 1, 1].item(), x[1, 0, 2].item(), x[1, 0, 3].item()]
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequencePooling(4, "sum")


def test_embedding_size_determinism_and_padding_invariance_in_eval():
    model = _autoencoder(embedding_size=12).eval()
    torch.manual_seed(1)
    wavs = torch.randn(3, 4000) * 0.1
    lengths = torch.tensor([4000, 2500, 1200])
    feats = torch.randn(3, 20, 16)
    frames = torch.tensor([20, 13, 7])
    feats[2, 7:] = 0
    with torch.no_grad():
        z1, z2 = model.embed(wavs, lengths), model.embed(wavs, lengths)
        # Past the frontend (whose edge frames see the padding), the encoder, pooling and projection are exact.
        batch = model.encode_features(feats, frames)
        alone = model.encode_features(feats[2:, :7], frames[2:])
    assert z1.shape == (3, 12)
    assert torch.equal(z1, z2)
    assert torch.allclose(batch[2], alone[0], atol=1e-5)


def test_forward_reconstruction_shapes_zero_padding_and_reverse_alignment():
    model = _autoencoder().eval()
    wavs, lengths = torch.randn(2, 3000) * 0.1, torch.tensor([3000, 1600])
    out = model(wavs, lengths)
    frames = out["frames"]
    assert out["reconstruction"].shape == out["features"].shape == (2, int(frames.max()), 16)
    assert out["reconstruction"][1, int(frames[1]):].abs().sum() == 0
    # reverse_target: decoder step 0 is the segment's LAST frame
    z = out["embedding"]
    raw = model.decoder(z, int(frames.max()))
    assert torch.allclose(out["reconstruction"][1, int(frames[1]) - 1], raw[1, 0], atol=1e-6)


def test_autoencoder_rejects_spec_augment_frontend_and_size_mismatch():
    enc = RecurrentEncoder(input_size=16, hidden_size=4, num_layers=1)
    with pytest.raises(ValueError, match="spec_augment=False"):
        SequenceAutoencoder(frontend=LogMelFrontend(sample_rate=8000, n_mels=16, spec_augment=True), encoder=enc)
    with pytest.raises(ValueError, match=r"input_size \(16\) must equal the frontend output size \(n_mels \* stack_frames = 20\)"):
        SequenceAutoencoder(frontend=LogMelFrontend(sample_rate=8000, n_mels=20, spec_augment=False), encoder=enc)


def test_corruption_changes_valid_frames_only_and_is_identity_when_off():
    torch.manual_seed(0)
    feats, lengths = torch.randn(2, 10, 8), torch.tensor([10, 6])
    feats[1, 6:] = 0
    assert torch.equal(corrupt_features(feats, lengths), feats)
    noisy = corrupt_features(feats, lengths, noise_std=0.5, frame_drop=0.3, time_masks=1, freq_masks=1)
    assert noisy[1, 6:].abs().sum() == 0
    assert not torch.allclose(noisy[:, :6], feats[:, :6])
    dropped = corrupt_features(feats, lengths, frame_drop=0.999)
    assert dropped.abs().sum() < feats.abs().sum() * 0.1


def test_decoder_unrolls_from_the_vector_alone():
    dec = RecurrentDecoder(embedding_size=5, output_size=3, hidden_size=7, num_layers=2, cell="gru")
    assert dec(torch.randn(4, 5), 9).shape == (4, 9, 3)


def test_classifier_logits_shape_and_checks():
    fe = LogMelFrontend(sample_rate=8000, n_mels=16, spec_augment=False)
    enc = RecurrentEncoder(input_size=16, hidden_size=6, num_layers=1)
    clf = SequenceClassifier(frontend=fe, encoder=enc, num_classes=10, pooling="attention").eval()
    assert clf(torch.randn(2, 2000), torch.tensor([2000, 900])).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 2 classes"):
        SequenceClassifier(frontend=fe, encoder=enc, num_classes=1)
