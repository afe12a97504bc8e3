"""``rnnlab analyze``: every subcommand end to end with tiny settings, and one-line errors for bad input."""

import json
import math
from pathlib import Path

import pytest
import torch

from pipelines.commands.analyze import main

PNG = b"\x89PNG\r\n\x1a\n"


def _outputs(out: Path, plots: list[str]) -> dict:
    for name in plots:
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
    assert (out / "summary.md").read_text().startswith("# rnnlab analyze")
    return json.loads((out / "results.json").read_text())


def _finite_numbers(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


def _save_checkpoint(model, path: Path) -> Path:
    """A checkpoint in the layout Lightning writes (enough for ``load_module``), without training."""
    import lightning

    cls = type(model)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "rnnlab": {"class_path": f"{cls.__module__}.{cls.__qualname__}", "format": 1},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def slots_run(tmp_path_factory) -> Path:
    """A tiny slot-filling BiLSTM trained for 2 epochs through ``rnnlab fit`` (config.yaml + checkpoints)."""
    import os

    from pipelines.cli import main as rnnlab
    from tests.fixtures.slot_corpus import write_slot_corpus

    root = tmp_path_factory.mktemp("analyze-slots")
    data = write_slot_corpus(root / "data")
    saved = {k: os.environ.get(k) for k in ("RNNLAB_RUN_NAME", "RNNLAB_WANDB_ID")}
    try:
        code = rnnlab(
            [
                "fit",
                "-c",
                "defaults",
                "-c",
                "tiny/slots.yaml",
                f"--data.init_args.data_dir={data}",
                "--trainer.max_epochs=2",
                f"--run.root={root / 'runs'}",
                "--run.name=tiny",
                "--run.wandb=disabled",
            ]
        )
    finally:  # the run name is kept in the environment for DDP children; later tests must not inherit it
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert code == 0
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def gru_slots_ckpt(slots_run, tmp_path_factory) -> Path:
    from pipelines.base import load_module
    from pipelines.slot_filling import SlotFillingModule

    vocab = load_module(slots_run / "checkpoints" / "best.ckpt").hparams.vocab
    model = SlotFillingModule(vocab=vocab, embedding_dim=8, encoder={"hidden_size": 6, "cell": "gru"})
    return _save_checkpoint(model, tmp_path_factory.mktemp("gru") / "gru.ckpt")


@pytest.fixture(scope="module")
def speech_ckpt_and_wav(tmp_path_factory):
    import soundfile as sf

    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    root = tmp_path_factory.mktemp("speech")
    torch.manual_seed(0)
    model = CTCSpeechRecognizer(
        vocab=CharTokenizer().to_dict(),
        n_mels=16,
        hidden_size=8,
        num_layers=2,
        stack_frames=2,
        spec_augment=False,
        dropout=0.0,
    )
    t = torch.arange(8000) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(
        8000, generator=torch.Generator().manual_seed(0)
    )
    sf.write(root / "a.wav", wav.numpy(), 16000)
    return _save_checkpoint(model, root / "ctc.ckpt"), root / "a.wav"


def test_gradient_flow_per_cell(tmp_path):
    out = tmp_path / "gf"
    assert (
        main(
            [
                "gradient-flow",
                "--cell",
                "rnn",
                "lstm",
                "gru",
                "jordan",
                "--length",
                "12",
                "--hidden",
                "6",
                "--batch",
                "3",
                "--out",
                str(out),
                "--wandb",
                "disabled",
            ]
        )
        == 0
    )
    res = _outputs(out, ["gradient-flow"])
    summary = res["summary"]
    assert set(summary) == {"Elman (simple RNN)", "LSTM", "GRU", "Jordan"}
    assert set(summary["LSTM"]) == {"h", "c"} and set(summary["Jordan"]) == {"y"}
    for label, states in summary.items():
        norms = res["norms"][label]
        for state, s in states.items():
            assert len(norms[state]) == 12 and all(v >= 0 for v in norms[state])
            assert s["ratio_first_to_last"] == pytest.approx(norms[state][0] / norms[state][-1])
            assert 0 < s["factor_per_step"] < 1  # default initialisation: every cell's gradient vanishes
        # The loss is a unit readout of the last output, so ||dL/dh_{T-1}|| = 1 exactly.
        first_state = next(iter(states))
        assert states[first_state]["norm_last"] == pytest.approx(1.0)
    assert _finite_numbers(summary)
    assert "| LSTM | c |" in (out / "summary.md").read_text()


def test_gradient_flow_forget_bias_slows_the_lstm_decay(tmp_path):
    rates = []
    for bias in ("0", "5"):
        out = tmp_path / bias
        main(
            [
                "gradient-flow",
                "--cell",
                "lstm",
                "--length",
                "20",
                "--hidden",
                "6",
                "--batch",
                "2",
                "--forget-bias",
                bias,
                "--out",
                str(out),
                "--wandb",
                "disabled",
            ]
        )
        rates.append(
            json.loads((out / "results.json").read_text())["summary"]["LSTM"]["c"]["factor_per_step"]
        )
    assert rates[0] < 0.8 < 0.9 < rates[1]


def test_gradient_flow_on_a_checkpoint_uses_its_validation_batch(slots_run, tmp_path):
    ckpt = slots_run / "checkpoints" / "best.ckpt"
    for loss in ("task", "last"):
        out = tmp_path / loss
        main(
            [
                "gradient-flow",
                "--ckpt",
                str(ckpt),
                "--batch",
                "4",
                "--loss",
                loss,
                "--out",
                str(out),
                "--wandb",
                "disabled",
            ]
        )
        res = _outputs(out, ["gradient-flow"])
        assert res["input_source"].startswith("validation batch of 4 sequences")
        (label,) = res["norms"]
        norms = res["norms"][label]
        assert set(norms) == {"h", "c"}
        # The longest validation sentences of the generated corpus have 12 words; one value per step.
        assert len(norms["h"]) == len(norms["c"]) == 12
        assert all(v > 0 for v in norms["h"] + norms["c"])
        s = res["summary"][label]["h"]
        assert s["ratio_first_to_last"] == pytest.approx(s["norm_first"] / s["norm_last"])
    # Reading out the last step: the gradient reaching earlier steps is smaller than at the last one.
    assert norms["h"][0] < norms["h"][-1]


def test_gradient_flow_on_a_speech_checkpoint_falls_back_to_random_input(speech_ckpt_and_wav, tmp_path):
    ckpt, _ = speech_ckpt_and_wav
    out = tmp_path / "gf"
    main(
        [
            "gradient-flow",
            "--ckpt",
            str(ckpt),
            "--length",
            "15",
            "--batch",
            "2",
            "--layer",
            "1",
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    res = _outputs(out, ["gradient-flow"])
    assert res["input_source"].startswith("random input") and "config.yaml" in res["input_source"]
    (label,) = res["norms"]
    assert len(res["norms"][label]["h"]) == 15 and all(v > 0 for v in res["norms"][label]["h"])
    assert "random input" in (out / "summary.md").read_text()


def test_long_range_tiny(tmp_path):
    out = tmp_path / "lr"
    assert (
        main(
            [
                "long-range",
                "--lengths",
                "4",
                "6",
                "--cells",
                "rnn",
                "lstm",
                "--steps",
                "5",
                "--test-size",
                "64",
                "--out",
                str(out),
                "--wandb",
                "disabled",
            ]
        )
        == 0
    )
    res = _outputs(out, ["long-range", "long-range-training"])
    assert set(res["summary"]) == {"rnn", "lstm"}
    for cell in ("rnn", "lstm"):
        assert abs(res["parameters"][cell] - 4641) / 4641 < 0.05
        for length in ("4", "6"):
            s = res["summary"][cell][length]
            assert s["test_mse"] > 0 and s["ratio_to_chance"] == pytest.approx(s["test_mse"] * 6)
            assert s["learned"] == int(s["test_mse"] < 0.1 / 6)
    for length in ("4", "6"):
        chance = res["chance_mse"][length]
        assert chance["analytic"] == pytest.approx(1 / 6)
        assert chance["empirical_large"] == pytest.approx(1 / 6, abs=0.01)
    assert len(res["runs"]) == 4 and _finite_numbers(res["summary"])
    text = (out / "summary.md").read_text()
    assert "1/6" in text and "| LSTM | 32 | 4641 |" in text


def test_loss_surface_synthetic_with_clipping(tmp_path):
    out = tmp_path / "ls"
    assert (
        main(
            [
                "loss-surface",
                "--cell",
                "rnn",
                "--steps",
                "3",
                "--length",
                "6",
                "--batch",
                "16",
                "--points",
                "5",
                "--grid",
                "3",
                "--clipping",
                "--clip-steps",
                "25",
                "--out",
                str(out),
                "--wandb",
                "disabled",
            ]
        )
        == 0
    )
    res = _outputs(out, ["slice-1d", "slice-2d-elman-simple-rnn", "clipping"])
    s = res["summary"]["Elman (simple RNN)"]
    assert s["weights_restored"] is True and s["gradient_norm"] > 0
    sl = res["slices"]["Elman (simple RNN)"]
    assert sl["alphas"][2] == 0.0
    for values in sl["slices_1d"].values():
        assert values[2] == pytest.approx(s["loss_at_origin"], rel=1e-6)  # alpha = 0 is the trained point
    assert sl["grid_2d"][1][1] == pytest.approx(s["loss_at_origin"], rel=1e-6)
    clip = res["summary"]["clipping"]["rnn"]
    assert set(clip) == {"none", "clip 1"}
    for r in clip.values():
        assert isinstance(r["spikes"], int) and r["max_grad_norm"] > 0
        assert r["spikes"] >= int(r["diverged"])  # a NaN/inf loss counts as a spike
    # With clipping every gradient step is at most lr x clip norm long: the run stays finite.
    assert clip["clip 1"]["diverged"] is False and math.isfinite(clip["clip 1"]["final_loss"])
    # The first step is the same with and without clipping: the norms are logged before clipping.
    runs = res["clipping"]["rnn"]
    assert runs["none"]["grad_norm"][0] == pytest.approx(runs["clip 1"]["grad_norm"][0])
    assert "## Gradient clipping" in (out / "summary.md").read_text()


def test_loss_surface_on_a_checkpoint(slots_run, tmp_path):
    out = tmp_path / "ls"
    main(
        [
            "loss-surface",
            "--ckpt",
            str(slots_run / "checkpoints" / "best.ckpt"),
            "--points",
            "3",
            "--grid",
            "2",
            "--batch",
            "4",
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    res = _outputs(out, ["slice-1d", "slice-2d-tiny"])
    s = res["summary"]["tiny"]
    assert s["weights_restored"] is True and s["loss_at_origin"] > 0
    assert res["slices"]["tiny"]["slices_1d"]["random 1"][1] == pytest.approx(s["loss_at_origin"], rel=1e-6)
    assert "validation batch of 4" in (out / "summary.md").read_text()


def test_gates_on_a_sentence(slots_run, tmp_path):
    out = tmp_path / "gates"
    sentence = "i want to fly from boston to denver"
    main(
        [
            "gates",
            "--ckpt",
            str(slots_run / "checkpoints" / "best.ckpt"),
            "--input",
            sentence,
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    res = _outputs(out, ["gates", "gate-histograms"])
    s = res["summary"]
    assert s["steps"] == 8 and s["units"] == 16 and len(res["labels"]) == 8
    assert s["max_abs_difference"] <= 1e-5
    assert set(s["gates"]) == {"input_gate", "forget_gate", "output_gate"}
    for f in s["gates"].values():
        assert 0 <= f["open"] <= 1 and 0 <= f["closed"] <= 1 and f["open"] + f["closed"] <= 1
        assert 0 < f["mean"] < 1
    assert "forget gate" in (out / "summary.md").read_text()


def test_gates_on_an_utterance(speech_ckpt_and_wav, tmp_path):
    ckpt, wav = speech_ckpt_and_wav
    out = tmp_path / "gates"
    main(
        [
            "gates",
            "--ckpt",
            str(ckpt),
            "--input",
            str(wav),
            "--layer",
            "1",
            "--direction",
            "backward",
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    res = _outputs(out, ["gates"])
    # 0.5 s at a 10 ms hop = 51 frames, stacked by 2 -> 26 encoder frames.
    assert res["summary"]["steps"] == 26 and res["summary"]["units"] == 8
    assert res["summary"]["max_abs_difference"] <= 1e-5


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "gf"
    main(
        [
            "gradient-flow",
            "--cell",
            "rnn",
            "--length",
            "5",
            "--hidden",
            "3",
            "--batch",
            "2",
            "--out",
            str(out),
            "--wandb",
            "offline",
        ]
    )
    assert list((out / "wandb").glob("offline-run-*")), list(out.iterdir())


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("rnnlab analyze: error:") and "\n" not in message
    return message


def test_bad_input_gives_one_line_errors(tmp_path, slots_run, gru_slots_ckpt, speech_ckpt_and_wav, capsys):
    missing = str(tmp_path / "missing.ckpt")
    out = ["--out", str(tmp_path / "o"), "--wandb", "disabled"]
    assert "checkpoint not found" in _error(["gates", "--ckpt", missing, "--input", "hello", *out], capsys)
    assert "checkpoint not found" in _error(["gradient-flow", "--ckpt", missing, *out], capsys)
    assert "checkpoint not found" in _error(["loss-surface", "--ckpt", missing, *out], capsys)
    best = str(slots_run / "checkpoints" / "best.ckpt")
    assert "--input" in _error(["gates", "--ckpt", best, *out], capsys)
    assert "needs an LSTM encoder" in _error(
        ["gates", "--ckpt", str(gru_slots_ckpt), "--input", "hi", *out], capsys
    )
    ckpt, _ = speech_ckpt_and_wav
    assert "audio file not found" in _error(
        ["gates", "--ckpt", str(ckpt), "--input", "nope.wav", *out], capsys
    )
    assert "--layer" in _error(["gates", "--ckpt", best, "--input", "hi", "--layer", "3", *out], capsys)
    assert "--lengths" in _error(["long-range", "--lengths", "1", *out], capsys)
    assert "gradient-flow: argument --cell: invalid choice" in _error(["gradient-flow", "--cell", "lstn", *out], capsys)
    assert "required: COMMAND" in _error([], capsys)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in _error(
        ["gates", "--ckpt", str(junk), "--input", "hi", *out], capsys
    )


def _fake_run(root: Path, name: str, f1: list[float], seconds: float, epochs: int) -> Path:
    import yaml

    run = root / name
    run.mkdir()
    model = {"cell": "gru", "bidirectional": True, "hidden_size": 32, "num_layers": 1}
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": model}}))
    (run / "summary.json").write_text(
        json.dumps({"monitor": "val/slot_f1", "train_time_s": seconds, "epochs": epochs})
    )
    rows = "".join(f"{e},{v},90.0,50.0\n" for e, v in enumerate(f1))
    (run / "metrics.csv").write_text("epoch,val/slot_f1,val/intent_acc,val/exact_match\n" + rows)
    return run


def test_summarize_groups_runs_that_differ_only_in_seed(tmp_path, slots_run, capsys):
    import shutil

    from pipelines.commands.summarize import main as summarize_main
    from pipelines.commands.summarize import seed_group, summarize_seed_groups

    assert seed_group("bigru-seed12") == ("bigru", 12) and seed_group("bigru") == ("bigru", None)
    runs = [
        _fake_run(tmp_path, "bigru-seed1", [80.0, 90.0], 100.0, 10),
        _fake_run(tmp_path, "bigru-seed2", [94.0, 92.0], 120.0, 10),
        _fake_run(tmp_path, "bigru-seed3", [95.0], 110.0, 10),
        _fake_run(tmp_path, "single", [70.0], 50.0, 5),
    ]
    trained = tmp_path / "tiny-seed7"
    shutil.copytree(slots_run, trained)
    table, data = summarize_seed_groups([*runs, trained])
    g = data["bigru"]
    assert g["seeds"] == [1, 2, 3] and g["metrics"]["val/slot_f1"]["n"] == 3
    # Best epoch of each run (by the monitor): 90, 94, 95 -> mean 93, sample std sqrt(7).
    assert g["metrics"]["val/slot_f1"]["mean"] == pytest.approx(93.0)
    assert g["metrics"]["val/slot_f1"]["std"] == pytest.approx(math.sqrt(7.0))
    assert g["seconds_per_epoch"] == pytest.approx(11.0) and g["params"] == []
    assert data["single"]["seeds"] == [] and data["single"]["seconds_per_epoch"] == pytest.approx(10.0)
    # The parameter count comes from the run's checkpoint.
    from pipelines.base import load_module

    model = load_module(slots_run / "checkpoints" / "best.ckpt")
    assert data["tiny"]["params"] == [sum(p.numel() for p in model.parameters())]
    lines = table.splitlines()
    assert lines[0].startswith("| runs | model | n | seeds | val/slot_f1 (mean ± std)")
    assert lines[2].startswith("| bigru-seed* | BiGRU-32 x1 | 3 | 1,2,3 | 93.00 ± 2.65 | 90.00 ± 0.00 |")
    assert "| single | BiGRU-32 x1 | 1 | - | 70.00 |" in table
    assert summarize_main(["--group-seeds", *map(str, runs)]) == 0
    assert "| bigru-seed* |" in capsys.readouterr().out
