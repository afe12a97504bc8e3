"""Correspondence autoencoder (the decoder rebuilds the partner's frames) and the Siamese word embedder's weights
(named as the autoencoder's, so it starts from one)."""

import pytest
import torch

from modules.autoencoder import masked_mse
from pipelines.autoencoder import AudioAutoencoder
from pipelines.base import load_matching_weights
from pipelines.word_embedding import SiameseWordEmbedder
from tests.fixtures.checkpoints import save_checkpoint

SIZES = {"n_mels": 20, "stack_frames": 2, "hidden_size": 16, "num_layers": 1, "embedding_size": 8}


def _batch(gen, lengths, partner_lengths):
    wav = lambda n: torch.randn(len(n), max(n), generator=gen) * 0.1  # noqa: E731
    return {"ids": [f"u{i}" for i in range(len(lengths))], "waveforms": wav(lengths),
            "lengths": torch.tensor(lengths), "labels": torch.tensor([0, 1]),
            "partner_waveforms": wav(partner_lengths), "partner_lengths": torch.tensor(partner_lengths)}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_correspondence_loss_reconstructs_the_partners_frames():
    torch.manual_seed(0)
    model = AudioAutoencoder(target="same_word", decoder_hidden_size=16, plot_examples=0, **SIZES)
    batch = _batch(torch.Generator().manual_seed(0), [2000, 1600], [3200, 2400])
    out = model.model(batch["waveforms"], batch["lengths"], targets=(batch["partner_waveforms"],
                                                                      batch["partner_lengths"]))
    partner_feats, partner_frames = model.model.features(batch["partner_waveforms"], batch["partner_lengths"])
    _, own_frames = model.model.features(batch["waveforms"], batch["lengths"])
    assert out["reconstruction"].shape == partner_feats.shape == (2, int(partner_frames.max()), 40)
    assert out["frames"].tolist() == partner_frames.tolist() and partner_frames.tolist() != own_frames.tolist()
    assert torch.equal(out["features"], partner_feats)
    loss = model.training_step(batch, 0)
    assert loss.item() == pytest.approx(masked_mse(out["reconstruction"], partner_feats, partner_frames).item())
    # The plain autoencoder on the same batch rebuilds the input itself; a partner-less batch is refused.
    plain = AudioAutoencoder(decoder_hidden_size=16, plot_examples=0, **SIZES)
    plain.load_state_dict(model.state_dict())
    assert plain.training_step(batch, 0).item() != pytest.approx(loss.item())
    with pytest.raises(ValueError, match="pairs: true"):
        model.training_step({k: v for k, v in batch.items() if not k.startswith("partner")}, 0)


def test_siamese_embedder_starts_from_an_autoencoders_encoder(tmp_path):
    torch.manual_seed(0)
    ae = AudioAutoencoder(decoder_hidden_size=16, **SIZES)
    siamese = SiameseWordEmbedder(**SIZES)
    ae_state, own = ae.state_dict(), siamese.state_dict()
    assert set(own) <= set(ae_state) and all(own[k].shape == ae_state[k].shape for k in own)
    copied, kept = load_matching_weights(siamese, save_checkpoint(ae, tmp_path / "ae.ckpt"))
    assert copied == len(own) and kept == []
    wav = [torch.randn(1800) * 0.1, torch.randn(2500) * 0.1]
    assert torch.allclose(siamese.embed_waveforms(wav), ae.embed_waveforms(wav), atol=1e-6)
