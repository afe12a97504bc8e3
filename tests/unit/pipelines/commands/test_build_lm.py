"""`rnnlab build-lm`: held-out sentences reported and left out, closed vocabulary, one-line errors."""

import json

import pytest

from modules.ngram_lm import NGramLM
from pipelines.commands.build_lm import main


def test_holdout_overlap_is_reported_and_removed(tmp_path, capsys):
    text = tmp_path / "lm.txt"
    text.write_text("The cat sat.\nA dog ran\nthe cat sat\nbirds fly high\n")
    held = tmp_path / "val.jsonl"
    held.write_text("\n".join(json.dumps({"text": t}) for t in ["THE CAT SAT", "fish swim"]) + "\n")
    out = tmp_path / "lm.arpa"
    assert main([str(text), "--order", "2", "--holdout", str(held), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "holdout overlap: 1 of 2 held-out sentences occur verbatim in the LM text (2 lines left out)" in err
    lm = NGramLM.from_arpa(out)
    assert "cat" not in lm.vocab and {"dog", "birds"} <= lm.vocab


def test_closed_vocabulary_makes_other_words_cost_far_more_than_any_digit(tmp_path):
    text = tmp_path / "digits.txt"
    text.write_text("one two three\nfour five six\nseven eight nine zero\n")
    out = tmp_path / "digits.arpa"
    assert main([str(text), "--order", "1", "--closed-vocabulary", "--out", str(out)]) == 0
    lm = NGramLM.from_arpa(out)
    assert lm.vocab - {"<s>", "</s>", "<unk>"} == {"zero", "one", "two", "three", "four", "five", "six", "seven",
                                                    "eight", "nine"}
    # An unknown word costs ~1e-30: far more than three digits together, so words are never run together.
    assert lm.score("cat") == pytest.approx(-69.0, abs=1e-6)
    assert lm.score("cat") < 3 * lm.score("one") - 50


@pytest.mark.parametrize("args, match", [
    (["missing.txt"], "no such file"),
    (["{empty}"], "no sentences found"),
    (["{text}", "--holdout", "{text}"], "every sentence of the LM text is a held-out sentence"),
    (["{text}", "--order", "0"], "--order must be >= 1"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, args, match):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "text.txt").write_text("hello world\n")
    args = [a.format(empty=tmp_path / "empty.txt", text=tmp_path / "text.txt") for a in args]
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "x.arpa")])
    assert e.value.code == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("rnnlab build-lm: error:") and match in errors[0]


def test_add_words_share_the_unknown_mass(tmp_path):
    import math

    text = tmp_path / "lm.txt"
    text.write_text("the cat sat\nthe dog ran\n")
    words = tmp_path / "words.txt"
    words.write_text("Zebra\nquokka\ncat\n")
    plain, added = tmp_path / "plain.arpa", tmp_path / "added.arpa"
    assert main([str(text), "--order", "2", "--out", str(plain)]) == 0
    assert main([str(text), "--order", "2", "--add-words", str(words), "--add-words-mass", "0.2",
                 "--closed-vocabulary", "--out", str(added)]) == 0
    p, a = NGramLM.from_arpa(plain), NGramLM.from_arpa(added)
    assert {"zebra", "quokka"} <= a.vocab and a.score("<unk>") == pytest.approx(-69.0, abs=1e-6)
    # zebra and quokka split 20% of the unigram mass; the other unigrams keep 80% of theirs; bigrams stay.
    assert a.score("zebra") == pytest.approx(math.log(0.1), abs=1e-6)
    assert a.score("dog") == pytest.approx(p.score("dog") + math.log(0.8), abs=1e-6)
    assert a.score("cat", ("the",)) == pytest.approx(p.score("cat", ("the",)), abs=1e-6)
    assert a.score("xyzzy") < a.score("zebra") - 5
