"""The LAS, G2P and slot-tagging networks built on their own from nested options, without a LightningModule."""

import pytest
import torch

from modules.networks import build_encoder
from modules.seq2seq import G2PNetwork, LASNetwork
from modules.tagging import SlotTagger

SPELLER = {"embed_size": 6, "hidden_size": 10, "attention": "location", "attention_size": 4}


def test_las_network_from_options_encodes_spells_and_has_a_ctc_head():
    torch.manual_seed(0)
    net = LASNetwork.from_options(frontend={"n_mels": 12, "stack_frames": 2},
                                  encoder={"hidden_size": 7, "num_layers": 3, "pyramid_layers": 2},
                                  vocab_size=9, speller=SPELLER, blank=0).eval()
    assert net.time_reduction == 2 * 2 ** 2 and net.encoder.output_size == 14
    waves, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    memory, frames = net.encode(waves, lengths)
    assert memory.shape == (2, int(frames.max()), 14) and frames.tolist() == [7, 4]
    targets, target_lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    logits, weights = net(waves, lengths, targets, target_lengths)
    assert logits.shape == (2, 4, 10) and weights.shape == (2, 4, 7)  # vocabulary + <eos>; frames attended
    assert torch.isinf(logits[..., 0]).all()  # the blank is never spelled
    assert net.ctc_head(memory).shape == (2, 7, 9)
    no_ctc = LASNetwork.from_options(frontend={"n_mels": 12}, encoder={"hidden_size": 4}, vocab_size=9,
                                     speller=SPELLER, ctc_head=False)
    assert no_ctc.ctc_head is None and not any("ctc" in k for k in no_ctc.state_dict())


def test_g2p_network_from_options_reads_letters():
    torch.manual_seed(0)
    net = G2PNetwork.from_options(encoder={"hidden_size": 5, "num_layers": 2, "cell": "gru"}, embed_size=6,
                                  num_graphemes=12, num_phonemes=7,
                                  speller={"hidden_size": 8, "attention": "additive", "attention_size": 4})
    assert net.ctc_head is None and net.speller.embedding.embedding_dim == 6
    inputs, lengths = torch.tensor([[3, 1, 4, 1], [5, 9, 0, 0]]), torch.tensor([4, 2])
    memory, out_lengths = net.encode(inputs, lengths)
    assert memory.shape == (2, 4, 10) and out_lengths.tolist() == [4, 2]
    assert memory[1, 2:].abs().sum() == 0  # nothing past a word's letters
    logits, _ = net(inputs, lengths, torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))
    assert logits.shape == (2, 3, 8)
    with pytest.raises(ValueError, match=r"encoder input_size \(5\) must equal embed_size \(6\)"):
        G2PNetwork(encoder=build_encoder({"hidden_size": 3}, input_size=5), embed_size=6, num_graphemes=12,
                   num_phonemes=7, speller={})


@pytest.mark.parametrize("joint", ["pooled", "attention", "slot_gated"])
def test_slot_tagger_from_options_sizes_its_encoder_input(joint):
    torch.manual_seed(0)
    tags = ["O", "B-x", "I-x"]
    net = SlotTagger.from_options(encoder={"hidden_size": 5, "cell": "elman"}, vocab_size=10, tags=tags,
                                  num_intents=4, embedding_dim=6, context_window=1, num_chars=8, char_channels=3,
                                  char_dim=4, joint=joint, crf=True).eval()
    assert net.encoder.input_size == (6 + 3) * 3 == SlotTagger.encoder_input_size(
        embedding_dim=6, context_window=1, num_chars=8, char_channels=3)
    tokens, lengths = torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2])
    chars = torch.randint(1, 8, (2, 3, 5))
    tag_logits, intent_logits = net(tokens, lengths, chars)
    assert tag_logits.shape == (2, 3, 3) and intent_logits.shape == (2, 4)
    paths = net.decode_tags(tag_logits, lengths)
    assert [len(p) for p in paths] == [3, 2] and all(tags[p[0]] != "I-x" for p in paths)  # BIO: never I- first
    gold = torch.tensor([[0, 1, 2], [1, 0, -100]])
    assert net.tag_loss(tag_logits, gold, lengths).item() > 0
    with pytest.raises(ValueError, match="give chars"):
        net(tokens, lengths)


def test_slot_tagger_checks_its_encoder_and_options():
    enc = build_encoder({"hidden_size": 4}, input_size=7)
    with pytest.raises(ValueError, match=r"encoder input_size \(7\) must be 18"):
        SlotTagger(encoder=enc, vocab_size=5, tags=["O"], num_intents=1, embedding_dim=6, context_window=1)
    with pytest.raises(ValueError, match="context_window must be >= 0"):
        SlotTagger(encoder=enc, vocab_size=5, tags=["O"], num_intents=1, embedding_dim=7, context_window=-1)
    plain = SlotTagger(encoder=enc, vocab_size=5, tags=["O", "B-x"], num_intents=0, embedding_dim=7)
    assert plain.char_cnn is None and plain.crf is None and plain.intent_head.out_features == 1
    logits, _ = plain(torch.tensor([[1, 2]]), torch.tensor([2]))
    # Without a CRF the loss is the per-word softmax cross-entropy.
    gold = torch.tensor([[1, 0]])
    want = torch.nn.functional.cross_entropy(logits[0], gold[0])
    assert plain.tag_loss(logits, gold, torch.tensor([2])).item() == pytest.approx(want.item())
