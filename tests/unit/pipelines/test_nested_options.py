"""The network's nested ``frontend``/``encoder`` options, and what came before them: shipped models, checkpoints,
configs, command lines and Python calls with the old flat names (``n_mels``, ``hidden_size``, ...) keep loading,
with the same weights and the same outputs."""

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

from data.text import CharTokenizer
from pipelines.base import load_module
from pipelines.cli.lightning import run
from pipelines.ctc import CTCSpeechRecognizer
from pipelines.inference import load_model, resolve_checkpoint

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FLAT = FIXTURES / "flat_checkpoints"


def _close(got, want, path="") -> None:
    """``got == want``, numbers within 1e-4 (relative) and 1e-5 (absolute)."""
    if isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5), f"{path}: {got} != {want}"
    elif isinstance(want, dict):
        assert sorted(got) == sorted(want), path
        for k in want:
            _close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def _wave(rate: int, seconds: float = 1.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    t = torch.arange(int(seconds * rate)) / rate
    noise = 0.02 * torch.randn(t.numel(), generator=g)
    return (0.2 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 1.5 * t) + noise).float()


def _stats(x: torch.Tensor) -> dict:
    x = x.detach().double().flatten()
    return {"sum": x.sum().item(), "abs_sum": x.abs().sum().item(), "head": x[:6].tolist()}


def _shipped_outputs(name: str, model) -> dict:
    """What tests/fixtures/shipped_outputs.json holds, computed the same way."""
    out = {"class": type(model).__name__}
    with torch.no_grad():
        if name == "snips":
            sents = ["play some jazz music by miles davis", "what is the weather in paris tomorrow"]
            out["tagged"] = model.tag_sentences(sents)
            toks = torch.tensor([model.words.encode(sents[0].split())])
            tags, intents = model(toks, torch.tensor([toks.size(1)]), [sents[0].split()])
            out["tag_logits"], out["intent_logits"] = _stats(tags), _stats(intents)
            return out
        w = _wave(model.sample_rate)
        y = model(w[None], torch.tensor([w.numel()]))
        if isinstance(y, tuple):
            out["log_probs"], out["lengths"] = _stats(y[0]), y[1].tolist()
            out["text"] = model.transcribe_waveforms([w, _wave(model.sample_rate, 0.7)])
        else:
            out["logits"] = _stats(y)
            out["labels"] = model.classify_waveforms([w, _wave(model.sample_rate, 0.7)])
    return out


FLAT_SHIPPED = ("english", "english-stream", "keywords", "snips")


@pytest.mark.parametrize("name", ["english", "english-stream", "keywords", "digits", "snips"])
def test_shipped_models_load_every_weight_and_give_the_same_outputs(name):
    # The shipped checkpoints written with the flat options load through the shim (their outputs were recorded
    # before the change); a model shipped since (nested options) loads as it is.
    saved = torch.load(resolve_checkpoint(name), weights_only=True, map_location="cpu")
    assert ("hidden_size" in saved["hyper_parameters"]) == (name in FLAT_SHIPPED)
    model = load_model(name)
    # Every weight loaded, under its name today (the slot tagger's layers moved into model.*).
    assert sorted(model.state_dict()) == sorted(type(model).upgrade_state_dict(saved["state_dict"]))
    assert not set(model.hparams) & set(type(model).legacy_options)
    _close(_shipped_outputs(name, model), json.loads((FIXTURES / "shipped_outputs.json").read_text())[name])


def _flat_outputs(name: str, m):
    """The outputs recorded in tests/fixtures/flat_checkpoints/outputs.json, computed the same way."""
    m.eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        if name == "slots":
            return m.tag_sentences(["fly to boston", "fly boston to boston"])
        if name == "g2p":
            mem, _ = m.encode({"inputs": torch.tensor([[3, 1, 20], [2, 5, 1]]), "input_lengths": torch.tensor([3, 3])})
            return [m.pronounce(["cat", "bead"]), mem.double().sum().item(), mem.double().abs().sum().item()]
        rate = m.sample_rate
        w = [torch.randn(int(0.9 * rate), generator=g) * 0.1, torch.randn(int(0.5 * rate), generator=g) * 0.1]
        if name in ("ctc", "rnnt", "las"):
            b = torch.nn.utils.rnn.pad_sequence(w, batch_first=True)
            n = torch.tensor([x.numel() for x in w])
            enc = (m.encode({"waveforms": b, "lengths": n})[0] if name == "las"
                   else m.model.encode(b, n)[0] if name == "rnnt" else m(b, n)[0])
            return [m.transcribe_waveforms(w), enc.double().sum().item(), enc.double().abs().sum().item()]
        if name == "classifier":
            return m.class_probabilities(w).tolist()
        return m.embed_waveforms(w).tolist()


@pytest.mark.parametrize("name", ["ctc", "rnnt", "classifier", "autoencoder", "siamese", "las", "g2p", "slots"])
def test_a_checkpoint_with_the_flat_options_loads_with_the_same_outputs(name):
    # Written by the code before the nested options (see the fixture's outputs.json), with non-default sizes,
    # cells, sample rates and frontends, so that a flat option read at the wrong place shows.
    ref = json.loads((FLAT / "outputs.json").read_text())[name]
    model = load_module(FLAT / f"{name}.ckpt")
    assert f"{type(model).__module__}.{type(model).__qualname__}" == ref["class"]
    assert sorted(model.state_dict()) == sorted(type(model).upgrade_state_dict(dict.fromkeys(ref["keys"])))
    assert not set(model.hparams) & set(type(model).legacy_options)
    _close(_flat_outputs(name, model), ref["outputs"])


def test_the_flat_checkpoints_hold_flat_options():
    hp = torch.load(FLAT / "las.ckpt", weights_only=True)["hyper_parameters"]
    assert {"listener_hidden", "listener_layers", "n_mels"} <= set(hp) and "encoder" not in hp


def test_flat_python_keywords_build_the_nested_model():
    vocab = CharTokenizer().to_dict()
    torch.manual_seed(0)
    flat = CTCSpeechRecognizer(vocab=vocab, n_mels=20, stack_frames=3, hidden_size=8, num_layers=2, cell="gru",
                               bidirectional=False, normalize="global")
    torch.manual_seed(0)
    nested = CTCSpeechRecognizer(vocab=vocab, frontend={"n_mels": 20, "stack_frames": 3, "normalize": "global"},
                                 encoder={"hidden_size": 8, "num_layers": 2, "cell": "gru", "bidirectional": False})
    assert dict(flat.hparams) == dict(nested.hparams)
    assert nested.hparams.frontend["n_mels"] == 20 and nested.hparams.frontend["sample_rate"] == 16000
    assert nested.hparams.encoder["dropout"] == 0.15  # null: the model's own dropout
    for (k, a), (_, b) in zip(flat.state_dict().items(), nested.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_a_wrong_nested_option_is_named():
    vocab = CharTokenizer().to_dict()
    with pytest.raises(ValueError, match=r"^encoder.hiden_size is not an option \(options: cell, hidden_size"):
        CTCSpeechRecognizer(vocab=vocab, encoder={"hiden_size": 8})
    with pytest.raises(TypeError, match="unexpected keyword argument 'hiden_size'"):
        CTCSpeechRecognizer(vocab=vocab, hiden_size=8)
    with pytest.raises(ValueError, match="encoder.pyramid_layers must be below encoder.num_layers = 2"):
        CTCSpeechRecognizer(vocab=vocab, encoder={"num_layers": 2, "pyramid_layers": 2})


def _printed(argv: list[str]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        run([*argv, "--print_config"])  # printing the config exits
    assert e.value.code in (0, None), err.getvalue()
    return out.getvalue(), err.getvalue()


def test_a_config_with_flat_options_reads_as_the_nested_one(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  init_args:\n    n_mels: 24\n    stack_frames: 3\n    hidden_size: 12\n"
                   "    bidirectional: false\n    dropout: 0.2\n")
    new = tmp_path / "new.yaml"
    new.write_text("model:\n  init_args:\n    frontend: {n_mels: 24, stack_frames: 3}\n"
                   "    encoder: {hidden_size: 12, bidirectional: false}\n    dropout: 0.2\n")
    base = ["fit", "-c", "defaults", "-c", "tiny/ctc"]
    (flat, flat_err), (nested, _) = _printed([*base, "-c", str(old)]), _printed([*base, "-c", str(new)])
    assert flat == nested and flat_err == ""  # a file is read as it is, without a note
    assert "    encoder:\n      cell: lstm\n      hidden_size: 12\n" in nested


def test_a_flat_option_on_the_command_line_is_read_nested_with_a_note():
    base = ["fit", "-c", "defaults", "-c", "tiny/ctc"]
    flat, err = _printed([*base, "--model.init_args.hidden_size=12", "--model.init_args.n_mels", "24"])
    nested, _ = _printed([*base, "--model.init_args.encoder.hidden_size=12", "--model.init_args.frontend.n_mels=24"])
    assert flat == nested
    assert err.strip().splitlines() == [
        "[rnnlab] note: read as nested options: --model.init_args.hidden_size -> --model.init_args.encoder."
        "hidden_size, --model.init_args.n_mels -> --model.init_args.frontend.n_mels"]


def test_a_shipped_models_saved_config_still_parses():
    # pipelines/pretrained/english/config.yaml is the training run's own, with the flat options.
    out, _ = _printed(["test", "--ckpt", "english"])
    assert "    encoder:\n      cell: lstm\n      hidden_size: 256\n      num_layers: 3\n" in out
    assert "      stack_frames: 3\n" in out and "hidden_size: 256\n    num_layers" not in out


def test_a_flat_option_out_of_range_names_the_nested_one(capsys):
    with pytest.raises(SystemExit) as e:
        run(["fit", "-c", "defaults", "-c", "slots", "--model.init_args.hidden_size=-4", "--print_config"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "[rnnlab] note: read as nested options: --model.init_args.hidden_size -> --model.init_args.encoder.hidden_size",
        "rnnlab fit: error: --model.init_args.encoder.hidden_size: expected int > 0, got -4 (see rnnlab fit --help)"]


def test_the_slot_tagger_keeps_its_simple_cells():
    from pipelines.slot_filling import SlotFillingModule

    vocab = {"words": {"itos": ["<pad>", "<unk>", "fly"]}, "tags": ["O"], "intents": ["flight"]}
    jordan = SlotFillingModule(vocab=vocab, embedding_dim=4, encoder={"cell": "jordan", "hidden_size": 3})
    assert jordan.model.encoder.implementation == "reference" and jordan.hparams.encoder["implementation"] == "auto"
    old = SlotFillingModule(vocab=vocab, embedding_dim=4, cell="elman", hidden_size=3, num_layers=2, dropout=0.1)
    assert old.hparams.encoder["cell"] == "elman" and old.hparams.encoder["dropout"] == 0.1
    assert "cell" not in old.hparams and old.model.encoder.implementation == "fused"
