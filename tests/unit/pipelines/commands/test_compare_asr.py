"""`rnnlab compare-asr`: scores, table and JSON with a fake peer and a tiny checkpoint; one-line errors."""

import json
import sys

import pytest
import soundfile as sf
import torch

from pipelines.commands import compare_asr
from pipelines.commands.compare_asr import main, markdown_table
from pipelines.training.metrics import wer_cer
from tests.conftest import shared_dataset

ROWS = [("a.wav", "The cat sat.", 16000, 1.0), ("b.flac", "A dog -- ran!", 8000, 0.5)]


class FakePeer:
    """Says the same sentence, in upper case, whatever it hears."""

    name = "fake"

    def transcribe(self, waveforms):
        return ["THE CAT SAT" for _ in waveforms]


def exit_code(argv):
    """``main``'s status, also when it ends by ``SystemExit`` (the errors)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture
def corpus(tmp_path):
    """An audiofolder with a validation split of two files (one at 8 kHz) and mixed-case transcripts."""
    split = tmp_path / "corpus" / "validation"
    split.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    with open(split / "metadata.jsonl", "w") as f:
        for name, text, rate, seconds in ROWS:
            sf.write(split / name, (0.1 * torch.randn(int(rate * seconds), generator=gen)).numpy(), rate)
            f.write(json.dumps({"file_name": name, "text": text}) + "\n")
    return tmp_path / "corpus"


@pytest.fixture
def fake_peer(monkeypatch):
    monkeypatch.setattr(compare_asr, "PEERS", {"pocketsphinx": FakePeer})


def test_table_and_json_score_the_peer_against_normalised_references(corpus, fake_peer, tmp_path, capsys):
    out = tmp_path / "r" / "compare.json"
    assert main(["--data", f"toy={corpus}", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0] == "| corpus | system | utterances | hours | CER % | WER % | RTF |"
    assert stdout[2].startswith("| toy | fake | 2 | 0.000 | ")
    (r,) = json.loads(out.read_text())["results"]
    # "a dog ran" against "the cat sat": three substituted words of six in all.
    assert r["wer"] == pytest.approx(0.5)
    assert r["cer"] == pytest.approx(wer_cer(["the cat sat"] * 2, ["the cat sat", "a dog ran"])["cer"])
    assert r["utterances"] == 2 and r["audio_hours"] == pytest.approx(1.5 / 3600)
    assert r["rtf"] == pytest.approx(r["decode_s"] / 1.5) and r["cpu_s"] >= 0
    assert r["hypotheses"] == {"a.wav": "the cat sat", "b.flac": "the cat sat"}


def test_limit_takes_the_first_rows(corpus, fake_peer, tmp_path):
    out = tmp_path / "c.json"
    assert main(["--data", str(corpus), "--limit", "1", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["corpus"] == "corpus" and r["utterances"] == 1 and r["cer"] == 0.0


def test_conditions_score_degraded_copies_of_each_corpus(corpus, tmp_path):
    class Echo:
        """Reports the loudness of what it hears, so a degraded copy is seen to differ from the clean one."""

        name = "echo"

        def transcribe(self, waveforms):
            return [f"{float(w.abs().mean()):.4f}" for w in waveforms]

    import pipelines.commands.compare_asr as ca

    ca.PEERS["echo"] = Echo
    try:
        out = tmp_path / "c.json"
        assert main(["--data", f"toy={corpus}", "--peer", "echo", "--conditions", "clean,codec,reverb:0.3",
                     "--json", str(out)]) == 0
    finally:
        del ca.PEERS["echo"]
    results = json.loads(out.read_text())["results"]
    assert [r["corpus"] for r in results] == ["toy", "toy/codec", "toy/reverb:0.3"]
    clean, codec, reverb = (r["hypotheses"] for r in results)
    assert clean != codec and clean != reverb and clean.keys() == codec.keys()


def test_markdown_table_formats_percentages_and_rtf():
    row = {"corpus": "arctic", "system": "rnnlab", "utterances": 3, "audio_hours": 0.01234, "cer": 0.125,
           "wer": 0.2304, "rtf": 0.04567}
    assert markdown_table([row]).splitlines()[2] == "| arctic | rnnlab | 3 | 0.012 | 12.5 | 23.0 | 0.046 |"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer
    from tests.fixtures.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=16, hidden_size=8, num_layers=1,
                                stack_frames=2, spec_augment=False, dropout=0.0)
    return save_checkpoint(model, tmp_path_factory.mktemp("ctc") / "ctc.ckpt")


def test_checkpoint_row_comes_first_and_is_the_models_own_transcription(corpus, fake_peer, tiny_ckpt, tmp_path):
    from data.audio import AudioRef, load_audio
    from data.text import normalize_text
    from pipelines.base import load_module

    out = tmp_path / "c.json"
    assert main(["--ckpt", tiny_ckpt, "--data", f"toy={corpus}", "--beam", "2", "--json", str(out)]) == 0
    rnnlab, peer = json.loads(out.read_text())["results"]
    assert (rnnlab["system"], peer["system"]) == ("rnnlab (beam 2)", "fake")
    model = load_module(tiny_ckpt)
    wavs = [load_audio(AudioRef(path=str(corpus / "validation" / name)), 16000) for name, *_ in ROWS]
    expected = model.transcribe_waveforms(wavs, decoder=model.make_decoder(beam_size=2))
    assert list(rnnlab["hypotheses"].values()) == [normalize_text(t, "asr_chars") for t in expected]


def test_missing_pocketsphinx_says_how_to_install_it(corpus, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # makes `import pocketsphinx` raise ImportError
    assert exit_code(["--data", str(corpus)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnlab compare-asr: error: pocketsphinx is not installed")
    assert "pip install 'rnnlab[peers]'" in err and "\n" not in err


def test_unreadable_audio_is_skipped_and_named(corpus, fake_peer, capsys):
    (corpus / "validation" / "b.flac").write_bytes(b"not audio")
    assert main(["--data", str(corpus)]) == 1
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and "b.flac" in captured.err
    assert "| corpus | fake | 1 |" in captured.out


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "x=/no/such/dir"], "data directory not found: /no/such/dir"),
    (["--data", "=CORPUS"], "--data expects NAME=DIR"),
    (["--data", "a=CORPUS", "a=CORPUS"], "corpus name 'a' given twice"),
    (["--data", "CORPUS", "--split", "test"], "no split 'test' found"),
    (["--data", "CORPUS", "--limit", "0"], "--limit must be at least 1"),
    (["--data", "CORPUS", "--ckpt", "/no/such.ckpt"], "checkpoint not found: /no/such.ckpt"),
    (["--data", "CORPUS", "--ckpt", "CORPUS/validation/metadata.jsonl"], "not a readable checkpoint"),
    (["--data", "CORPUS", "--ckpt", "CKPT", "--lm", "/no/lm.arpa"], "language model not found"),
    (["--data", "CORPUS", "--peer", "none"], "nothing to compare: give --ckpt, a --peer, or both"),
    (["--data", "CORPUS", "--conditions", "clean,noisy"], "'noisy' is not one of clean, noise:DB, codec"),
    (["--data", "CORPUS", "--conditions", "noise:loud"], "'noise:loud': 'loud' is not a number"),
    (["--data", "CORPUS", "--conditions", "reverb:0"], "RT60 must be positive"),
    (["--data", "CORPUS", "--conditions", "noise:5", "--noise-dir", "/no/noise"], "noise directory not found"),
])
def test_bad_input_is_one_line_and_exit_2(corpus, fake_peer, tiny_ckpt, capsys, args, message):
    args = [a.replace("CORPUS", str(corpus)).replace("CKPT", tiny_ckpt) for a in args]
    assert exit_code(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnlab compare-asr: error: ") and message in err and "\n" not in err


def test_pocketsphinx_reads_arctic_sentences(tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (optional: pip install 'rnnlab[peers]')")
    arctic = shared_dataset("arctic_kathleen")
    out = tmp_path / "ps.json"
    assert main(["--data", f"arctic={arctic}", "--limit", "2", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["system"] == "pocketsphinx" and r["utterances"] == 2
    assert r["cer"] < 0.3  # it reads ARCTIC at about 12% CER on the full validation split
