"""Speech DataModule: loading through datasets, validation of rows, bad audio skipped and counted, collation."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from data.errors import DataError
from data.speech import SpeechDataModule, collate_speech


def _copy_corpus(src, dst):
    shutil.copytree(src, dst)
    return dst


def _append_rows(split_dir, rows):
    with open(split_dir / "metadata.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def test_loads_audiofolder_and_batches(speech_corpus_dir):
    dm = SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), batch_size=4)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16 and len(dm.datasets["val"]) == 6
    batch = next(iter(dm.train_dataloader()))
    b = len(batch["ids"])
    assert batch["waveforms"].shape[0] == b and batch["waveforms"].dtype == torch.float32
    assert batch["lengths"].max() == batch["waveforms"].shape[1]
    for i in range(b):
        n = batch["target_lengths"][i]
        assert dm.tokenizer.decode(batch["targets"][i, :n].tolist()) == batch["texts"][i]
    assert dm.vocab["kind"] == "char"
    assert 0.0 <= dm.padding_fraction("train") < 0.5


def test_rows_without_ids_go_by_file_name_and_skips_name_file_and_line(speech_corpus_dir, tmp_path, caplog):
    root = _copy_corpus(speech_corpus_dir, tmp_path / "c")
    meta = root / "train" / "metadata.jsonl"
    rows = [{k: v for k, v in json.loads(line).items() if k != "id"} for line in meta.read_text().splitlines()]
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _append_rows(root / "train", [{**rows[0], "text": "\u4f60\u597d"}])  # line 17: normalises to nothing
    dm = SpeechDataModule(dataset=None, data_dir=str(root), batch_size=4)
    dm.setup("fit")
    ids = [u.id for u in dm.datasets["train"].utterances]
    assert sorted(ids) == sorted(r["file_name"] for r in rows)  # what examples and messages print
    assert f"{meta}: skipped line 17: empty transcript" in caplog.text


def test_bad_rows_are_skipped_counted_and_named(speech_corpus_dir, tmp_path, caplog):
    root = _copy_corpus(speech_corpus_dir, tmp_path / "c")
    train = root / "train"
    (train / "garbage.flac").write_bytes(np.random.default_rng(0).bytes(2000))
    good = sorted(train.glob("*.flac"))[0].read_bytes()
    (train / "truncated.flac").write_bytes(good[:200])
    sf.write(train / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(train / "long.wav", np.zeros(16000 * 10, dtype=np.float32), 16000)
    sf.write(train / "nan.wav", np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(train / "stereo8k.wav", np.random.default_rng(1).normal(0, 0.1, (8000, 2)).astype(np.float32), 8000)
    _append_rows(train, [
        {"file_name": "garbage.flac", "text": "hello", "id": "g1"},
        {"file_name": "truncated.flac", "text": "hello", "id": "t1"},
        {"file_name": "empty.wav", "text": "hello", "id": "e1"},
        {"file_name": "long.wav", "text": "hello", "id": "l1"},
        {"file_name": "missing.wav", "text": "hello", "id": "m1"},
        {"file_name": "stereo8k.wav", "text": "\u00e7a va 42 !", "id": "s1"},
        {"file_name": "stereo8k.wav", "text": "\u4f60\u597d", "id": "z1"},
        {"file_name": "nan.wav", "text": "not a number", "id": "n1"},
    ])
    dm = SpeechDataModule(dataset=None, data_dir=str(root), batch_size=64, max_duration=8.0, bucketing=False)
    dm.setup("fit")
    report = dm.skip_report["train"]
    assert report["unreadable"] == 2  # random bytes, missing file: rejected up front from the header
    assert report["empty_text"] == 1  # Chinese characters normalise to nothing
    assert report["empty_audio"] == 1 and report["duration"] == 1  # zero-length, too long
    for name in ("garbage.flac", "missing.wav", "long.wav", "empty.wav"):
        assert name in caplog.text
    ds = dm.datasets["train"]
    ids = [u.id for u in ds.utterances]
    assert "s1" in ids and "n1" in ids and "t1" in ids  # headers fine: caught when decoded
    stereo = ds[ids.index("s1")]
    assert stereo["waveform"].ndim == 1 and stereo["waveform"].numel() == 16000  # downmixed, 8k -> 16k
    assert stereo["text"] == "ca va four two"
    assert ds[ids.index("n1")] is None  # NaN samples: skipped at decode time, named and counted
    assert ds[ids.index("t1")] is None  # truncated FLAC: the header reads, the samples do not
    assert dm.skip_report["train"]["decode_failed"] == 2
    assert "nan.wav" in caplog.text and "truncated.flac" in caplog.text
    batches = list(dm.train_dataloader())  # an epoch never dies on a bad file
    assert sum(len(b["ids"]) for b in batches if b is not None) == len(ds) - 2


def test_collate_drops_failed_items():
    item = {"id": "a", "waveform": torch.ones(5), "text": "ab", "tokens": [3, 4]}
    batch = collate_speech([None, item, None])
    assert batch["ids"] == ["a"] and batch["waveforms"].shape == (1, 5)
    assert collate_speech([None]) is None


def test_missing_dir_and_wrong_column_are_one_line_errors(speech_corpus_dir, tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        SpeechDataModule(dataset=None, data_dir=str(tmp_path / "nope")).setup("fit")
    with pytest.raises(DataError, match=r"missing column 'transcript'.*data.text_column") as e:
        SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), text_column="transcript").setup("fit")
    assert "\n" not in str(e.value)


def test_json_manifest_with_relative_paths(speech_corpus_dir, tmp_path):
    rows = [json.loads(x) for x in (speech_corpus_dir / "train" / "metadata.jsonl").read_text().splitlines()]
    man = tmp_path / "train.jsonl"
    shutil.copytree(speech_corpus_dir / "train", tmp_path / "wavs")
    man.write_text("".join(json.dumps({"path": f"wavs/{r['file_name']}", "sentence": r["text"]}) + "\n"
                           for r in rows[:5]))
    dm = SpeechDataModule(dataset=None, data_dir=str(tmp_path), audio_column="path", text_column="sentence",
                          val_split="train", batch_size=2)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 5
    assert dm.datasets["train"][0]["waveform"].numel() > 1000
