"""Connected-digit strings from FSDD: compositions, lengths up front, determinism, per-epoch redraw, DataModule."""

import numpy as np
import pytest
import soundfile as sf
import torch

from data.digits import (
    DEFAULT_FSDD_DIR,
    DIGIT_WORDS,
    ConnectedDigitsDataset,
    DigitRecording,
    fsdd_digits_dataset,
    load_fsdd,
)
from data.errors import DataError
from data.speech import SpeechDataModule
from data.text import CharTokenizer
from tests.conftest import REPO, shared_dataset


@pytest.fixture(scope="module")
def fsdd():
    return shared_dataset("fsdd")


@pytest.fixture(scope="module")
def fsdd_test_split(fsdd):
    return load_fsdd(fsdd, "test")


def _digits(n, sample_rate=8000, seed=0, stream=1, recs=None, **kw):
    return ConnectedDigitsDataset(recs, CharTokenizer(), num_utterances=n, sample_rate=sample_rate, seed=seed,
                                  stream=stream, **kw)


def test_compositions_one_speaker_2_to_7_digits_text_matches_labels(fsdd_test_split):
    assert len(fsdd_test_split) == 250 and {r.speaker for r in fsdd_test_split} >= {"george", "jackson"}
    ds = _digits(60, recs=fsdd_test_split)
    tok = CharTokenizer()
    counts = set()
    for i in range(len(ds)):
        c = ds.composition(i)
        recs = [ds.recordings[j] for j in c.recordings]
        counts.add(len(recs))
        assert 2 <= len(recs) <= 7 and len(c.pauses) == len(recs) + 1
        assert {r.speaker for r in recs} == {c.speaker}
        assert [r.label for r in recs] == list(c.labels)
        # FSDD file names are {label}_{speaker}_{index}.wav: the text follows the files actually used
        assert [int(r.path.rsplit("/", 1)[-1].split("_")[0]) for r in recs] == list(c.labels)
        assert ds.text(i) == " ".join(DIGIT_WORDS[r.label] for r in recs)
    assert min(counts) == 2 and max(counts) == 7
    item = ds[3]
    assert tok.decode(item["tokens"]) == item["text"] == ds.text(3)
    assert set(item["text"].split()) <= set(DIGIT_WORDS) and DIGIT_WORDS[0] == "zero"


def test_lengths_known_up_front_and_equal_waveform_lengths(fsdd_test_split):
    ds = _digits(12, sample_rate=16000, recs=fsdd_test_split)
    lengths = ds.lengths  # before anything is resampled or composed into audio
    assert not ds._resampled and len(lengths) == 12 and all(isinstance(n, int) and n > 0 for n in lengths)
    for i in range(len(ds)):
        wav = ds[i]["waveform"]
        assert wav.dtype == torch.float32 and wav.ndim == 1 and wav.numel() == lengths[i]
        assert torch.isfinite(wav).all() and 0.01 < wav.abs().max() <= 1.0
    # 2 digits (>= 0.13 s each once trimmed) and 3 pauses of >= 0.05 s at least
    assert min(lengths) >= 16000 * (2 * 0.13 + 3 * 0.05) - 3


def test_validation_is_deterministic_and_differs_from_test(fsdd_test_split):
    a, b = _digits(20, recs=fsdd_test_split), _digits(20, recs=fsdd_test_split)
    assert a.compositions == b.compositions and a.lengths == b.lengths
    assert torch.equal(a[5]["waveform"], b[5]["waveform"]) and a[5]["id"] == b[5]["id"]
    a.set_epoch(3)  # evaluation strings stay fixed across epochs
    assert a.compositions == b.compositions and torch.equal(a[5]["waveform"], b[5]["waveform"])
    test = _digits(20, recs=fsdd_test_split, stream=2)
    assert [c.text for c in test.compositions] != [c.text for c in a.compositions]


def test_training_strings_are_redrawn_per_epoch(fsdd_test_split):
    ds = _digits(20, recs=fsdd_test_split, stream=0, redraw_per_epoch=True)
    first, first_lengths = ds.compositions, ds.lengths
    ds.set_epoch(1)
    assert ds.compositions != first and ds.lengths != first_lengths
    assert all(ds[i]["waveform"].numel() == ds.lengths[i] for i in range(0, 20, 5))
    assert ds[0]["id"].startswith("digits-e1-")
    ds.set_epoch(0)  # a function of (seed, epoch): back to the first epoch's strings
    assert ds.compositions == first and ds.lengths == first_lengths


def test_trims_silence_and_skips_unreadable_recordings(tmp_path, caplog):
    sr = 8000
    t = np.arange(int(0.4 * sr)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    padded = np.concatenate([np.zeros(int(0.3 * sr), np.float32), tone, np.zeros(int(0.5 * sr), np.float32)])
    sf.write(tmp_path / "3_amy_0.wav", padded, sr)
    sf.write(tmp_path / "5_amy_0.wav", tone, sr)
    (tmp_path / "7_amy_0.wav").write_bytes(b"not audio")
    recs = [DigitRecording(str(tmp_path / f"{d}_amy_0.wav"), d, "amy") for d in (3, 5, 7)]
    seen = []

    class Skips:
        def skip(self, reason, message):
            seen.append((reason, message))

    ds = _digits(10, recs=recs, skips=Skips())
    assert [r for r, _ in seen] == ["unreadable"] and "7_amy_0.wav" in seen[0][1] and "7_amy_0.wav" in caplog.text
    assert len(ds.recordings) == 2 and all(set(c.labels) <= {3, 5} for c in ds.compositions)
    trimmed = ds._audio[0]
    assert len(tone) <= len(trimmed) <= len(tone) + int(0.06 * sr)  # the 0.8 s of silence is gone (20 ms margins)
    assert abs(len(ds._audio[1]) - len(tone)) < sr // 100  # already tight: (nearly) untouched


def test_bad_arguments_and_missing_copy_give_data_errors(tmp_path):
    missing = tmp_path / "no-fsdd-here"
    with pytest.raises(DataError, match="no-fsdd-here"):
        load_fsdd(missing, "train")
    dm = SpeechDataModule(dataset="fsdd-digits", data_dir=str(missing))
    with pytest.raises(DataError, match="no-fsdd-here") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="digits per utterance"):
        _digits(4, recs=[DigitRecording("x.wav", 1, "a")], digits=(3, 2))
    with pytest.raises(DataError, match="no FSDD recordings"):
        _digits(4, recs=[])


def test_datamodule_fsdd_digits_batches_decode_to_texts(fsdd):
    dm = SpeechDataModule(dataset="fsdd-digits", data_dir=str(fsdd), digits_size=(24, 10, 8), batch_size=8,
                          digits_per_utterance=(2, 4))
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 24 and len(val) == 10 and "test" not in dm.datasets
    assert {r.path.rsplit("/", 2)[-2] for r in train.recordings} == {"train"}
    assert {r.path.rsplit("/", 2)[-2] for r in val.recordings} == {"test"}
    assert train.redraw_per_epoch and not val.redraw_per_epoch
    assert all(2 <= len(c.labels) <= 4 for c in train.compositions)
    loader = dm.train_dataloader()
    assert dm._samplers["train"].lengths == train.lengths
    batch = next(iter(loader))
    b = len(batch["ids"])
    assert b == 8 and batch["lengths"].max() == batch["waveforms"].shape[1]
    for k in range(b):
        n = batch["target_lengths"][k]
        assert dm.tokenizer.decode(batch["targets"][k, :n].tolist()) == batch["texts"][k]
        assert set(batch["texts"][k].split()) <= set(DIGIT_WORDS)
    texts = [t for vb in dm.val_dataloader() for t in vb["texts"]]
    assert sorted(texts) == sorted(val.text(i) for i in range(len(val)))
    dm.setup("test")
    test = dm.datasets["test"]
    assert len(test) == 8 and [c.text for c in test.compositions] != [c.text for c in val.compositions][:8]
    assert dm.vocab["kind"] == "char" and not dm.skip_report


def test_fsdd_digits_dataset_defaults_to_the_shared_copy_location(fsdd, monkeypatch):
    if (REPO / DEFAULT_FSDD_DIR).resolve() != fsdd.resolve():
        pytest.skip(f"the FSDD copy {fsdd} is not at {DEFAULT_FSDD_DIR} relative to the repository")
    monkeypatch.chdir(REPO)  # make targets run from the repository root
    ds = fsdd_digits_dataset("val", CharTokenizer(), sizes=(5, 3, 2), sample_rate=8000)
    assert len(ds) == 3 and ds.name == "fsdd-digits-val"


def test_holdout_speaker_never_trains_and_alone_validates(fsdd):
    tok = CharTokenizer()
    kw = {"data_dir": fsdd, "sizes": (60, 40, 40), "sample_rate": 8000, "holdout_speakers": ["george"]}
    train = fsdd_digits_dataset("train", tok, **kw)
    val = fsdd_digits_dataset("val", tok, **kw)
    assert "george" not in train.speakers and len(train.speakers) == 4
    assert val.speakers == ["george"] and {c.speaker for c in val.compositions} == {"george"}
    # Every recording of the held-out speaker is usable for validation: FSDD train and test (50 per digit).
    assert len(val.recordings) == 500
    with pytest.raises(DataError, match=r"\['nobody'\] not in FSDD"):
        fsdd_digits_dataset("val", tok, **{**kw, "holdout_speakers": ["nobody"]})
