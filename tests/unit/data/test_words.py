"""Labelled isolated-word DataModule: label vocabulary, stratified validation hold-out, bad rows named and skipped."""

import json
import logging

import pytest
import torch

from data.errors import DataError
from data.words import WordDataModule, collate_words, load_word_segments, sorted_labels, stratified_holdout
from tests.fixtures.word_audio import write_tone_words


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory):
    return write_tone_words(tmp_path_factory.mktemp("words") / "tones", labels=(0, 1, 2, 10),
                            per_label={"train": 5, "test": 2})


def test_labels_sort_numerically_and_holdout_is_stratified(tone_dir):
    assert sorted_labels(["10", "2", "b", "0", "a"]) == ["0", "2", "10", "a", "b"]
    dm = WordDataModule(data_dir=str(tone_dir), val_fraction=0.2, batch_size=3)
    dm.setup("fit")
    assert dm.vocab == {"labels": ["0", "1", "2", "10"]}
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 16 and len(val) == 4
    assert sorted(val.targets) == [0, 1, 2, 3]  # one of each label's five recordings held out
    assert not {s.id for s in train.segments} & {s.id for s in val.segments}
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveforms"].shape[0] == batch["lengths"].shape[0] == batch["labels"].shape[0] <= 3
    assert batch["waveforms"].shape[1] == int(batch["lengths"].max())
    dm.setup("test")
    assert len(dm.datasets["test"]) == 8


def test_keep_out_is_deterministic_per_seed():
    labels = ["a"] * 10 + ["b"] * 10
    assert stratified_holdout(labels, 0.3, seed=1) == stratified_holdout(labels, 0.3, seed=1)
    keep, held = stratified_holdout(labels, 0.3, seed=1)
    assert len(held) == 6 and sorted(keep + held) == list(range(20))


def test_silence_is_trimmed(tone_dir):
    raw = load_word_segments(None, "test", data_dir=str(tone_dir), trim_db=None)
    trimmed = load_word_segments(None, "test", data_dir=str(tone_dir), trim_db=30.0)
    # each tone word has 400 zero samples (50 ms) of silence on both sides
    assert all(t.waveform.numel() < r.waveform.numel() - 500 for t, r in zip(trimmed, raw, strict=True))


def test_unreadable_and_unlabelled_rows_are_skipped_with_their_names(tone_dir, tmp_path, caplog):
    split = tmp_path / "bad" / "train"
    split.mkdir(parents=True)
    rows = [json.loads(x) for x in (tone_dir / "train" / "metadata.jsonl").read_text().splitlines()][:4]
    for r in rows:
        (split / r["file_name"]).write_bytes((tone_dir / "train" / r["file_name"]).read_bytes())
    (split / "broken.wav").write_bytes(b"RIFF not really")
    rows += [{"file_name": "broken.wav", "label": 1}, {"file_name": rows[0]["file_name"], "label": None}]
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        segs = load_word_segments(None, "train", data_dir=str(tmp_path / "bad"))
    assert len(segs) == 4
    assert "metadata.jsonl: skipped line 5 (broken.wav)" in caplog.text
    assert "metadata.jsonl: skipped line 6" in caplog.text and "empty 'label'" in caplog.text


def test_missing_label_column_is_one_line_error(tone_dir):
    with pytest.raises(DataError, match=r"missing column 'digit' .*set label_column"):
        load_word_segments(None, "train", data_dir=str(tone_dir), label_column="digit")


def test_collate_pads_and_keeps_labels():
    items = [{"id": "a", "waveform": torch.ones(3), "label": 2}, {"id": "b", "waveform": torch.ones(5), "label": -1}]
    b = collate_words(items)
    assert b["waveforms"].shape == (2, 5) and b["waveforms"][0, 3:].sum() == 0
    assert b["lengths"].tolist() == [3, 5] and b["labels"].tolist() == [2, -1] and b["ids"] == ["a", "b"]


def test_words_cut_at_their_boundaries_from_synthetic_sentences(speech_corpus_dir):
    from data.synth import load_metadata
    from data.words import word_segments_from_timings

    segs = word_segments_from_timings(speech_corpus_dir, "test", sample_rate=8000)
    words = [w for row in load_metadata(speech_corpus_dir, "test") for w in row["words"]
             if w["end"] - w["start"] >= 0.05]
    assert [s.label for s in segs] == [w["word"] for w in words]
    for s, w in zip(segs, words, strict=True):
        assert abs(s.waveform.numel() - (w["end"] - w["start"]) * 8000) <= 2


def test_missing_default_copy_falls_back_to_the_synthetic_words_but_a_given_one_stops(tmp_path, tone_dir, monkeypatch):
    import data.words as words

    monkeypatch.setattr(words, "DEFAULT_WORDS_DIR", str(tmp_path / "absent"))
    assert WordDataModule(data_dir=str(tmp_path / "absent")).uses_embedded  # the default, absent: fall back
    with pytest.raises(DataError, match=f"data directory not found: {tmp_path / 'typo'} .data.data_dir."):
        WordDataModule(data_dir=str(tmp_path / "typo")).uses_embedded  # noqa: B018 - asked for, absent: stop
    assert WordDataModule(dataset="embedded", data_dir=None).uses_embedded
    assert not WordDataModule(data_dir=str(tone_dir)).uses_embedded
