"""`rnnlab export`: the options (formats, opset, exporter) reach the export, the files land in --out, and bad
checkpoints give one line. What the export writes and how it matches PyTorch:
tests/unit/pipelines/inference/test_export.py."""

import json
import re

import pytest
import torch

from data.text import CharTokenizer, Vocabulary
from pipelines.base import load_module
from pipelines.commands.export import main
from pipelines.ctc import CTCSpeechRecognizer
from pipelines.inference.export_graphs import max_valid_diff, onnx_session, run_onnx
from pipelines.slot_filling import SlotFillingModule
from tests.fixtures.checkpoints import save_checkpoint
from tests.unit.pipelines.inference import export_helpers as ex


@pytest.fixture(scope="module")
def ctc_checkpoint(tmp_path_factory):
    """A tiny 2x BiLSTM CTC checkpoint (not exported) and its model."""
    ckpt = save_checkpoint(ex.tiny_ctc(), tmp_path_factory.mktemp("export") / "ctc.ckpt")
    return load_module(ckpt), ckpt


def test_unidirectional_gru_stack3_global_normalisation_onnx_only(tmp_path, capsys):
    torch.manual_seed(1)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=24, stack_frames=3, hidden_size=16,
                                num_layers=1, cell="gru", bidirectional=False, dropout=0.0, spec_augment=False,
                                normalize="global")
    fe = model.model.frontend  # global statistics as training leaves them, saved in the checkpoint
    fe.feat_mean.copy_(torch.linspace(-8.0, -2.0, 24))
    fe.feat_var.copy_(torch.linspace(2.0, 6.0, 24))
    ckpt = save_checkpoint(model, tmp_path / "gru.ckpt")
    assert main(["--ckpt", ckpt, "--out", str(tmp_path / "out"), "--formats", "onnx", "--opset", "18"]) == 0
    assert not (tmp_path / "out" / "model.ts").exists()
    done = capsys.readouterr().err.strip().splitlines()[-1]
    line = (rf"\[rnnlab\] exported model\.onnx to {re.escape(str(tmp_path / 'out'))}; max \|diff\| vs PyTorch: "
            r"onnx \d\.\de[-+]\d\d \(ONNX: torch\.onnx\.export\(dynamo=False\), opset 18\)")
    assert re.fullmatch(line, done), done
    session = onnx_session(tmp_path / "out" / "model.onnx")
    for waveforms, lengths in ex.CASES:
        ref_lp, ref_len = ex.reference(model.eval(), waveforms, lengths)
        lp, out_len = run_onnx(session, waveforms, lengths)
        assert torch.equal(out_len, ref_len) and max_valid_diff(ref_lp, ref_len, lp, out_len) <= ex.TOL
    assert json.loads((tmp_path / "out" / "export.json").read_text())["onnx"]["opset"] == 18


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab export: error: ")
    return err[0]


def test_non_ctc_checkpoint_is_a_one_line_error(tmp_path, capsys):
    slots = SlotFillingModule(
        vocab={"words": Vocabulary(["<pad>", "<unk>", "a"], unk="<unk>").to_dict(), "tags": ["O"], "intents": ["x"]},
        embedding_dim=4, encoder={"hidden_size": 8})
    ckpt = save_checkpoint(slots, tmp_path / "slots.ckpt")
    line = _one_line_error(capsys, ["--ckpt", ckpt, "--out", str(tmp_path / "out")])
    assert "SlotFillingModule" in line and "CTC" in line
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    line = _one_line_error(capsys, ["--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "out")])
    assert "checkpoint not found" in line


def test_dynamo_exporter_succeeds_or_fails_in_one_line(ctc_checkpoint, tmp_path, capsys):
    """torch 2.11 cannot export the LSTM with a dynamic time axis through dynamo: a clear error, no files."""
    model, ckpt = ctc_checkpoint
    argv = ["--ckpt", ckpt, "--out", str(tmp_path / "dyn"), "--formats", "onnx", "--onnx-exporter", "dynamo"]
    try:
        rc = main(argv)
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("dynamo" in err[0] or "onnxscript" in err[0])
        assert not any((tmp_path / "dyn").iterdir())
        return
    assert rc == 0
    session = onnx_session(tmp_path / "dyn" / "model.onnx")
    for waveforms, lengths in ex.CASES:
        ref_lp, ref_len = ex.reference(model, waveforms, lengths)
        assert max_valid_diff(ref_lp, ref_len, *run_onnx(session, waveforms, lengths)) <= ex.TOL


def test_unidirectional_transducer_with_two_predictor_layers_exports(tmp_path):
    model = ex.tiny_transducer(bidirectional=False, pred_layers=2, max_symbols=3)
    with torch.no_grad():  # a joiner that depends more on its inputs: blank wins at some frames, not all
        model.model.joiner.out.weight.mul_(8.0)
        model.model.joiner.out.bias[model.tokenizer.blank] += 2.0
    ckpt = save_checkpoint(model, tmp_path / "uni.ckpt")
    out = tmp_path / "out"
    assert main(["--ckpt", ckpt, "--out", str(out), "--formats", "onnx"]) == 0
    assert {p.name for p in out.iterdir()} == {*ex.TRANSDUCER_FILES["onnx"].values(), "tokenizer.json", "export.json",
                                               "README.md"}
    meta = json.loads((out / "export.json").read_text())
    assert not meta["bidirectional"] and meta["predictor"] == {"layers": 2, "hidden_size": 12}
    assert meta["max_symbols"] == 3 and set(meta["max_abs_diff_vs_pytorch"]) == {"onnx"}
    runners = ex.graph_runners(out, "onnxruntime")
    model.eval()
    for waveforms, lengths in ex.CASES:
        assert ex.greedy_exported(runners, meta, waveforms, lengths) == ex.greedy_reference(model, waveforms, lengths)
