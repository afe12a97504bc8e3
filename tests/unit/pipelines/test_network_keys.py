"""The LAS, G2P and slot-tagging layers moved into network classes (``model.*``): state dicts with the old weight
names load everywhere, with the same outputs, the same parameter order and a resumable optimiser state."""

from pathlib import Path

import lightning as L
import pytest
import torch

from data.g2p import G2PVocab
from data.text import CharTokenizer
from pipelines.base import load_matching_weights, load_module
from pipelines.commands.pack import compact_checkpoint
from pipelines.seq2seq import G2PModel, LASRecognizer
from pipelines.slot_filling import SlotFillingModule
from pipelines.training.averaging import average_checkpoints
from tests.fixtures.checkpoints import save_checkpoint

FLAT = Path(__file__).resolve().parents[2] / "fixtures" / "flat_checkpoints"
G2P_VOCAB = G2PVocab(["<pad>", *"abcdefgh"], ["AA", "B", "K", "T"]).to_dict()


def _las(seed: int) -> LASRecognizer:
    torch.manual_seed(seed)
    return LASRecognizer(vocab=CharTokenizer().to_dict(), frontend={"n_mels": 12, "stack_frames": 2},
                         encoder={"hidden_size": 6, "num_layers": 2, "pyramid_layers": 1}, attention_size=4,
                         embed_size=5, speller_hidden=7, dropout=0.0).eval()


def _g2p(seed: int) -> G2PModel:
    torch.manual_seed(seed)
    return G2PModel(vocab=G2P_VOCAB, embed_size=5, encoder={"hidden_size": 6, "cell": "gru"}, speller_hidden=7,
                    attention_size=4, dropout=0.0, label_smoothing=0.0).eval()


def _slots(seed: int) -> SlotFillingModule:
    torch.manual_seed(seed)
    vocab = {"words": {"itos": ["<pad>", "<unk>", "fly", "to", "boston"]}, "tags": ["O", "B-to", "I-to"],
             "intents": ["flight", "fare"]}
    return SlotFillingModule(vocab=vocab, embedding_dim=4, encoder={"hidden_size": 3, "cell": "jordan"},
                             char_features="cnn", char_dim=3, char_channels=2, joint="slot_gated", crf=True,
                             intent_pooling="attention").eval()


BUILD = {"las": _las, "g2p": _g2p, "slots": _slots}


def _old_names(state: dict, cls) -> dict:
    """``state`` under the names the code before the network classes gave its weights."""
    back = {new: old for old, new in cls.legacy_state_prefixes.items()}
    return {next((back[p] + k[len(p):] for p in back if k.startswith(p)), k): v for k, v in state.items()}


def _outputs(name: str, model) -> list[torch.Tensor]:
    with torch.no_grad():
        if name == "slots":
            return list(model(torch.tensor([[2, 3, 4], [2, 4, 0]]), torch.tensor([3, 2]),
                              [["fly", "to", "boston"], ["fly", "boston"]]))
        if name == "g2p":
            batch = {"inputs": torch.tensor([[3, 1, 8], [2, 5, 0]]), "input_lengths": torch.tensor([3, 2])}
        else:
            g = torch.Generator().manual_seed(1)
            batch = {"waveforms": 0.1 * torch.randn(2, 6000, generator=g), "lengths": torch.tensor([6000, 4000])}
        memory, lengths = model.encode(batch)
        logits, _ = model.model.speller(memory, lengths, torch.tensor([[1, 2], [3, 1]]), torch.tensor([2, 1]))
        ctc = model._ctc(memory, lengths)
        return [memory, logits] + ([ctc[0]] if ctc is not None else [])


@pytest.mark.parametrize("name", ["las", "g2p", "slots"])
def test_a_state_dict_with_the_old_names_loads_with_the_same_outputs(name, tmp_path):
    model, other = BUILD[name](0), BUILD[name](1)
    old = _old_names(model.state_dict(), type(model))
    assert not any(k.startswith("model.") for k in old)  # every layer had an old name
    assert type(model).upgrade_state_dict(old).keys() == model.state_dict().keys()
    other.load_state_dict(old)  # strict: no weight missing or left over
    for got, want in zip(_outputs(name, other), _outputs(name, model), strict=True):
        assert torch.equal(got, want)
    # A file with the old names loads through Lightning, and init_from copies every tensor of it.
    path = Path(save_checkpoint(model, tmp_path / "new.ckpt"))
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = old
    torch.save(ckpt, tmp_path / "old.ckpt")
    for got, want in zip(_outputs(name, load_module(tmp_path / "old.ckpt")), _outputs(name, model), strict=True):
        assert torch.equal(got, want)
    fresh = BUILD[name](2)
    assert load_matching_weights(fresh, tmp_path / "old.ckpt") == (len(old), [])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_upgrading_renames_only_old_weights():
    cls = LASRecognizer
    assert cls.upgrade_state_dict({"listener.layers.0.0.bias_ih_l0": 1, "speller.output.bias": 2, "other.x": 3}) == {
        "model.encoder.layers.0.0.bias_ih_l0": 1, "model.speller.output.bias": 2, "other.x": 3}
    current = {"model.encoder.x": 1, "model.frontend.y": 2}
    assert cls.upgrade_state_dict(current) == current
    # A name already present at the new place is not overwritten by an old one.
    assert cls.upgrade_state_dict({"speller.w": 1, "model.speller.w": 2}) == {"speller.w": 1, "model.speller.w": 2}


@pytest.mark.parametrize("name", ["las", "g2p", "slots"])
def test_parameters_keep_the_order_of_the_old_checkpoints(name):
    # An optimiser's state is saved by parameter position: the old files' weights, in the order the old code
    # registered them, must be the network's parameters in the same order.
    saved = torch.load(FLAT / f"{name}.ckpt", weights_only=True)["state_dict"]
    model = load_module(FLAT / f"{name}.ckpt")
    params = [n for n, _ in model.named_parameters()]
    renamed = [k for k in type(model).upgrade_state_dict(saved) if k in set(params)]
    assert renamed == params and len(params) > 10


def _g2p_batches() -> list[dict]:
    inputs = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 7, 8]])
    return [{"ids": ["abc", "de", "fgh"], "inputs": inputs, "input_lengths": torch.tensor([3, 2, 3]),
             "targets": torch.tensor([[0, 1, 2], [3, 0, 0], [1, 1, 3]]), "target_lengths": torch.tensor([3, 1, 3])}]


def _fit(model, steps: int, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1, limit_val_batches=0)
    loader = torch.utils.data.DataLoader(_g2p_batches(), batch_size=None)
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def test_a_training_checkpoint_with_the_old_names_resumes_with_its_optimiser_state(tmp_path):
    straight = _g2p(0).train()
    _fit(straight, 4)
    first = _g2p(0).train()
    _fit(first, 2).save_checkpoint(tmp_path / "two.ckpt")
    ckpt = torch.load(tmp_path / "two.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["state"]  # Adam's moments, by parameter position
    ckpt["state_dict"] = _old_names(ckpt["state_dict"], G2PModel)
    torch.save(ckpt, tmp_path / "old.ckpt")
    resumed = _g2p(5).train()
    _fit(resumed, 4, ckpt_path=tmp_path / "old.ckpt")
    for (k, got), want in zip(resumed.state_dict().items(), straight.state_dict().values(), strict=True):
        assert torch.allclose(got, want, atol=1e-6), k  # the same as four steps without a stop


def test_averaging_and_packing_read_old_names(tmp_path):
    model = _g2p(0)
    new = Path(save_checkpoint(model, tmp_path / "new.ckpt"))
    ckpt = torch.load(new, weights_only=True)
    ckpt["state_dict"] = _old_names({k: v * 3 for k, v in ckpt["state_dict"].items()}, G2PModel)
    torch.save(ckpt, tmp_path / "old.ckpt")
    averaged = average_checkpoints([tmp_path / "old.ckpt", new], tmp_path / "avg.ckpt")["state_dict"]
    assert averaged.keys() == model.state_dict().keys()
    assert all(torch.allclose(averaged[k], 2 * v) for k, v in model.state_dict().items())
    packed = compact_checkpoint(tmp_path / "old.ckpt", {n for n, _ in model.named_parameters()})["state_dict"]
    assert packed.keys() == model.state_dict().keys()
    assert {packed[n].dtype for n, _ in model.named_parameters()} == {torch.float16}
