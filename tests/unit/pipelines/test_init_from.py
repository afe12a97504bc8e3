"""Fine-tuning start: ``init_from`` copies matching tensors and names the ones it leaves alone."""

import pytest
import torch

from data.text import CharTokenizer
from pipelines.base import load_matching_weights
from pipelines.ctc import CTCSpeechRecognizer


def _model(vocab, seed):
    torch.manual_seed(seed)
    return CTCSpeechRecognizer(vocab=vocab, n_mels=16, hidden_size=8, num_layers=1, stack_frames=2)


def test_init_from_copies_matching_tensors_and_keeps_the_rest(tmp_path):
    vocab = CharTokenizer().to_dict()
    src = _model(vocab, 0)
    path = tmp_path / "src.ckpt"
    torch.save({"state_dict": src.state_dict()}, path)

    same = _model(vocab, 1)
    copied, kept = load_matching_weights(same, path)
    assert kept == [] and copied == len(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(same.state_dict()[k], v)

    # A smaller output vocabulary: the head stays fresh, everything else is copied.
    small = CharTokenizer("abcdefgh").to_dict()
    other = _model(small, 2)
    head_before = {k: v.clone() for k, v in other.state_dict().items()}
    copied, kept = load_matching_weights(other, path)
    assert kept and all("head" in k or "out" in k for k in kept)
    for k in kept:
        assert torch.equal(other.state_dict()[k], head_before[k])
    assert copied == len(src.state_dict()) - len(kept)


def test_init_from_setup_only_for_fit_and_clear_errors(tmp_path):
    vocab = CharTokenizer().to_dict()
    src = _model(vocab, 0)
    path = tmp_path / "src.ckpt"
    torch.save({"state_dict": src.state_dict()}, path)
    m = CTCSpeechRecognizer(vocab=vocab, n_mels=16, hidden_size=8, num_layers=1, stack_frames=2, init_from=str(path))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.setup("test")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    m.setup("fit")
    assert all(torch.equal(src.state_dict()[k], v) for k, v in m.state_dict().items())

    with pytest.raises(ValueError, match="init_from: checkpoint not found"):  # one line, fit exits 2
        load_matching_weights(m, tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        load_matching_weights(m, tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"x": torch.zeros(3)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="shares no parameter"):
        load_matching_weights(m, tmp_path / "other.ckpt")
