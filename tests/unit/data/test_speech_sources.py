"""Kinds of speech source: one corpus, streaming, connected digits and mixtures all go through one setup path, and a
new kind of source plugs in by registering its builder."""

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import Dataset

from data.digits import ConnectedDigitsDataset
from data.errors import DataError
from data.mixture import MixtureDataset
from data.speech import SpeechDataModule, SpeechDataset, SpeechSource
from data.speech_sources import SOURCE_KINDS, register_source_kind
from data.streaming import StreamingSpeechDataset


@pytest.fixture(scope="module")
def fsdd_copy(tmp_path_factory):
    """A tiny FSDD-like copy: ``train/`` and ``test/`` audiofolders of 0.2 s tones for digits 0-2 by two speakers;
    one training file is not audio."""
    root = tmp_path_factory.mktemp("fsdd")
    sr = 8000
    t = np.arange(int(0.2 * sr)) / sr
    for split in ("train", "test"):
        folder = root / split
        folder.mkdir()
        rows = []
        for s, speaker in enumerate(("amy", "bob")):
            for label in range(3):
                name = f"{label}_{speaker}_0.wav"
                sf.write(folder / name, (0.3 * np.sin(2 * np.pi * (300 + 100 * label + 20 * s) * t)).astype("float32"),
                         sr)
                rows.append({"file_name": name, "label": label, "speaker": speaker})
        if split == "train":
            (folder / "2_bob_1.wav").write_bytes(b"not audio")
            rows.append({"file_name": "2_bob_1.wav", "label": 2, "speaker": "bob"})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _ids(corpus, split):
    return [json.loads(line)["id"] for line in (corpus / split / "metadata.jsonl").read_text().splitlines()]


def _wheres(dm):
    return {key: counter.where for key, counter in dm.skips.items()}


def test_one_recorded_corpus_is_one_speech_dataset_per_stage(speech_corpus_dir):
    dm = SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), cache_audio=False)
    dm.setup()
    assert {name: (type(ds), len(ds)) for name, ds in dm.datasets.items()} == {
        "train": (SpeechDataset, 16), "val": (SpeechDataset, 6), "test": (SpeechDataset, 6)}
    for name, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        assert [u.id for u in dm.datasets[name].utterances] == _ids(speech_corpus_dir, split)
        assert dm.datasets[name].skips is dm.skips[split]  # decode failures count with the split's row skips
    assert _wheres(dm) == {split: str(speech_corpus_dir / split / "metadata.jsonl")
                           for split in ("train", "validation", "test")}
    assert dm.source_names == [] and not dm.skip_report


def test_one_corpus_read_as_a_stream(speech_corpus_dir):
    dm = SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), streaming=True, batch_size=4)
    dm.setup("fit")
    assert {name: type(ds) for name, ds in dm.datasets.items()} == {"train": StreamingSpeechDataset,
                                                                   "val": StreamingSpeechDataset}
    assert sorted(i for b in dm.datasets["train"] for i in b["ids"]) == sorted(_ids(speech_corpus_dir, "train"))
    assert sorted(i for b in dm.datasets["val"] for i in b["ids"]) == sorted(_ids(speech_corpus_dir, "validation"))
    assert set(dm.skips) == {"train", "validation"}
    with pytest.raises(DataError, match="data.streaming needs data.tokenizer=char"):
        SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), streaming=True,
                         tokenizer="sentencepiece").setup("fit")


def test_one_connected_digits_source(fsdd_copy):
    dm = SpeechDataModule(dataset="fsdd-digits", data_dir=str(fsdd_copy), digits_size=(6, 4, 3), sample_rate=8000,
                          digits_per_utterance=(1, 3))
    dm.setup()
    assert {name: (type(ds), len(ds)) for name, ds in dm.datasets.items()} == {
        "train": (ConnectedDigitsDataset, 6), "val": (ConnectedDigitsDataset, 4), "test": (ConnectedDigitsDataset, 3)}
    assert [ds.name for ds in dm.datasets.values()] == ["fsdd-digits-train", "fsdd-digits-val", "fsdd-digits-test"]
    assert _wheres(dm) == {"train": "fsdd-digits [train]", "val": "fsdd-digits [val]", "test": "fsdd-digits [test]"}
    assert dm.skip_report == {"train": {"unreadable": 1}}
    with pytest.raises(DataError, match="fsdd-digits: use data.tokenizer=char"):
        SpeechDataModule(dataset="fsdd-digits", data_dir=str(fsdd_copy), tokenizer="sentencepiece").setup("fit")


def test_a_mixture_puts_recorded_corpora_first_and_tags_every_part(speech_corpus_dir, fsdd_copy):
    sources = [SpeechSource(name="digits", dataset="fsdd-digits", data_dir=str(fsdd_copy), test_split=None),
               SpeechSource(name="speech", data_dir=str(speech_corpus_dir), val_split=None, weight=2.0)]
    dm = SpeechDataModule(sources=sources, digits_size=(6, 4, 3), sample_rate=8000, digits_per_utterance=(1, 3),
                          batch_size=4, cache_audio=False)
    dm.setup()
    train, val, test = dm.datasets["train"], dm.datasets["val"], dm.datasets["test"]
    assert type(train) is MixtureDataset and [(type(p), len(p)) for p in train.parts] == [
        (SpeechDataset, 16), (ConnectedDigitsDataset, 6)]  # the recorded corpora come first, whatever the order
    assert train.sources.tolist() == [1] * 16 + [0] * 6 and len(train.lengths) == 22
    assert [train[i]["source"] for i in (0, 15, 16, 21)] == [1, 1, 0, 0]
    assert type(val) is MixtureDataset and len(val) == 4 and {val[i]["source"] for i in range(4)} == {0}
    assert type(test) is SpeechDataset and len(test) == 6  # one part whose items carry their source: bare
    assert [u.id for u in test.utterances] == _ids(speech_corpus_dir, "test")
    assert _wheres(dm) == {
        "speech/train": f"speech: {speech_corpus_dir / 'train' / 'metadata.jsonl'}", "train": "data.sources [train]",
        "digits/train": "digits [train]", "digits/val": "digits [val]",
        "speech/test": f"speech: {speech_corpus_dir / 'test' / 'metadata.jsonl'}", "test": "data.sources [test]"}
    assert dm.skip_report == {"digits/train": {"unreadable": 1}}
    drawn = Counter(int(train.sources[i]) for b in dm.train_dataloader().batch_sampler for i in b)
    assert drawn == {1: 32, 0: 6}  # speech has weight 2
    with pytest.raises(DataError, match="a mixture is read from prepared datasets"):
        SpeechDataModule(sources=sources[:1], streaming=True).setup("fit")
    with pytest.raises(DataError, match="data.sources: no source has a test split"):
        SpeechDataModule(sources=sources[:1], digits_size=(6, 4, 3), sample_rate=8000).setup("test")


class _Tones(Dataset):
    """A toy generated source: ``n`` items of ``a`` spoken as a 0.1 s tone."""

    def __init__(self, n, tokenizer, name):
        self.n, self.tokenizer, self.name = n, tokenizer, name

    def __len__(self):
        return self.n

    @property
    def lengths(self):
        return [800] * self.n

    def __getitem__(self, i):
        return {"id": f"{self.name}-{i}", "waveform": torch.full((800,), 0.1), "text": "a",
                "tokens": self.tokenizer.encode("a")}


@pytest.fixture
def tones_kind():
    calls = []

    def tones(stage, sources, dm):
        calls.append((stage, [(k, s.name) for k, s in sources]))
        return _Tones(3 if stage == "train" else 2, dm.tokenizer, "+".join(s.name or "tones" for _, s in sources))

    register_source_kind("tones", tones)
    yield calls
    SOURCE_KINDS.pop("tones")


def test_a_new_source_kind_plugs_into_a_mixture(speech_corpus_dir, tones_kind):
    dm = SpeechDataModule(sources=[SpeechSource(name="speech", data_dir=str(speech_corpus_dir), val_split=None),
                                   SpeechSource(name="beeps", dataset="tones", test_split=None),
                                   SpeechSource(name="chirps", dataset="tones", val_split=None)],
                          batch_size=4, cache_audio=False)
    dm.setup()
    assert tones_kind == [("train", [(1, "beeps")]), ("train", [(2, "chirps")]), ("val", [(1, "beeps")]),
                          ("test", [(2, "chirps")])]
    train = dm.datasets["train"]
    assert type(train) is MixtureDataset and train.part_sources == [0, 1, 2]
    assert train.sources.tolist() == [0] * 16 + [1] * 3 + [2] * 3
    assert [train[i]["id"] for i in (16, 19)] == ["beeps-0", "chirps-0"]
    val = dm.datasets["val"]
    assert type(val) is MixtureDataset and [val[i]["source"] for i in range(len(val))] == [1, 1]
    batches = list(dm.train_dataloader())
    assert sum(len(b["ids"]) for b in batches) == 22 and all("sources" in b for b in batches)
    assert Counter(s for b in batches for s in b["sources"].tolist()) == {0: 16, 1: 3, 2: 3}


def test_a_new_source_kind_alone_is_the_stage_dataset(tones_kind):
    dm = SpeechDataModule(dataset="tones")
    dm.setup("fit")
    assert [type(ds) for ds in dm.datasets.values()] == [_Tones, _Tones]
    assert tones_kind == [("train", [(0, "")]), ("val", [(0, "")])]


def test_sources_of_a_together_kind_make_one_part(speech_corpus_dir, monkeypatch):
    seen = []

    def joint(stage, sources, dm):
        seen.append([k for k, _ in sources])
        part = _Tones(2 * len(sources), dm.tokenizer, "joint")
        part.sources = np.repeat([k for k, _ in sources], 2)
        return part

    monkeypatch.setitem(SOURCE_KINDS, "joint", None)  # removed again after the test
    register_source_kind("joint", joint, together=True)
    dm = SpeechDataModule(sources=[SpeechSource(name="a", dataset="joint"),
                                   SpeechSource(name="speech", data_dir=str(speech_corpus_dir)),
                                   SpeechSource(name="b", dataset="joint")], cache_audio=False)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert seen == [[0, 2], [0, 2]]  # train, then val
    assert [type(p) for p in train.parts] == [_Tones, SpeechDataset]  # together parts in order of their first source
    assert train.sources.tolist() == [0, 0, 2, 2] + [1] * 16
