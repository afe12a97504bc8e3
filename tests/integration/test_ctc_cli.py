"""CTC end to end through `rnnlab`: fit a tiny model, then transcribe files and test from the checkpoint."""

import json

import pytest

from tests.integration.helpers import read_json, rnnlab


@pytest.fixture(scope="module")
def ctc_run(speech_corpus_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("ctc-runs")
    rnnlab("fit", "-c", "defaults", "-c", "tiny/ctc.yaml", f"--data.init_args.data_dir={speech_corpus_dir}",
           f"--run.root={runs}", "--run.name=tiny", "--run.average_best=2")
    return runs / "tiny"


def test_fit_saves_checkpoint_with_tokenizer(ctc_run):
    import torch

    ckpt = torch.load(ctc_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["vocab"]["kind"] == "char"
    assert ckpt["rnnlab"]["class_path"] == "pipelines.ctc.CTCSpeechRecognizer"
    summary = read_json(ctc_run / "summary.json")
    assert 0 <= summary["val/cer"] and summary["val/unalignable"] == 0


def test_average_best_writes_and_validates_the_mean_of_the_two_best(ctc_run):
    import torch

    kept = sorted((ctc_run / "checkpoints" / "best-2").glob("*.ckpt"))
    assert len(kept) == 2  # tiny/ctc trains 2 epochs: both are kept
    sds = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in kept]
    avg = torch.load(ctc_run / "checkpoints" / "averaged.ckpt", map_location="cpu", weights_only=True)
    for k, v in avg["state_dict"].items():
        if v.is_floating_point():
            assert torch.allclose(v, (sds[0][k] + sds[1][k]) / 2, atol=1e-6), k
    assert "optimizer_states" not in avg and avg["rnnlab"]["class_path"] == "pipelines.ctc.CTCSpeechRecognizer"
    summary = read_json(ctc_run / "summary.json")
    assert summary["averaged"]["checkpoint"].endswith("averaged.ckpt") and len(summary["averaged"]["from"]) == 2
    assert 0 <= summary["averaged"]["val/cer"]
    assert read_json(ctc_run / "validate_metrics-averaged.json")["checkpoint"].endswith("averaged.ckpt")


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_average_best_of_one_is_an_error(tmp_path, speech_corpus_dir):
    proc = rnnlab("fit", "-c", "defaults", "-c", "tiny/ctc.yaml", f"--data.init_args.data_dir={speech_corpus_dir}",
                  f"--run.root={tmp_path}", "--run.average_best=1", check=False)
    assert proc.returncode == 2 and "run.average_best: 1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_transcribe_round_trip_from_checkpoint(ctc_run, speech_corpus_dir):
    ckpt = str(ctc_run / "checkpoints" / "best.ckpt")
    val = speech_corpus_dir / "validation"
    files = sorted(val.glob("*.flac"))
    proc = rnnlab("transcribe", "--ckpt", ckpt, str(val))
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(f) for f in files]
    assert "RTF" in proc.stderr
    rows = [json.loads(x) for x in rnnlab("transcribe", "--ckpt", ckpt, str(files[0]), "--json", "--beam", "4")
            .stdout.strip().splitlines()]
    assert rows[0]["path"] == str(files[0]) and isinstance(rows[0]["text"], str)
    # In-process transcription of the same files gives the same greedy text as the command line.
    from pipelines.base import load_module

    model = load_module(ckpt)
    texts = model.transcribe_files([str(f) for f in files])
    assert texts == [line.split("\t")[1] if "\t" in line else "" for line in lines]


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_transcribe_bad_inputs(ctc_run, tmp_path):
    ckpt = str(ctc_run / "checkpoints" / "best.ckpt")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    proc = rnnlab("transcribe", "--ckpt", ckpt, str(bad), check=False)
    assert proc.returncode == 1 and "bad.wav" in proc.stderr and "Traceback" not in proc.stderr
    proc = rnnlab("transcribe", "--ckpt", str(tmp_path / "none.ckpt"), str(bad), check=False)
    assert proc.returncode != 0 and "checkpoint not found" in proc.stderr
    proc = rnnlab("transcribe", "--ckpt", ckpt, str(bad), "--lm", str(tmp_path / "none.arpa"), check=False)
    assert proc.returncode != 0 and "language model not found" in proc.stderr


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_test_command_writes_wer_cer_json(ctc_run, tmp_path):
    out = tmp_path / "metrics.json"
    proc = rnnlab("test", "--ckpt", str(ctc_run / "checkpoints" / "best.ckpt"), f"--run.metrics_file={out}")
    assert "test/cer" in proc.stdout
    metrics = read_json(out)["metrics"]
    assert metrics["test/cer"] >= 0 and metrics["test/wer"] >= 0


def test_build_lm_and_beam_lm_decoding_in_validate(ctc_run, speech_corpus_dir, tmp_path):
    from modules.ngram_lm import NGramLM

    arpa = tmp_path / "lm.arpa"
    rnnlab("build-lm", str(speech_corpus_dir / "train" / "metadata.jsonl"), "--order", "2", "--out", str(arpa))
    lm = NGramLM.from_arpa(arpa)
    assert lm.order == 2 and len(lm.vocab) > 10
    out = tmp_path / "val.json"
    rnnlab("validate", "--ckpt", str(ctc_run / "checkpoints" / "best.ckpt"), f"--run.metrics_file={out}",
           "--decode.beam_size=4", f"--decode.lm={arpa}")
    assert read_json(out)["metrics"]["val/cer"] >= 0
    proc = rnnlab("validate", "--ckpt", str(ctc_run / "checkpoints" / "best.ckpt"),
                  f"--decode.lm={tmp_path / 'missing.arpa'}", check=False)
    assert proc.returncode == 2 and "language model not found" in proc.stderr.strip().splitlines()[-1]
