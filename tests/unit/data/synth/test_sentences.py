"""Sentences from files for the synthesiser: spoken form, slot tokens back, and corpora of a file's sentences."""

import json

import pytest

from data.spoken import slot_words, spoken_form
from data.synth import EVAL_VOICES, TRAIN_VOICES, VOICES, ensure_text_corpus, load_metadata
from data.synth.sentences import read_sentences


@pytest.mark.parametrize("tokens, spoken", [
    (["after", "5", "pm"], "after five pm"),
    (["flight", "1291"], "flight one thousand two hundred ninety one"),
    (["in", "1991"], "in nineteen ninety one"),
    (["at", "0900"], "at zero nine zero zero"),
    (["the", "dc10", "ap57"], "the d c ten a p fifty seven"),
    (["St.", "Louis", "I'd"], "saint louis i'd"),
    (["less", "than", "1000", "dollars"], "less than one thousand dollars"),
])
def test_spoken_form(tokens, spoken):
    assert " ".join(spoken_form(tokens)) == spoken


def test_slot_words_lowercase_and_abbreviation_back():
    assert slot_words("  From SAINT Louis at five pm ") == ["from", "st.", "louis", "at", "five", "pm"]
    assert slot_words("") == []


def test_read_sentences_from_jsonl_and_text(tmp_path):
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["to", "denver", "at", "5"]}) + "\n\n" + json.dumps({"text": "Hi"}) + "\n")
    assert read_sentences(jsonl) == ["to denver at five", "hi"]
    txt = tmp_path / "s.txt"
    txt.write_text("arrive 2 pm\n...\n")
    assert read_sentences(txt) == ["arrive two pm"]
    jsonl.write_text('{"tokens": ["a"]}\n[1]\n')
    with pytest.raises(ValueError, match=r"s.jsonl:2: expected a JSON object with tokens or text"):
        read_sentences(jsonl)


def test_voices_split_into_training_and_evaluation():
    assert set(TRAIN_VOICES) | set(EVAL_VOICES) == set(VOICES) and not set(TRAIN_VOICES) & set(EVAL_VOICES)


def test_text_corpus_holds_out_the_last_sentences_and_the_evaluation_voices(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps({"tokens": [w, "to", "boston"]}) + "\n" for w in "one two three four five".split()))
    root = ensure_text_corpus(src, (10, 2, 1), root=tmp_path / "corpus", workers=1, progress=False)
    train, val, test = (load_metadata(root, s) for s in ("train", "validation", "test"))
    assert [r["text"] for r in train] == ["one to boston", "two to boston"]
    assert [r["text"] for r in test] == ["three to boston"]
    assert [r["text"] for r in val] == ["four to boston", "five to boston"]
    assert all(r["voice"] in TRAIN_VOICES for r in train + val + test)
    with pytest.raises(ValueError, match="5 sentences cannot give 4 validation and 1 test"):
        ensure_text_corpus(src, (10, 4, 1), root=tmp_path / "c2", workers=1, progress=False)
