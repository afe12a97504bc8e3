"""`rnnlab export`: TorchScript and ONNX exports of tiny CTC and transducer models match PyTorch; bad checkpoints
give one line."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from data.text import CharTokenizer, Vocabulary
from modules.transducer import greedy_search
from pipelines.base import load_module
from pipelines.commands.export import (
    TRANSDUCER_GRAPHS,
    greedy_with_graphs,
    main,
    max_abs_diff,
    max_valid_diff,
    onnx_runner,
    onnx_session,
    run_onnx,
    torch_runner,
)
from pipelines.ctc import CTCSpeechRecognizer
from pipelines.slot_filling import SlotFillingModule
from pipelines.transducer import TransducerSpeechRecognizer
from tests.fixtures.checkpoints import save_checkpoint

RATE = 16000
TOL = 1e-4


def speechlike(seconds: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * RATE)
    t = torch.arange(n) / RATE
    voiced = sum(torch.sin(2 * math.pi * f * t + seed) / (i + 1) for i, f in enumerate((150.0, 900.0, 2500.0)))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.1 * t + seed)
    return 0.2 * voiced * envelope + 0.02 * torch.randn(n, generator=gen)


def batch(*wavs):
    lengths = torch.tensor([w.numel() for w in wavs])
    out = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        out[i, : w.numel()] = w
    return out, lengths


CASES = [batch(speechlike(0.3, 1)), batch(speechlike(1.0, 2)), batch(speechlike(2.7, 3)),
         batch(speechlike(1.0, 4), speechlike(0.37, 5))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 2x BiLSTM CTC checkpoint with dropout and SpecAugment on (training only) and its export."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=2, hidden_size=32,
                                num_layers=2, dropout=0.3, spec_augment=True, speed_perturb=[0.9, 1.0, 1.1])
    ckpt = save_checkpoint(model, root / "ctc.ckpt")
    assert main(["--ckpt", ckpt, "--out", str(root / "out")]) == 0
    return load_module(ckpt), root / "out"


def reference(model, waveforms, lengths):
    with torch.no_grad():
        return model(waveforms, lengths)


def test_export_writes_models_tokenizer_and_description(exported):
    model, out = exported
    assert {p.name for p in out.iterdir()} == {"model.ts", "model.onnx", "tokenizer.json", "export.json", "README.md"}
    meta = json.loads((out / "export.json").read_text())
    assert meta["sample_rate"] == RATE and meta["vocab_size"] == len(model.tokenizer)
    assert [i["name"] for i in meta["inputs"]] == ["waveforms", "lengths"]
    assert [o["name"] for o in meta["outputs"]] == ["log_probs", "output_lengths"]
    assert meta["onnx"]["exporter"] == "torch.onnx.export(dynamo=False)" and meta["onnx"]["opset"] == 17
    assert all(d <= TOL for d in meta["max_abs_diff_vs_pytorch"].values())
    tok = json.loads((out / "tokenizer.json").read_text())
    assert tok["tokens"] == list(model.tokenizer.tokens) and tok["blank"] == 0 and tok["kind"] == "char"
    assert "16000 Hz" in (out / "README.md").read_text()
    assert meta["samples_per_frame"] == 320 and meta["frame_rate"] == RATE / 320 and meta["min_samples"] == 257


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_export_matches_pytorch_on_dynamic_lengths_and_padded_batch(exported, backend):
    model, out = exported
    if backend == "onnxruntime":
        session = onnx_session(out / "model.onnx")

        def run(w, n):
            return run_onnx(session, w, n)
    else:
        run = torch.jit.load(str(out / "model.ts"))
    for waveforms, lengths in CASES:
        ref_lp, ref_len = reference(model, waveforms, lengths)
        with torch.no_grad():
            lp, out_len = run(waveforms, lengths)
        assert out_len.dtype == torch.int64 and lp.dtype == torch.float32
        assert torch.equal(out_len, ref_len)
        assert lp.shape == ref_lp.shape
        assert max_valid_diff(ref_lp, ref_len, lp, out_len) <= TOL  # padded rows: valid frames only
    # Rows do not leak into each other: the unpadded row of the batch gives what it gives alone.
    wide, wide_len = CASES[-1]
    with torch.no_grad():
        lp_batch, n_batch = run(wide, wide_len)
        lp_alone, n_alone = run(wide[:1], wide_len[:1])
    assert max_valid_diff(lp_alone, n_alone, lp_batch[:1], n_batch[:1]) <= TOL


def test_greedy_decoding_with_tokenizer_json_alone(exported):
    model, out = exported
    tok = json.loads((out / "tokenizer.json").read_text())
    session = onnx_session(out / "model.onnx")
    waveforms, lengths = CASES[-1]
    lp, n = session.run(None, {"waveforms": waveforms.numpy(), "lengths": lengths.numpy()})
    texts = []
    for row, frames in zip(lp, n, strict=True):
        ids = row[:frames].argmax(-1)
        kept = [int(i) for j, i in enumerate(ids) if i != tok["blank"] and (j == 0 or i != ids[j - 1])]
        texts.append("".join(tok["tokens"][i] for i in kept))
    assert texts == model.decode_greedy(*reference(model, waveforms, lengths))


def test_unidirectional_gru_stack3_global_normalisation_onnx_only(tmp_path):
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
    session = onnx_session(tmp_path / "out" / "model.onnx")
    for waveforms, lengths in CASES:
        ref_lp, ref_len = reference(model.eval(), waveforms, lengths)
        lp, out_len = run_onnx(session, waveforms, lengths)
        assert torch.equal(out_len, ref_len) and max_valid_diff(ref_lp, ref_len, lp, out_len) <= TOL
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


def test_dynamo_exporter_succeeds_or_fails_in_one_line(exported, tmp_path, capsys):
    """torch 2.11 cannot export the LSTM with a dynamic time axis through dynamo: a clear error, no files."""
    model, out = exported
    ckpt = json.loads((out / "export.json").read_text())["checkpoint"]
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
    for waveforms, lengths in CASES:
        ref_lp, ref_len = reference(model, waveforms, lengths)
        assert max_valid_diff(ref_lp, ref_len, *run_onnx(session, waveforms, lengths)) <= TOL



def test_bench_export_reports_rtf_and_agreement(exported, tmp_path):
    import soundfile as sf

    from pipelines.commands.export import bench_export

    model, out = exported
    files = []
    for i, seconds in enumerate((0.4, 0.9)):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], speechlike(seconds, 10 + i).numpy(), RATE, subtype="FLOAT")
    ckpt = json.loads((out / "export.json").read_text())["checkpoint"]
    threads = torch.get_num_threads()
    res = bench_export(ckpt, files, repeats=1)
    assert torch.get_num_threads() == threads  # restored
    assert res["files"] == 2 and abs(res["audio_s"] - 1.3) < 1e-9 and res["threads"] == 1
    assert set(res["rtf"]) == {"pytorch", "torchscript", "onnxruntime"} and all(v > 0 for v in res["rtf"].values())
    assert all(d <= TOL for d in res["max_abs_diff_vs_pytorch"].values())
    assert res["same_text_as_pytorch"] == {"torchscript": True, "onnxruntime": True}


def test_tokenizer_spec_decodes_sentencepiece_without_rnnlab():
    from data.subwords import SentencePieceTokenizer
    from pipelines.commands.export import tokenizer_spec

    texts = ["the cat sat on the mat", "a dog ran", "the dog sat", "cats and dogs ran on"] * 5
    sp = SentencePieceTokenizer.train(texts, vocab_size=40, required_chars="abcdefghijklmnopqrstuvwxyz")
    spec = json.loads(json.dumps(tokenizer_spec(sp)))
    assert spec["kind"] == "sentencepiece" and spec["tokens"] == sp.tokens and spec["word_start"] == "\u2581"
    ids = sp.encode("the dog ran on the mat")
    text = " ".join("".join(spec["tokens"][i] for i in ids).replace(spec["word_start"], " ").split())
    assert text == sp.decode(ids) == "the dog ran on the mat"
    assert SentencePieceTokenizer.from_dict(spec["rnnlab_tokenizer"]).tokens == sp.tokens


# -- transducer ---------------------------------------------------------------------------------------------------

TRANSDUCER_FILES = {"torchscript": {"encoder": "encoder.ts", "predictor": "predictor.ts", "joiner": "joiner.ts"},
                    "onnx": {"encoder": "encoder.onnx", "predictor": "predictor.onnx", "joiner": "joiner.onnx"}}


def tiny_transducer(**kw) -> TransducerSpeechRecognizer:
    torch.manual_seed(0)
    args = dict(vocab=CharTokenizer().to_dict(), n_mels=20, stack_frames=2, hidden_size=16, num_layers=2,
                dropout=0.0, spec_augment=False, pred_embed_size=8, pred_hidden_size=12, joiner_size=10,
                pred_dropout=0.0)
    args.update(kw)
    return TransducerSpeechRecognizer(**args)


@pytest.fixture(scope="module")
def transducer_exported(tmp_path_factory):
    """A tiny transducer checkpoint (2x BiLSTM encoder, 1-layer prediction network) and its export."""
    root = tmp_path_factory.mktemp("export-rnnt")
    model = tiny_transducer()
    with torch.no_grad():
        # Untouched, this random joiner emits max_symbols tokens at every frame; a larger blank bias lets blank
        # win at some frames too, so greedy decoding takes both of its branches.
        model.model.joiner.out.bias[model.tokenizer.blank] += 0.6
    ckpt = save_checkpoint(model, root / "rnnt.ckpt")
    assert main(["--ckpt", ckpt, "--out", str(root / "out")]) == 0
    return load_module(ckpt).eval(), root / "out"


def graph_runners(out, backend: str) -> dict:
    if backend == "onnxruntime":
        return {g: onnx_runner(onnx_session(out / f"{g}.onnx"), spec) for g, spec in TRANSDUCER_GRAPHS.items()}
    return {g: torch_runner(torch.jit.load(str(out / f"{g}.ts"))) for g in TRANSDUCER_GRAPHS}


def greedy_exported(runners: dict, meta: dict, waveforms, lengths) -> list[list[int]]:
    return greedy_with_graphs(runners["encoder"], runners["predictor"], runners["joiner"], waveforms.numpy(),
                              lengths.numpy(), blank=meta["blank"], max_symbols=meta["max_symbols"],
                              layers=meta["predictor"]["layers"], hidden_size=meta["predictor"]["hidden_size"])


def greedy_reference(model, waveforms, lengths) -> list[list[int]]:
    with torch.no_grad():
        enc, enc_lengths = model.model.encode(waveforms, lengths)
    return greedy_search(model.model, enc, enc_lengths, max_symbols=model.hparams.max_symbols)


def test_transducer_export_writes_three_graphs_per_format_and_description(transducer_exported):
    model, out = transducer_exported
    assert {p.name for p in out.iterdir()} == {*TRANSDUCER_FILES["torchscript"].values(),
                                               *TRANSDUCER_FILES["onnx"].values(),
                                               "tokenizer.json", "export.json", "README.md"}
    meta = json.loads((out / "export.json").read_text())
    assert meta["decoder"] == "transducer" and meta["files"] == TRANSDUCER_FILES
    assert meta["blank"] == meta["start_token"] == model.tokenizer.blank == 0
    assert meta["max_symbols"] == model.hparams.max_symbols == 4
    assert meta["predictor"] == {"layers": 1, "hidden_size": 12} and meta["joiner_size"] == 10
    assert meta["vocab_size"] == len(model.tokenizer) and meta["sample_rate"] == RATE and meta["bidirectional"]
    assert meta["samples_per_frame"] == 320 and meta["min_samples"] == 257
    names = {g: ([i["name"] for i in s["inputs"]], [o["name"] for o in s["outputs"]])
             for g, s in meta["graphs"].items()}
    assert names == {"encoder": (["waveforms", "lengths"], ["encoder_out", "output_lengths"]),
                     "predictor": (["tokens", "h", "c"], ["prediction", "h_out", "c_out"]),
                     "joiner": (["encoder_frame", "prediction"], ["logits"])}
    assert meta["graphs"]["predictor"]["inputs"][1]["shape"] == [1, "batch", 12]
    assert meta["graphs"]["joiner"]["outputs"][0]["shape"] == ["batch", len(model.tokenizer)]
    assert meta["onnx"] == {"exporter": "torch.onnx.export(dynamo=False)", "opset": 17}
    for fmt in ("torchscript", "onnx"):
        diffs = meta["max_abs_diff_vs_pytorch"][fmt]
        assert set(diffs) == {"encoder", "predictor", "joiner"} and all(0 <= d <= TOL for d in diffs.values())
    assert meta["greedy_check"]["tokens"] > 0
    assert meta["greedy_check"]["same_tokens_as_pytorch"] == {"torchscript": True, "onnx": True}
    tok = json.loads((out / "tokenizer.json").read_text())
    assert tok["tokens"] == list(model.tokenizer.tokens) and tok["blank"] == 0 and "transducer" in tok["greedy_decoding"]
    readme = (out / "README.md").read_text()
    assert "16000 Hz" in readme and "max_symbols" in readme and "encoder.onnx" in readme


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_transducer_graphs_match_pytorch(transducer_exported, backend):
    model, out = transducer_exported
    run, am = graph_runners(out, backend), model.model
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for waveforms, lengths in CASES:
            enc, enc_lengths = am.encode(waveforms, lengths)
            ref = am.joiner.project_encoder(enc)
            got, got_lengths = run["encoder"](waveforms.numpy(), lengths.numpy())
            assert got.dtype == np.float32 and got_lengths.dtype == np.int64 and got.shape == tuple(ref.shape)
            assert torch.equal(torch.from_numpy(got_lengths), enc_lengths)
            assert max_valid_diff(ref, enc_lengths, got, got_lengths) <= TOL
        for batch in (1, 3, 7):  # dynamic batch; random tokens and states
            tokens = torch.randint(0, len(model.tokenizer), (batch,), generator=gen)
            h, c = torch.randn(2, 1, batch, 12, generator=gen)
            pred, (h_next, c_next) = am.predictor.step(tokens, (h, c))
            ref = (am.joiner.project_prediction(pred), h_next, c_next)
            assert max_abs_diff(ref, run["predictor"](tokens.numpy(), h.numpy(), c.numpy())) <= TOL
            frame, prediction = torch.randn(2, batch, 10, generator=gen)
            ref = (am.joiner(frame, prediction),)
            assert max_abs_diff(ref, run["joiner"](frame.numpy(), prediction.numpy())) <= TOL


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_greedy_with_graphs_equals_greedy_search_on_a_padded_batch(transducer_exported, backend):
    model, out = transducer_exported
    meta = json.loads((out / "export.json").read_text())
    waveforms, lengths = CASES[-1]
    ids = greedy_exported(graph_runners(out, backend), meta, waveforms, lengths)
    assert ids == greedy_reference(model, waveforms, lengths) and all(ids)
    assert [model.tokenizer.decode(x) for x in ids] == model.decode_waveforms(waveforms, lengths)


def test_transducer_readme_greedy_loop_gives_the_models_text(transducer_exported, tmp_path, monkeypatch):
    """The README's code, run as written on the ONNX graphs (onnxruntime, numpy and soundfile only)."""
    import soundfile as sf

    model, out = transducer_exported
    code = (out / "README.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    for name in (*TRANSDUCER_FILES["onnx"].values(), "tokenizer.json", "export.json"):
        shutil.copy(out / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for seconds, seed in ((0.8, 21), (1.7, 22)):
        wav = speechlike(seconds, seed)
        sf.write(tmp_path / "audio.wav", wav.numpy(), RATE, subtype="FLOAT")
        scope: dict = {}
        exec(code, scope)
        assert scope["text"] and scope["text"] == model.transcribe_waveforms([wav])[0]


def test_unidirectional_transducer_with_two_predictor_layers_exports(tmp_path):
    model = tiny_transducer(bidirectional=False, pred_layers=2, max_symbols=3)
    with torch.no_grad():  # a joiner that depends more on its inputs: blank wins at some frames, not all
        model.model.joiner.out.weight.mul_(8.0)
        model.model.joiner.out.bias[model.tokenizer.blank] += 2.0
    ckpt = save_checkpoint(model, tmp_path / "uni.ckpt")
    out = tmp_path / "out"
    assert main(["--ckpt", ckpt, "--out", str(out), "--formats", "onnx"]) == 0
    assert {p.name for p in out.iterdir()} == {*TRANSDUCER_FILES["onnx"].values(), "tokenizer.json", "export.json",
                                               "README.md"}
    meta = json.loads((out / "export.json").read_text())
    assert not meta["bidirectional"] and meta["predictor"] == {"layers": 2, "hidden_size": 12}
    assert meta["max_symbols"] == 3 and set(meta["max_abs_diff_vs_pytorch"]) == {"onnx"}
    runners = graph_runners(out, "onnxruntime")
    model.eval()
    for waveforms, lengths in CASES:
        assert greedy_exported(runners, meta, waveforms, lengths) == greedy_reference(model, waveforms, lengths)


def test_bench_export_rejects_a_transducer_in_one_line(transducer_exported, tmp_path):
    from pipelines.commands.export import bench_export

    _, out = transducer_exported
    ckpt = json.loads((out / "export.json").read_text())["checkpoint"]
    with pytest.raises(ValueError, match="CTC exports only.*transducer") as exc:
        bench_export(ckpt, [tmp_path / "a.wav"], out_dir=tmp_path / "bench")
    assert "\n" not in str(exc.value) and not (tmp_path / "bench").exists()
