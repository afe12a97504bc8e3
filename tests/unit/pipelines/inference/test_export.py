"""Exports of tiny CTC and transducer checkpoints (:func:`pipelines.inference.export.export_checkpoint`): the
files and their description, TorchScript and ONNX graphs that match PyTorch, decoding with the exported files
alone, and :func:`~pipelines.inference.export.bench_export`."""

import json
import shutil

import numpy as np
import pytest
import torch

from pipelines.base import load_module
from pipelines.inference.export import bench_export, export_checkpoint, tokenizer_spec
from pipelines.inference.export_graphs import max_abs_diff, max_valid_diff, onnx_session, run_onnx
from tests.fixtures.checkpoints import save_checkpoint
from tests.unit.pipelines.inference.export_helpers import (
    CASES,
    RATE,
    TOL,
    TRANSDUCER_FILES,
    graph_runners,
    greedy_exported,
    greedy_reference,
    reference,
    speechlike,
    tiny_ctc,
    tiny_transducer,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 2x BiLSTM CTC checkpoint with dropout and SpecAugment on (training only) and its export."""
    root = tmp_path_factory.mktemp("export")
    ckpt = save_checkpoint(tiny_ctc(), root / "ctc.ckpt")
    export_checkpoint(ckpt, root / "out")
    return load_module(ckpt), root / "out"


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


def test_bench_export_reports_rtf_and_agreement(exported, tmp_path):
    import soundfile as sf

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

    texts = ["the cat sat on the mat", "a dog ran", "the dog sat", "cats and dogs ran on"] * 5
    sp = SentencePieceTokenizer.train(texts, vocab_size=40, required_chars="abcdefghijklmnopqrstuvwxyz")
    spec = json.loads(json.dumps(tokenizer_spec(sp)))
    assert spec["kind"] == "sentencepiece" and spec["tokens"] == sp.tokens and spec["word_start"] == "\u2581"
    ids = sp.encode("the dog ran on the mat")
    text = " ".join("".join(spec["tokens"][i] for i in ids).replace(spec["word_start"], " ").split())
    assert text == sp.decode(ids) == "the dog ran on the mat"
    assert SentencePieceTokenizer.from_dict(spec["rnnlab_tokenizer"]).tokens == sp.tokens


# -- transducer ---------------------------------------------------------------------------------------------------


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
    export_checkpoint(ckpt, root / "out")
    return load_module(ckpt).eval(), root / "out"


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


def test_bench_export_rejects_a_transducer_in_one_line(transducer_exported, tmp_path):
    _, out = transducer_exported
    ckpt = json.loads((out / "export.json").read_text())["checkpoint"]
    with pytest.raises(ValueError, match="CTC exports only.*transducer") as exc:
        bench_export(ckpt, [tmp_path / "a.wav"], out_dir=tmp_path / "bench")
    assert "\n" not in str(exc.value) and not (tmp_path / "bench").exists()
