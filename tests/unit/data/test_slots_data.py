"""Slot-filling data: validation of rows, vocabularies from train only, collation."""

import json

import pytest

from data.errors import DataError
from data.slots import IGNORE, SlotFillingDataModule, collate_slots


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _dm(root, **kw):
    return SlotFillingDataModule(dataset=None, data_dir=str(root), batch_size=4, **kw)


def test_vocab_from_train_only_and_unknown_words_map_to_unk(slot_data_dir):
    dm = _dm(slot_data_dir)
    v = dm.vocab
    assert v["words"]["itos"][:2] == ["<pad>", "<unk>"]
    assert v["tags"][0] == "O"
    assert set(v["intents"]) == {"atis_flight", "atis_airfare"}
    _write(slot_data_dir / "validation.jsonl",
           [{"tokens": ["fly", "to", "zanzibar"], "tags": ["O", "O", "B-toloc.city_name"], "intent": "atis_flight"}])
    dm = _dm(slot_data_dir)
    dm.setup("fit")
    item = dm.datasets["val"][0]
    assert item["word_ids"][2] == 1  # zanzibar -> <unk>
    assert "zanzibar" not in dm.vocab["words"]["itos"]


def test_collate_shapes_and_padding(slot_data_dir):
    dm = _dm(slot_data_dir)
    dm.setup("fit")
    batch = collate_slots([dm.datasets["train"][i] for i in range(4)])
    b, t = batch["tokens"].shape
    assert b == 4 and t == int(batch["lengths"].max())
    for i, n in enumerate(batch["lengths"].tolist()):
        assert (batch["tokens"][i, n:] == 0).all()
        assert (batch["tags"][i, n:] == IGNORE).all()
        assert (batch["tags"][i, :n] != IGNORE).all()
    assert batch["intent"].shape == (4,)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"tokens": ["a", "b"], "tags": ["O"], "intent": "x"}, r"train.jsonl line 2: 2 tokens but 1 tags"),
        ({"tokens": [], "tags": [], "intent": "x"}, r"train.jsonl line 2: empty sentence"),
        ({"tokens": 5, "tags": ["O"], "intent": "x"}, r"train.jsonl line 2: column 'tokens' must be a list"),
    ],
)
def test_bad_rows_name_file_row_and_problem(tmp_path, row, message):
    good = {"tokens": ["a"], "tags": ["O"], "intent": "x"}
    _write(tmp_path / "train.jsonl", [good, row])
    _write(tmp_path / "validation.jsonl", [good])
    with pytest.raises(DataError, match=message) as e:
        _dm(tmp_path, strict=True).setup("fit")
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_token_tag_count_mismatch_is_a_named_counted_skip(tmp_path, caplog):
    good = {"tokens": ["a", "b"], "tags": ["O", "B-x"], "intent": "x"}
    _write(tmp_path / "train.jsonl", [good, good, {"tokens": ["a", "b", "c"], "tags": ["O"], "intent": "x"}, good])
    _write(tmp_path / "validation.jsonl", [good, {"tokens": ["a"], "tags": ["O", "O"], "intent": "x"}])
    dm = _dm(tmp_path)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 1
    assert dm.skip_report == {"train": {"tag_count_mismatch": 1}, "validation": {"tag_count_mismatch": 1}}
    assert f"{tmp_path / 'train.jsonl'}: skipped line 3: 3 tokens but 1 tags" in caplog.text
    assert "validation.jsonl: skipped line 2: 1 tokens but 2 tags" in caplog.text
    with pytest.raises(DataError, match=r"train.jsonl line 3: 3 tokens but 1 tags"):
        _dm(tmp_path, strict=True).setup("fit")


def test_missing_column_is_named(tmp_path):
    _write(tmp_path / "train.jsonl", [{"words": ["a"], "tags": ["O"], "intent": "x"}])
    with pytest.raises(DataError, match=r"missing column 'tokens'.*data.tokens_column"):
        _ = _dm(tmp_path).vocab


def test_column_candidates_and_space_joined_strings(tmp_path):
    _write(tmp_path / "train.jsonl", [{"text": "fly to boston", "slots": "O O B-city", "intent": "f"}])
    _write(tmp_path / "validation.jsonl", [{"text": "fly to boston", "slots": "O O B-city", "intent": "f"}])
    dm = _dm(tmp_path, tokens_column=["tokens", "text"], tags_column=["tags", "slots"])
    dm.setup("fit")
    assert dm.datasets["train"][0]["tags"] == ["O", "O", "B-city"]


def test_unknown_validation_label_warns_or_errors(slot_data_dir, caplog):
    _write(slot_data_dir / "validation.jsonl",
           [{"tokens": ["to", "boston"], "tags": ["O", "B-never_seen"], "intent": "atis_flight"}])
    dm = _dm(slot_data_dir)
    dm.setup("fit")
    assert dm.datasets["val"].unseen_labels == {"B-never_seen": 1}
    assert dm.datasets["val"][0]["tag_ids"][1] == IGNORE
    assert "B-never_seen" in caplog.text and "validation.jsonl" in caplog.text and "(line 1)" in caplog.text
    with pytest.raises(DataError, match=r"validation.jsonl line 1: tag 'B-never_seen' does not occur"):
        _dm(slot_data_dir, unknown_labels="error").setup("fit")


def test_missing_data_dir_and_split(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        _ = _dm(tmp_path / "nope").vocab
    _write(tmp_path / "train.jsonl", [{"tokens": ["a"], "tags": ["O"], "intent": "x"}])
    with pytest.raises(DataError, match="no split 'validation' found"):
        _dm(tmp_path).setup("fit")


def test_offline_hub_id_gives_one_line_hint():
    dm = SlotFillingDataModule(dataset="someone/not-a-real-dataset-xyz")
    with pytest.raises(DataError) as e:
        _ = dm.vocab
    msg = str(e.value)
    assert "\n" not in msg and "local copy" in msg and "DATA_DIR" in msg


def test_split_slicing_on_local_files(slot_data_dir):
    dm = _dm(slot_data_dir, train_split="train[:50%]", val_split="train[50%:]")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 48 and len(dm.datasets["val"]) == 48


@pytest.mark.parametrize("words, tags, spoken, spoken_tags", [
    (["at", "838", "am"], ["O", "B-time", "I-time"],
     "at eight hundred thirty eight am", ["O", "B-time", "I-time", "I-time", "I-time", "I-time"]),
    (["fare", "ap57"], ["O", "B-code"], "fare a p fifty seven", ["O", "B-code", "I-code", "I-code", "I-code"]),
    # An I- token's words all continue the slot; O tokens that grow stay O; st. is one word.
    (["st.", "louis", "after", "12"], ["B-city", "I-city", "O", "O"], "saint louis after twelve",
     ["B-city", "I-city", "O", "O"]),
    (["new", "york", "1991"], ["B-city", "I-city", "I-city"], "new york nineteen ninety one",
     ["B-city", "I-city", "I-city", "I-city", "I-city"]),
    # A token with no spoken words is dropped; the slot it began begins at the next token.
    (["to", "-", "dallas"], ["O", "B-city", "I-city"], "to dallas", ["O", "B-city"]),
])
def test_spoken_tokens_spread_each_tag_over_its_words(words, tags, spoken, spoken_tags):
    from data.slots import spoken_tokens

    out_words, out_tags = spoken_tokens(words, tags)
    assert " ".join(out_words) == spoken and out_tags == spoken_tags
    assert spoken_tokens(words) == (out_words, None)


def test_spoken_form_option_rewrites_every_split_and_marks_the_vocab(tmp_path):
    rows = [{"tokens": ["flight", "ap57", "at", "5", "pm"], "tags": ["O", "B-code", "O", "B-time", "I-time"],
             "intent": "atis_flight"}]
    for split in ("train", "validation"):
        _write(tmp_path / f"{split}.jsonl", rows)
    (tmp_path / "typed.txt").write_text("Flight 12 at 5 pm\n")
    assert "spoken_form" not in _dm(tmp_path).vocab
    dm = _dm(tmp_path, spoken_form=True, predict_file=str(tmp_path / "typed.txt"))
    assert dm.vocab["spoken_form"] is True
    dm.setup("fit")
    dm.setup("predict")
    val = dm.datasets["val"][0]
    assert val["words"] == ["flight", "a", "p", "fifty", "seven", "at", "five", "pm"]
    assert val["tags"] == ["O", "B-code", "I-code", "I-code", "I-code", "O", "B-time", "I-time"]
    assert 1 not in val["word_ids"]  # every spoken word is in the (spoken) training vocabulary
    assert dm.datasets["predict"][0]["words"] == ["flight", "twelve", "at", "five", "pm"]
