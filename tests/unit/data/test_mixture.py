"""Several corpora in one SpeechDataModule: source weights in the sampler, per-source tags, config errors."""

from collections import Counter

import pytest

from data.errors import DataError
from data.samplers import LengthBucketBatchSampler
from data.speech import SpeechDataModule, SpeechSource


def _draws(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return Counter(i for b in sampler.global_batches() for i in b)


def test_group_weights_repeat_and_subsample_per_epoch():
    groups = [0] * 30 + [1] * 20 + [2] * 10
    lengths = [10 + (i * 7) % 13 for i in range(60)]
    s = LengthBucketBatchSampler(lengths=lengths, batch_size=4, seed=3, groups=groups, group_weights=[1, 2, 0.5])
    counts = _draws(s)
    assert all(counts[i] == 1 for i in range(30))          # weight 1: each once
    assert all(counts[i] == 2 for i in range(30, 50))      # weight 2: each twice
    half = [i for i in range(50, 60) if counts[i]]
    assert len(half) == 5 and all(counts[i] == 1 for i in half)  # weight 0.5: a random half, each once
    other = [i for i in range(50, 60) if _draws(s, epoch=1)[i]]
    assert len(other) == 5 and other != half                # a fresh half next epoch
    assert sum(counts.values()) == 30 + 40 + 5


def test_unweighted_groups_leave_the_epoch_unchanged():
    lengths = [5 + i % 9 for i in range(40)]
    plain = LengthBucketBatchSampler(lengths=lengths, batch_size=4, seed=1)
    grouped = LengthBucketBatchSampler(lengths=lengths, batch_size=4, seed=1, groups=[i % 2 for i in range(40)],
                                       group_weights=[1, 1])
    assert plain.global_batches() == grouped.global_batches()


def test_weighted_mixture_shards_evenly_over_ranks():
    groups = [0] * 25 + [1] * 12
    lengths = [3 + i % 11 for i in range(37)]
    ranks = [LengthBucketBatchSampler(lengths=lengths, batch_size=4, seed=2, groups=groups, group_weights=[1, 1.5],
                                      num_replicas=2, rank=r) for r in range(2)]
    per_rank = [r.batches() for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])
    drawn = Counter(i for b in ranks[0].global_batches()[: len(ranks[0].global_batches()) - ranks[0].num_padded_batches]
                    for i in b)
    assert all(drawn[i] == 1 for i in range(25))
    assert sum(drawn[i] for i in range(25, 37)) == 12 + 6


@pytest.mark.parametrize("kw, match", [
    ({"groups": [0, 1]}, None),
    ({"groups": [0], "group_weights": [1, 1]}, "one group id per item"),
    ({"groups": [0, 1], "group_weights": [1, -1]}, ">= 0"),
    ({"groups": [0, 2], "group_weights": [1, 1]}, "must index group_weights"),
])
def test_group_weight_errors(kw, match):
    if match is None:
        LengthBucketBatchSampler(lengths=[1, 2], batch_size=2, **kw)  # groups alone are allowed
        return
    with pytest.raises(ValueError, match=match):
        LengthBucketBatchSampler(lengths=[1, 2], batch_size=2, **kw)


def _mixture(corpus, **kw):
    return SpeechDataModule(sources=[SpeechSource(name="a", data_dir=str(corpus), weight=2.0),
                                     SpeechSource(name="b", data_dir=str(corpus), val_split=None)],
                            batch_size=4, cache_audio=False, **kw)


def test_mixture_concatenates_sources_tags_batches_and_weights_them(speech_corpus_dir):
    dm = _mixture(speech_corpus_dir)
    dm.setup("fit")
    assert dm.source_names == ["a", "b"]
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 32 and Counter(u.source for u in train.utterances) == {0: 16, 1: 16}
    assert len(val) == 6 and {u.source for u in val.utterances} == {0}  # b has no validation split
    loader = dm.train_dataloader()
    drawn = Counter(train.utterances[i].source for b in loader.batch_sampler for i in b)
    assert drawn == {0: 32, 1: 16}  # weight 2 draws each of a's utterances twice
    batch = next(iter(dm.val_dataloader()))
    assert batch["sources"].tolist() == [0] * len(batch["ids"])


@pytest.mark.parametrize("sources, match", [
    ([{"name": "a b", "data_dir": "x"}], "letters, digits"),
    ([{"name": "a", "data_dir": "x"}, {"name": "a", "data_dir": "y"}], "unique"),
    ([{"name": "a"}], r"sources\[0\] \(a\): set dataset"),
    ([{"name": "a", "data_dir": "x", "weight": -1}], "weight: must be >= 0"),
    ([{"name": "a", "data_dir": "x", "weight": 0}], "no source trains"),
    ([{"name": "a", "data_dir": "x", "bogus": 1}], r"data.sources\[0\]: .*bogus"),
])
def test_source_config_errors_are_one_line(sources, match):
    dm = SpeechDataModule(sources=sources)
    with pytest.raises(DataError, match=match):
        dm.setup("fit")


def test_missing_source_directory_names_the_source(tmp_path):
    dm = SpeechDataModule(sources=[SpeechSource(name="gone", data_dir=str(tmp_path / "nope"))])
    with pytest.raises(DataError, match="not found"):
        dm.setup("fit")


def test_generated_digit_strings_mix_with_recorded_speech(speech_corpus_dir):
    from tests.conftest import shared_dataset

    fsdd = shared_dataset("fsdd")
    dm = SpeechDataModule(sources=[SpeechSource(name="speech", data_dir=str(speech_corpus_dir)),
                                   SpeechSource(name="digits", dataset="fsdd-digits", data_dir=str(fsdd))],
                          digits_size=(12, 5, 5), holdout_speakers=["george"], batch_size=4, cache_audio=False)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 16 + 12 and Counter(train.sources.tolist()) == {0: 16, 1: 12}
    assert len(val) == 6 + 5 and len(train.lengths) == len(train)
    items = [val[i] for i in range(len(val))]
    assert [it["source"] for it in items] == [0] * 6 + [1] * 5
    assert all(it["id"].endswith("george") for it in items[6:])  # the held-out speaker alone validates
    batches = list(dm.train_dataloader())
    assert sum(len(b["ids"]) for b in batches) == 28 and all("sources" in b for b in batches)


def test_only_texts_keeps_the_chosen_words_silently(tmp_path, caplog):
    import json

    import numpy as np
    import soundfile as sf

    from data.rows import SkipCounter
    from data.sources import load_split
    from data.speech import index_rows
    from data.text import CharTokenizer

    split = tmp_path / "train"
    split.mkdir()
    rows = [("zero", 0.5), ("yes", 0.5), ("", 0.5), ("Nine", 0.6), ("bed", 0.4)]
    for i, (_text, dur) in enumerate(rows):
        sf.write(split / f"c{i}.wav", np.zeros(int(16000 * dur), dtype="float32") + 0.01, 16000)
    (split / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"c{i}.wav", "text": t, "duration": d})
                                                  + "\n" for i, (t, d) in enumerate(rows)))
    table = load_split(None, "train", data_dir=str(tmp_path))
    skips = SkipCounter(str(split / "metadata.jsonl"))
    index = index_rows(table, where=str(split), audio_column="audio", text_column="text", id_column=None,
                       duration_column="duration", base_dir=str(tmp_path), normalizer="asr_chars",
                       tokenizer=CharTokenizer(), min_duration=0.1, max_duration=5.0, validate=False, skips=skips,
                       only_texts=["zero", "one", "nine"])
    assert index.rows.tolist() == [0, 3]  # "zero" and "Nine"; the empty silence row is left out, not skipped
    assert skips.total == 0 and "skipped" not in caplog.text
    assert SpeechSource(name="sc", only_texts=["zero"]).only_texts == ["zero"]
