"""The shipped models, as a new user meets them: loaded by name, listening to real recordings kept in the tests
(tests/fixtures/audio), and, where ../shared/data is present, reproducing their manifest's validation numbers
(slow: ``make test-all``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.inference import load_model, read_audio
from pipelines.inference.shipped import available
from pipelines.training.metrics import wer_cer
from tests.conftest import SHARED_DATA

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
ARCTIC_TEXT = "gregson shoved back his chair and rose to his feet"


def shipped(name: str):
    found = available().get(name)
    if found is None:
        pytest.skip(f"shipped model {name!r} is not installed")
    return load_model(name)


def test_english_reads_a_real_sentence():
    model = shipped("english")
    (text,) = model.transcribe_waveforms([read_audio(AUDIO / "arctic_a0012.ogg", model.sample_rate)])
    assert wer_cer([text], [ARCTIC_TEXT])["cer"] < 0.3, text  # "greson solte bac his char and ros to his bet"


def test_english_stream_reads_it_live_as_offline():
    from pipelines.inference import make_streamer

    model = shipped("english-stream")
    wav = read_audio(AUDIO / "arctic_a0012.ogg", model.sample_rate)
    streamer = make_streamer(model)
    for start in range(0, wav.numel(), 3200):  # 200 ms chunks
        streamer.accept(wav[start:start + 3200])
    live = streamer.finish()
    (offline,) = model.transcribe_waveforms([wav], batch_size=1)
    assert live == offline
    assert wer_cer([live], [ARCTIC_TEXT])["cer"] < 0.3, live


def test_keywords_hears_stop_from_an_unseen_speaker():
    model = shipped("keywords")
    probs = model.class_probabilities([read_audio(AUDIO / "stop.ogg", model.sample_rate)])[0]
    assert model.labels[int(probs.argmax())] == "stop"  # right, if unsure (0.25, then "on" at 0.21)


def test_digits_reads_an_unseen_speaker(tmp_path):
    # As its card says to decode it: a beam over a closed digit vocabulary (greedy spells "thie seve one").
    from pipelines.cli import main
    from pipelines.inference import make_decoder

    model = shipped("digits")
    lm = tmp_path / "digits.arpa"
    words = Path(__file__).resolve().parents[2] / "pipelines" / "configs" / "lm" / "digit-words.txt"
    assert main(["build-lm", str(words), "--order", "1", "--closed-vocabulary",
                 "--out", str(lm)]) == 0
    decoder = make_decoder(model, beam=8, lm=str(lm))
    wav = read_audio(AUDIO / "george_371.ogg", model.sample_rate)
    (text,) = model.transcribe_waveforms([wav], decoder=decoder)
    assert text == "three seven one"


def test_snips_tags_a_request():
    model = shipped("snips")
    (res,) = model.tag_sentences(["play some jazz music by miles davis"])
    assert res["intent"] == "PlayMusic"
    assert "B-artist" in res["tags"] and res["tags"][res["words"].index("miles")] == "B-artist"


def test_g2p_pronounces_words_it_never_trained_on_like_cmudict():
    model = shipped("g2p")
    # validation words of the CMUdict split it was trained with (seed 0), never seen in training
    unseen = {"accident": "AE K S AH D AH N T", "describe": "D IH S K R AY B", "bedwell": "B EH D W EH L",
              "starlight": "S T AA R L AY T"}
    assert model.pronounce(list(unseen)) == list(unseen.values())
    assert model.pronounce(["speech"]) == ["S P IY CH"]  # a training word


def _validate(name: str, tmp_path) -> dict:
    from pipelines.cli import main

    out = tmp_path / f"{name}.json"
    code = main(["validate", "--ckpt", name, "--trainer.enable_progress_bar=false", f"--run.root={tmp_path}",
                 f"--run.metrics_file={out}"])
    assert code == 0
    return json.loads(out.read_text())["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(available()))
def test_manifest_metrics_are_reproduced(name, tmp_path, monkeypatch):
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the configs name ../shared/data relative to the repo
    entry = available()[name].entry
    got = _validate(name, tmp_path)
    for key, value in entry["metrics"].items():
        if key in got:
            assert got[key] == pytest.approx(value, abs=0.05), key
