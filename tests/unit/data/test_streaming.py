"""Streaming speech corpora: every utterance once per epoch, bounded memory, exact batch counts per rank under
(simulated) DDP, bad rows skipped and named, and a real fit on a stream."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from data.errors import DataError
from data.speech import SpeechDataModule


def _stream_dm(root, trainer=None, **kw):
    dm = SpeechDataModule(dataset=None, data_dir=str(root), streaming=True, shuffle_buffer=8, **kw)
    if trainer is not None:
        dm.trainer = trainer
    dm.setup("fit")
    return dm


def _ids(batches):
    return [i for b in batches for i in b["ids"]]


def test_stream_yields_every_utterance_once_per_epoch_in_bucketed_batches(speech_corpus_dir):
    dm = _stream_dm(speech_corpus_dir, batch_size=3)
    ds = dm.datasets["train"]
    ds.bucket_batches = 2  # windows of 6 decoded utterances
    epoch0 = list(dm.train_dataloader())
    assert sorted(_ids(epoch0)) == sorted(json.loads(x)["id"] for x in
                                          (speech_corpus_dir / "train" / "metadata.jsonl").read_text().splitlines())
    assert ds.max_window_items <= 6  # bounded: never more than one window of decoded audio
    ds.set_epoch(1)
    epoch1 = list(dm.train_dataloader())
    assert sorted(_ids(epoch1)) == sorted(_ids(epoch0)) and _ids(epoch1) != _ids(epoch0)  # reshuffled
    ds.set_epoch(0)
    assert _ids(list(dm.train_dataloader())) == _ids(epoch0)  # deterministic per epoch
    for b in epoch0:  # batches are padded to their longest item; items within a window were sorted by length
        assert b["waveforms"].shape == (len(b["ids"]), int(b["lengths"].max()))
    val = list(dm.val_dataloader())
    assert len(_ids(val)) == 6


@pytest.mark.parametrize(("world", "steps"), [(2, 4), (3, 3)])
def test_ranks_read_disjoint_shards_that_cover_the_corpus(speech_corpus_dir, world, steps):
    per_rank = []
    for rank in range(world):
        trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0)
        dm = _stream_dm(speech_corpus_dir, trainer=trainer, batch_size=2, steps_per_epoch=steps)
        batches = list(dm.train_dataloader())
        assert len(batches) == steps == len(dm.train_dataloader())
        per_rank.append(_ids(batches))
    everything = [i for ids in per_rank for i in ids]
    assert len(set(everything)) == 16  # all 16 utterances, each on one rank only
    assert len(everything) - len(set(everything)) <= world  # at most a rank's short shard restarting


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_rank_runs_exactly_steps_per_epoch_batches(speech_corpus_dir, world):
    # 7 batches of 2 is more than a shard holds: each rank restarts its shard (reshuffled) to keep in step.
    for rank in range(world):
        trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0)
        dm = _stream_dm(speech_corpus_dir, trainer=trainer, batch_size=2, steps_per_epoch=7)
        assert len(list(dm.train_dataloader())) == 7


def test_ddp_stream_without_steps_per_epoch_is_a_clear_error(speech_corpus_dir):
    with pytest.raises(DataError, match="steps_per_epoch"):
        _stream_dm(speech_corpus_dir, trainer=SimpleNamespace(world_size=2, global_rank=0, current_epoch=0))


def test_bad_rows_in_a_stream_are_skipped_counted_and_named(speech_corpus_dir, tmp_path, caplog):
    root = tmp_path / "c"
    shutil.copytree(speech_corpus_dir, root)
    (root / "train" / "junk.flac").write_bytes(np.random.default_rng(0).bytes(3000))
    with open(root / "train" / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "junk.flac", "text": "hello", "id": "junk"}) + "\n")
        f.write(json.dumps({"file_name": "missing.flac", "text": "hello", "id": "gone"}) + "\n")
    dm = _stream_dm(root, batch_size=4)
    got = _ids(list(dm.train_dataloader()))
    assert len(got) == 16 and "junk" not in got and "gone" not in got
    assert dm.skip_report["train"] == {"unreadable": 2}
    assert "junk.flac" in caplog.text and "missing.flac" in caplog.text


def test_fit_on_a_stream(speech_corpus_dir, tmp_path):
    from tests.integration.helpers import read_json, rnnlab

    rnnlab("fit", "-c", "defaults", "-c", "tiny/ctc.yaml", f"--data.init_args.data_dir={speech_corpus_dir}",
           "--data.init_args.streaming=true", "--data.init_args.steps_per_epoch=3", "--trainer.max_epochs=2",
           f"--run.root={tmp_path}", "--run.name=s")
    ckpt = tmp_path / "s" / "checkpoints" / "last.ckpt"
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 6  # 3 steps per epoch, 2 epochs
    summary = read_json(tmp_path / "s" / "summary.json")
    assert np.isfinite(summary["val/loss"]) and 0 <= summary["val/cer"]
