"""K labels x M tokens batches and same-word partners: label structure, determinism per (seed, epoch), DDP shards,
and the WordDataModule options that use them."""

import json
from collections import Counter

import pytest

from data.word_batches import LabelBatchSampler, PartnerBatchSampler, same_label_partners
from data.words import WordDataModule
from tests.fixtures.word_audio import write_tone_words

# 6 labels with 2..40 tokens each, and one label with a single token (never drawn).
LABELS = [lab for lab, n in zip("abcdefg", (40, 25, 9, 5, 3, 2, 1), strict=True) for _ in range(n)]


def test_every_batch_holds_k_labels_with_at_least_two_tokens_each():
    s = LabelBatchSampler(labels=LABELS, labels_per_batch=4, tokens_per_label=4, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == round((len(LABELS) - 1) / 16)
    for b in batches:
        counts = Counter(LABELS[i] for i in b)
        assert len(counts) == 4 and min(counts.values()) >= 2 and max(counts.values()) <= 4
        assert len(set(b)) == len(b) and "g" not in counts
        assert all(counts[lab] == min(4, LABELS.count(lab)) for lab in counts)
    # Many epochs: every drawable token turns up, and the big label's stream never repeats a token in a batch.
    seen = set()
    for epoch in range(30):
        s.set_epoch(epoch)
        seen |= {i for b in s for i in b}
    assert seen == set(range(len(LABELS) - 1))


def test_batches_are_a_function_of_seed_and_epoch():
    def run(seed, epoch):
        s = LabelBatchSampler(labels=LABELS, labels_per_batch=3, tokens_per_label=2, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert run(0, 0) == run(0, 0) and run(0, 1) == run(0, 1)
    assert run(0, 0) != run(0, 1) and run(0, 0) != run(1, 0)
    s = LabelBatchSampler(labels=LABELS, labels_per_batch=3, tokens_per_label=2, seed=0)
    s.sampler.set_epoch(1)  # Lightning's per-epoch call reaches it through .sampler
    assert list(s) == run(0, 1)


def test_ranks_split_one_global_list_equally():
    full = LabelBatchSampler(labels=LABELS, labels_per_batch=2, tokens_per_label=2, seed=5, num_replicas=1, rank=0)
    shards = [LabelBatchSampler(labels=LABELS, labels_per_batch=2, tokens_per_label=2, seed=5, num_replicas=3,
                                rank=r) for r in range(3)]
    lists = [list(s) for s in shards]
    assert len({len(x) for x in lists}) == 1 and all(len(x) == len(s) for x, s in zip(lists, shards, strict=True))
    merged = [b for step in zip(*lists, strict=True) for b in step]
    assert merged == shards[0].global_batches()
    assert len(merged) % 3 == 0 and abs(len(merged) - len(list(full))) < 3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="tokens_per_label must be >= 2"):
        LabelBatchSampler(labels=LABELS, tokens_per_label=1)
    with pytest.raises(ValueError, match="at least two labels with two or more tokens"):
        LabelBatchSampler(labels=["a", "a", "b"])


def test_partners_share_the_label_and_prefer_another_speaker():
    labels = ["x"] * 6 + ["y"] * 3 + ["z"] * 2 + ["w"]
    speakers = ["s0", "s0", "s1", "s1", "s2", None] + ["s0", "s0", "s0"] + ["s1", "s2"] + ["s3"]
    p = same_label_partners(labels, speakers, seed=0, epoch=0)
    assert all(labels[j] == labels[i] for i, j in enumerate(p))
    for i in (0, 1, 2, 3, 4, 9, 10):  # their label has tokens of other (known) speakers
        assert speakers[p[i]] not in (speakers[i], None)
    assert all(p[i] != i for i in range(11)) and p[11] == 11  # only "y" falls back to its own speaker; "w" is alone
    assert p == same_label_partners(labels, speakers, seed=0, epoch=0)
    draws = {tuple(same_label_partners(labels, speakers, seed=0, epoch=e)) for e in range(5)}
    assert len(draws) > 1  # new partners every epoch
    nobody = same_label_partners(labels, None, seed=1)
    assert all(labels[j] == labels[i] and (j != i or labels.count(labels[i]) == 1) for i, j in enumerate(nobody))


def test_partner_batches_wrap_the_base_batches():
    base = LabelBatchSampler(labels=LABELS, labels_per_batch=3, tokens_per_label=2, seed=0)
    paired = PartnerBatchSampler(base, labels=LABELS, seed=0)
    paired.sampler.set_epoch(2)
    assert base.epoch == 2 and len(paired) == len(base)
    for b, pb in zip(base, paired, strict=True):
        assert [i for i, _ in pb] == b and all(LABELS[i] == LABELS[j] and i != j for i, j in pb)


@pytest.fixture(scope="module")
def speaker_words(tmp_path_factory):
    """Tone words of 3 labels x 6, recorded in turn by speakers s0, s1, s2; one row with an empty label."""
    root = write_tone_words(tmp_path_factory.mktemp("words") / "spk", per_label={"train": 6})
    meta = root / "train" / "metadata.jsonl"
    rows = [json.loads(x) for x in meta.read_text().splitlines()]
    rows = [{**r, "label": str(r["label"]), "speaker": f"s{r['index'] % 3}"} for r in rows]
    rows.append({**rows[0], "label": "", "speaker": ""})
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_datamodule_label_batches_and_partner_waveforms(speaker_words, caplog):
    dm = WordDataModule(data_dir=str(speaker_words), val_fraction=0.2, labels_per_batch=2, tokens_per_label=3,
                        pairs=True, batch_size=4, seed=1)
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "{'empty_label': 1}" in caplog.text and "skipped line" not in caplog.text  # one line, no row warnings
    train = dm.datasets["train"]
    assert len(train) == 15 and set(train.speakers) == {"s0", "s1", "s2"}
    for batch in dm.train_dataloader():
        counts = Counter(batch["labels"].tolist())
        assert len(counts) == 2 and set(counts.values()) == {3}
        by_id = {s.id: s for s in train.segments}
        for i, pid, n in zip(batch["ids"], batch["partner_ids"], batch["partner_lengths"].tolist(), strict=True):
            assert by_id[pid].label == by_id[i].label and by_id[pid].speaker != by_id[i].speaker
            assert by_id[pid].waveform.numel() == n
        assert batch["partner_waveforms"].shape == (6, max(batch["partner_lengths"].tolist()))
    val = next(iter(dm.val_dataloader()))
    assert "partner_waveforms" not in val and len(val["ids"]) <= 4
    with pytest.raises(ValueError, match="tokens_per_label must be at least 2"):
        WordDataModule(data_dir=str(speaker_words), tokens_per_label=1)
