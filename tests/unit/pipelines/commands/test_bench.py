"""`rnnlab bench --quick`: every section runs in one process and the JSON's ratios come from its own numbers."""

import json
import math
import re

import pytest

from pipelines.commands.bench import main

SECTIONS = ("train", "flops", "data", "padding", "rtf", "memory", "encoder")


def numbers(tree, path=""):
    """Every (path, number) leaf of a JSON tree (booleans are not numbers here)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9)


@pytest.fixture(scope="module")
def report(speech_corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["--quick", "--data-dir", str(speech_corpus_dir), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_every_section_reports_finite_numbers(report):
    assert report["meta"]["threads"] >= 1 and report["meta"]["torch"]
    for name in SECTIONS:
        assert name in report and "error" not in report[name], report.get(name)
    bad = [(p, v) for p, v in numbers(report) if not math.isfinite(v) or v < 0]
    assert not bad


def test_train_ratio_is_lightning_over_bare(report):
    train = report["train"]
    assert train["model"]["size"] == "tiny" and train["steps"] >= 2
    res = train["precision"]["32-true"]
    for kind in ("bare", "lightning"):
        x = res[kind]
        assert x["median_s"] > 0 and len(x["seconds"]) == train["repeats"]
        assert close(x["utterances_per_s"], train["utterances"] / x["median_s"])
        assert close(x["audio_s_per_s"], train["audio_s"] / x["median_s"])
    assert close(res["ratio_lightning_over_bare"], res["lightning"]["utterances_per_s"] / res["bare"]["utterances_per_s"])
    assert res["order"][:2] == ["bare", "lightning"] and res["order"][2:4] == ["lightning", "bare"]
    if not report["meta"]["cuda"]:
        assert "skipped" in train["precision"]["bf16-mixed"]


def test_flops_fraction_is_achieved_over_matmul(report):
    res = report["flops"]["precision"]["32-true"]
    flops = report["flops"]["flops_per_pass"]
    assert flops["padded_frames"] >= flops["valid_frames"] > 0
    assert close(res["achieved_flop_per_s_valid"], flops["valid_frames"] / res["encoder_median_s"])
    assert close(res["fraction_of_matmul_valid"], res["achieved_flop_per_s_valid"] / res["matmul"]["flop_per_s"])
    assert close(res["fraction_of_matmul_padded"], res["achieved_flop_per_s_padded"] / res["matmul"]["flop_per_s"])
    whole = res["whole_step"]
    assert close(whole["bare_s"], report["train"]["precision"]["32-true"]["bare"]["median_s"])
    assert close(whole["fraction_of_matmul_valid"], whole["flops_valid"] / whole["bare_s"] / res["matmul"]["flop_per_s"])


def test_data_ratio_uses_the_train_sections_model_throughput(report):
    data = report["data"]
    model = data["vs_model"]["32-true"]
    assert close(model["model_utterances_per_s"], report["train"]["precision"]["32-true"]["lightning"]["utterances_per_s"])
    assert close(model["ratio_data_over_model"], data["utterances_per_s"] / model["model_utterances_per_s"])
    assert close(data["utterances_per_s"], data["utterances"] / data["median_s"])


def test_padding_bucketing_beats_random_batches(report):
    pad = report["padding"]
    assert pad["distribution"]["utterances"] > 0 and 11.5 < pad["distribution"]["mean_s"] < 14
    for variant in pad["librispeech_like"].values():
        assert 0 < variant["bucketed"]["padding_fraction"] < variant["random"]["padding_fraction"] < 1
        assert variant["sorted"]["padding_fraction"] <= variant["bucketed"]["padding_fraction"]


def test_rtf_rows_and_export_entry(report):
    rtf = report["rtf"]
    assert rtf["utterances"] >= 1 and rtf["audio_s"] > 0 and rtf["weights"].startswith("random")
    for row in rtf["rows"].values():
        assert row["median_s"] > 0 and close(row["rtf"], row["median_s"] / rtf["audio_s"])
    export = rtf["export"]
    if "skipped" in export:
        assert "pipelines.inference.export" in export["skipped"]
    else:
        assert export["rtf"] and all(v > 0 for v in export["rtf"].values())


def test_rtf_skips_the_exported_backends_without_onnxruntime(monkeypatch):
    import importlib.util

    from pipelines.commands.bench import rtf

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime"
                        else find_spec(name, *a))
    res = rtf._export_rtf(None, None, [])
    assert res == {"skipped": "pipelines.inference.export.bench_export needs onnxruntime, which is not installed"}


def test_memory_and_encoder(report):
    mem = report["memory"]["precision"]["32-true"]
    assert mem["params_mb"] > 0 and mem["step_peak_rss_mb"] > 0 and mem["peak_rss_mb"] >= mem["rss_before_mb"]
    enc = report["encoder"]
    assert enc["ratio_vs_padded_nn_lstm"]["nn.LSTM padded (inexact)"] == 1.0
    assert all(v > 0 for v in enc["seconds_per_batch"].values())


@pytest.mark.parametrize("argv, message", [
    (["--ckpt", "/nonexistent/best.ckpt"], "--ckpt: checkpoint not found: /nonexistent/best.ckpt"),
    (["--only", "train,speed"], "--only: unknown section(s) speed"),
    (["--model-size", "huge"], "argument --model-size: invalid choice: 'huge'"),
    (["--only", "serve", "--serve-seconds", "0"], "--serve-seconds must be from 0.2 to 600, got 0"),
])
def test_bad_arguments_give_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rnnlab bench: error: ") and message in err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_data_scale_section_is_opt_in_and_reports_each_rank(report, tmp_path):
    assert "data-scale" not in report  # minutes at full size: only when named
    out = tmp_path / "scale.json"
    assert main(["--quick", "--only", "data-scale", "--scale-sizes", "300", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["data-scale"]["results"]
    assert [(r["mode"], r["rank"], r["world"]) for r in rows] == [
        ("cold, 1 rank", 0, 1), ("warm, 1 rank", 0, 1), ("warm, 2 ranks", 0, 2), ("warm, 2 ranks", 1, 2)]
    for r in rows:
        assert r["rows"] == 300 and r["first_batch_s"] > 0 and r["anon_growth_mb"] < 200
    # The two simulated ranks split the corpus between them.
    assert rows[2]["train_utterances"] + rows[3]["train_utterances"] >= rows[1]["train_utterances"]


def test_slots_section_times_every_compare_slots_variant(tmp_path, capsys, monkeypatch, recwarn):
    """Asked for by name; every variant file of the Makefile's compare-slots, timed through the task's own
    training_step and predict_step, ratios from its own numbers."""
    from pipelines.commands.bench.slots import variants
    from pipelines.slot_filling import SlotFillingModule
    from tests.fixtures.slot_corpus import write_slot_corpus

    steps = []
    real_step = SlotFillingModule.training_step

    def training_step(self, batch, batch_idx):
        steps.append((self.hparams.intent_weight, self.hparams.word_dropout))
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(SlotFillingModule, "training_step", training_step)
    data = write_slot_corpus(tmp_path / "data")
    out = tmp_path / "b.json"
    assert main(["--only", "slots", "--quick", "--slots-data", str(data), "--out", str(out)]) == 0
    r = json.loads(out.read_text())["slots"]
    rows = r["variants"]
    assert list(rows) == list(variants()) and rows["base"]["train_ratio_vs_base"] == 1.0
    for row in rows.values():
        assert row["train_s_per_step"] > 0 and row["decode_s_per_batch"] > 0
        assert close(row["train_ratio_vs_base"], row["train_s_per_step"] / rows["base"]["train_s_per_step"])
    assert rows["window"]["params"] > rows["base"]["params"] and rows["wdrop"]["params"] == rows["base"]["params"]
    # One warm-up step, then each of the batches per repetition, for each variant; the loss is the task's own
    # (the intent weight of intent2, the word dropout of wdrop, combo and all).
    assert len(steps) == len(rows) * (1 + 2 * r["batches"])
    assert steps.count((2.0, 0.0)) == 1 + 2 * r["batches"] and steps.count((1.0, 0.05)) == 3 * (1 + 2 * r["batches"])
    printed = capsys.readouterr().out
    assert re.search(r"variant +params +train ms/step +x base +s/epoch \(est\.\) +decode ms/batch +x base", printed)
    assert "combo" in printed
    assert not [w for w in recwarn if "self.log()" in str(w.message)]  # the step's logging without a Trainer
    assert main(["--only", "slots", "--quick", "--slots-data", str(tmp_path / "none"), "--out", str(out)]) == 1


def test_serve_section_streams_in_real_time_to_a_live_server(tmp_path, capsys):
    """Asked for by name: 1 and 2 real-time streams on uvicorn: frame latency, RTF, streams held, cold start."""
    from pipelines.commands.bench import DEFAULT_SECTIONS

    assert "serve" not in DEFAULT_SECTIONS  # real-time streams take minutes at full size
    out = tmp_path / "b.json"
    assert main(["--only", "serve", "--quick", "--out", str(out)]) == 0
    serve = json.loads(out.read_text())["serve"]
    assert serve["weights"].startswith("random weights") and serve["audio_s"] == 1.0
    bad = [(p, v) for p, v in numbers(serve) if not math.isfinite(v) or v < 0]
    assert not bad and not [p for p, v in numbers(serve) if v == 0 and p != ".capacity.streams"]
    rounds = serve["rounds"]
    assert list(rounds) == ["1", "2"]
    for n, r in rounds.items():
        assert r["streams"] == int(n) and r["frames"] == r["frames_expected"] == 5 * int(n)  # 1 s in 200 ms frames
        assert not r["errors"] and not r["timed_out"]
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["max"]
        assert r["rtf_per_stream"]["mean"] <= r["rtf_per_stream"]["max"] and r["stop_to_final_ms"]["p50"] > 0
        assert r["holds"] == (r["latency_ms"]["p95"] <= serve["p95_limit_ms"])
    held = 0 if not rounds["1"]["holds"] else 1 if not rounds["2"]["holds"] else 2
    assert serve["capacity"] == {"streams": held, "failed_at": None if held == 2 else held + 1, "cap": 2,
                                 "stopped": None}
    cold = serve["cold_start"]
    assert list(cold["load_s"]) == ["stream"] and cold["total_s"] >= cold["import_s"] + cold["load_s"]["stream"]
    assert cold["peak_rss_mb"] >= cold["rss_mb"] > 100  # torch and the app are in it
    printed = capsys.readouterr().out
    assert "p95 <= 300 ms" in printed and "concurrent real-time stream(s)" in printed
    assert "RSS MB, every model loaded" in printed and "english-stream not installed" in printed


def test_decode_section_times_ctc_and_transducer_side_by_side(speech_corpus_dir, tmp_path, capsys):
    """Asked for by name: two checkpoints on the same utterances, greedy, beam and streaming rows for each."""
    import torch

    from data.tokenizers import CharTokenizer
    from pipelines.commands.bench import DEFAULT_SECTIONS
    from pipelines.commands.bench.rtf import save_checkpoint
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.transducer import TransducerSpeechRecognizer

    assert "decode" not in DEFAULT_SECTIONS
    torch.manual_seed(0)
    small = dict(vocab=CharTokenizer().to_dict(), n_mels=20, stack_frames=2, hidden_size=16, num_layers=1,
                 bidirectional=False, normalize="global")
    save_checkpoint(CTCSpeechRecognizer(**small), str(tmp_path / "ctc.ckpt"))
    save_checkpoint(TransducerSpeechRecognizer(**small, pred_hidden_size=12, joiner_size=10), str(tmp_path / "t.ckpt"))
    out = tmp_path / "b.json"
    assert main(["--only", "decode", "--quick", "--data-dir", str(speech_corpus_dir), "--beam", "2", "--out", str(out),
                 "--decode-ckpt", f"ctc={tmp_path / 'ctc.ckpt'}", "--decode-ckpt", f"rnnt={tmp_path / 't.ckpt'}"]) == 0
    r = json.loads(out.read_text())["decode"]
    assert r["models"] == {"ctc": "CTCSpeechRecognizer", "rnnt": "TransducerSpeechRecognizer"}
    assert sorted(v["mode"] for v in r["rows"].values() if v["model"] == "rnnt") == [
        "beam 2", "greedy", "streaming greedy (200 ms chunks)"]
    assert len(r["rows"]) == 6 and all(v["rtf"] > 0 and math.isfinite(v["rtf"]) for v in r["rows"].values())
    assert "RTF by CPU time" in capsys.readouterr().out
    assert main(["--only", "decode", "--quick", "--out", str(out)]) == 2
    assert main(["--only", "decode", "--quick", "--decode-ckpt", "nameless", "--out", str(out)]) == 2
    assert "NAME=CHECKPOINT" in capsys.readouterr().err
