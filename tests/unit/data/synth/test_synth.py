"""Tests for data.synth: eSpeak NG synthesis, the text generator and the embedded corpus builder."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import synth

ALLOWED = re.compile(r"^[a-z']+( [a-z']+)*$")


def _check_timings(words, text: str, duration: float) -> None:
    assert [w for w, _, _ in words] == text.split()
    prev_start, prev_end = 0.0, 0.0
    for _w, s, e in words:
        assert 0.0 <= s <= e <= duration + 1e-6
        assert s >= prev_start - 1e-9 and s >= prev_end - 1e-6  # monotonic, no overlap
        prev_start, prev_end = s, e


# ------------------------------------------------------------------------------------------- synthesis


def test_synthesize_returns_speech_with_word_timings():
    text = "the red cat sees a small dog"
    audio, sr, words = synth.synthesize(text)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert sr == synth.espeak_sample_rate() == 22050
    duration = len(audio) / sr
    assert 0.3 < duration < 6.0
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent
    assert len(words) == len(text.split())
    _check_timings(words, text, duration)
    assert words[0][1] < 0.2  # leading silence is trimmed
    assert words[-1][2] > 0.7 * duration
    assert len({round(s, 3) for _, s, _ in words}) == len(words)  # one distinct start per word
    # Every word's span contains sound.
    for _w, s, e in words:
        seg = audio[int(s * sr) : int(e * sr)]
        assert seg.size > 0 and np.abs(seg).max() > 0.02


def test_synthesize_resamples_and_handles_apostrophes():
    text = "we don't have any eggs at seven o'clock"
    audio, sr, words = synth.synthesize(text, sample_rate=16000, voice="en-gb-x-rp")
    assert sr == 16000
    _check_timings(words, text, len(audio) / sr)
    ref, ref_sr, ref_words = synth.synthesize(text, voice="en-gb-x-rp")
    assert abs(len(audio) / sr - len(ref) / ref_sr) < 0.05


def test_voice_and_rate_change_the_audio():
    text = "three seven zero nine"
    base, sr, _ = synth.synthesize(text, voice="en-us", rate=175)
    female, _, _ = synth.synthesize(text, voice="en-us+f2", rate=175)
    n = min(len(base), len(female))
    assert len(base) != len(female) or not np.allclose(base[:n], female[:n], atol=1e-3)
    slow, _, slow_words = synth.synthesize(text, rate=130)
    fast, _, fast_words = synth.synthesize(text, rate=210)
    assert len(fast) < 0.85 * len(slow)
    assert fast_words[-1][1] < slow_words[-1][1]
    low, _, _ = synth.synthesize(text, pitch=20)
    high, _, _ = synth.synthesize(text, pitch=80)
    assert not np.array_equal(low[: min(len(low), len(high))], high[: min(len(low), len(high))])


def test_all_corpus_voices_load():
    for voice in synth.VOICES:
        audio, sr, words = synth.synthesize("one two", voice=voice)
        assert len(audio) / sr > 0.2 and len(words) == 2, voice


def test_synthesize_errors():
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("  ")
    with pytest.raises(ValueError, match="unknown eSpeak NG voice"):
        synth.synthesize("hello", voice="xx-not-a-voice")
    with pytest.raises(ValueError, match="variant"):
        synth.synthesize("hello", voice="en-us+no_such_variant")
    # The engine is still usable after errors.
    audio, _, _ = synth.synthesize("hello", voice="en-us")
    assert audio.size > 0


def test_synthesize_is_thread_safe():
    texts = synth.generate_texts(8, seed=5)
    results: dict[int, tuple] = {}

    def work(i: int) -> None:
        results[i] = synth.synthesize(texts[i], voice=synth.VOICES[i % len(synth.VOICES)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, text in enumerate(texts):
        audio, sr, words = results[i]
        assert [w for w, _, _ in words] == text.split()
        _check_timings(words, text, len(audio) / sr)


def test_resample_matches_torchaudio():
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torchaudio.functional")
    x = np.random.default_rng(0).standard_normal(22050 + 123).astype(np.float32) * 0.3
    for orig, new in ((22050, 16000), (22050, 8000), (16000, 22050)):
        ours = synth.resample(x, orig, new)
        ref = functional.resample(torch.from_numpy(x), orig, new).numpy()
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4)


# -------------------------------------------------------------------------------------------- text


def test_text_generator_output_is_normalised_deterministic_and_varied():
    texts = synth.generate_texts(500, seed=3)
    assert all(ALLOWED.match(t) for t in texts)
    assert all(synth.normalize_text(t) == t for t in texts)
    assert texts == synth.generate_texts(500, seed=3)
    assert texts != synth.generate_texts(500, seed=4)
    assert len(set(texts)) > 400
    gen = synth.TextGenerator(seed=0)
    kinds = {gen.sample_with_kind()[1] for _ in range(200)}
    assert kinds == {"digits", "number", "sentence"}
    lengths = [len(t.split()) for t in texts]
    assert min(lengths) >= 1 and max(lengths) <= 16


def test_vocabulary_covers_the_alphabet():
    vocab = synth.vocabulary(n_samples=5000)
    assert 150 <= len(vocab) <= 450
    assert set("".join(vocab)) - {"'"} == set("abcdefghijklmnopqrstuvwxyz")
    assert "o'clock" in vocab and "don't" in vocab


def test_evaluation_text_is_held_out_from_training():
    train = set(synth.generate_texts(3000, seed=0, split="train"))
    validation = synth.generate_texts(300, seed=0, split="validation")
    test = synth.generate_texts(300, seed=0, split="test")
    assert not train & set(validation) and not train & set(test)
    assert not set(validation) & set(test)
    train_words = {w for t in train for w in t.split()}
    assert {w for t in validation + test for w in t.split()} <= train_words


def test_number_to_words_and_normalize():
    assert synth.number_to_words(0) == "zero"
    assert synth.number_to_words(13) == "thirteen"
    assert synth.number_to_words(40) == "forty"
    assert synth.number_to_words(241) == "two hundred and forty one"
    assert synth.number_to_words(241, british_and=False) == "two hundred forty one"
    assert synth.number_to_words(3005) == "three thousand and five"
    assert synth.number_to_words(12500) == "twelve thousand five hundred"
    with pytest.raises(ValueError):
        synth.number_to_words(-1)
    assert synth.normalize_text("  Turn the LIGHTS off, it's 7!  ") == "turn the lights off it's"


# ------------------------------------------------------------------------------------------ corpus


def test_build_corpus_layout_metadata_datasets_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root = tmp_path / "corpus"
    counts = {"train": 12, "validation": 4, "test": 4}
    out = synth.build_corpus(root, n_train=12, n_validation=4, n_test=4, seed=1, workers=2, progress=False)
    assert out == root.absolute()
    assert not list(tmp_path.glob("corpus.tmp-*"))
    marker = json.loads((root / ".complete").read_text())
    assert marker["params"] == {
        "version": synth.CORPUS_VERSION,
        "n_train": 12,
        "n_validation": 4,
        "n_test": 4,
        "seed": 1,
        "sample_rate": 16000,
    }

    all_text = {}
    for split, n in counts.items():
        rows = synth.load_metadata(root, split)
        assert len(rows) == n == len(list((root / split).glob("*.flac")))
        all_text[split] = {r["text"] for r in rows}
        for row in rows:
            assert {"file_name", "text", "id", "duration", "voice", "words"} <= row.keys()
            assert row["id"].startswith(split + "-") and row["voice"] in synth.VOICES
            assert ALLOWED.match(row["text"])
            audio, sr = sf.read(root / split / row["file_name"], dtype="float32")
            assert sr == 16000 and audio.ndim == 1
            assert abs(len(audio) / sr - row["duration"]) < 1e-3
            assert 0.3 < row["duration"] < 8.0
            assert 0.01 < np.abs(audio).max() <= 1.0
            words = [(w["word"], w["start"], w["end"]) for w in row["words"]]
            _check_timings(words, row["text"], row["duration"])
            assert words[0][1] >= 0.04  # leading silence was added
        assert len({r["id"] for r in synth.load_metadata(root, split)}) == n
    assert not all_text["train"] & (all_text["validation"] | all_text["test"])

    import datasets

    # datasets 5.x imports torchcodec.encoders in Audio.encode_example even for file paths with
    # decode=False; where torchcodec is absent, an import stub shows the layout itself loads.
    if importlib.util.find_spec("torchcodec") is None:
        stub, encoders = types.ModuleType("torchcodec"), types.ModuleType("torchcodec.encoders")
        encoders.AudioEncoder = None
        stub.encoders = encoders
        monkeypatch.setitem(sys.modules, "torchcodec", stub)
        monkeypatch.setitem(sys.modules, "torchcodec.encoders", encoders)
    ds = datasets.load_dataset("audiofolder", data_dir=str(root), cache_dir=str(tmp_path / "hf" / "datasets"))
    assert {k: len(v) for k, v in ds.items()} == counts
    train = ds["train"].cast_column("audio", datasets.Audio(decode=False))
    row = train[0]
    assert row["text"] and row["words"][0]["word"] == row["text"].split()[0]
    src = row["audio"]["bytes"] or row["audio"]["path"]
    audio, sr = sf.read(src if isinstance(src, str) else io.BytesIO(src))
    assert sr == 16000 and abs(len(audio) / sr - row["duration"]) < 1e-3

    # load_corpus: the same columns without torchcodec.
    loaded = synth.load_corpus(root)
    assert {k: len(v) for k, v in loaded.items()} == counts
    assert loaded["test"].column_names == ds["test"].column_names
    assert list(loaded["validation"]["text"]) == list(ds["validation"]["text"])
    path = loaded["validation"][1]["audio"]["path"]
    assert Path(path).is_absolute() and sf.info(path).samplerate == 16000

    # Cached: a second call returns at once and rewrites nothing.
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    t0 = time.perf_counter()
    assert synth.build_corpus(root, n_train=12, n_validation=4, n_test=4, seed=1, workers=2) == out
    assert time.perf_counter() - t0 < 0.5
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamp


def test_build_corpus_rebuilds_on_new_params_and_refuses_foreign_dirs(tmp_path):
    root = tmp_path / "c"
    synth.build_corpus(root, n_train=2, n_validation=1, n_test=1, workers=1, progress=False)
    synth.build_corpus(root, n_train=3, n_validation=1, n_test=1, workers=1, progress=False, sample_rate=8000)
    assert json.loads((root / ".complete").read_text())["params"]["n_train"] == 3
    assert len(synth.load_metadata(root, "train")) == 3
    assert sf.info(str(next((root / "train").glob("*.flac")))).samplerate == 8000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        synth.build_corpus(foreign, n_train=1, n_validation=1, n_test=1, workers=1, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_default_corpus_dir_and_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    assert synth.default_corpus_dir() == tmp_path / "cache" / f"embedded_speech_v{synth.CORPUS_VERSION}"
    out = tmp_path / "hello.wav"
    assert synth.main(["--say", "hello world", "--out", str(out)]) == 0
    info = sf.info(str(out))
    assert info.samplerate == 16000 and info.duration > 0.3
    assert (
        Path(synth.ensure_default_corpus(n_train=1, n_validation=1, n_test=1, workers=1, progress=False))
        == synth.default_corpus_dir().absolute()
    )
