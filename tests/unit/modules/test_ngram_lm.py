"""Tests for modules.ngram_lm: ARPA reading/writing and Kneser-Ney estimation of the word n-gram LM."""

from __future__ import annotations

import gzip
import math

import pytest

from modules.ngram_lm import NGramLM, train_ngram

LN10 = math.log(10.0)


# ------------------------------------------------------------------------------------------- ARPA

ARPA = """\
This preamble is ignored.

\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.5
-0.5\t</s>
-0.3\tthe\t-0.2
-0.7\tcat\t-0.1

\\2-grams:
-0.1\t<s> the
-0.2\tthe cat
-0.3\tcat </s>

\\end\\
"""


@pytest.fixture
def arpa_path(tmp_path):
    path = tmp_path / "small.arpa"
    path.write_text(ARPA, encoding="utf-8")
    return path


def test_arpa_scores_with_backoff_and_unk(arpa_path):
    lm = NGramLM.from_arpa(arpa_path)
    assert lm.order == 2
    assert lm.vocab == {"<unk>", "<s>", "</s>", "the", "cat"}
    assert lm.score("the", ("<s>",)) == pytest.approx(-0.1 * LN10)
    assert lm.score("cat", ("the",)) == pytest.approx(-0.2 * LN10)
    assert lm.score("cat", ("<s>",)) == pytest.approx((-0.5 - 0.7) * LN10)  # backoff(<s>) + p(cat)
    assert lm.score("</s>", ("the",)) == pytest.approx((-0.2 - 0.5) * LN10)
    assert lm.score("the", ("cat",)) == pytest.approx((-0.1 - 0.3) * LN10)
    assert lm.score("dog", ("the",)) == pytest.approx((-0.2 - 1.0) * LN10)  # unk + backoff
    assert lm.score("cat", ("dog",)) == pytest.approx(-0.7 * LN10)  # unknown context -> <unk>, no backoff
    assert lm.score("the", ()) == pytest.approx(-0.3 * LN10)
    assert lm.score("the", ("x", "y", "<s>")) == pytest.approx(-0.1 * LN10)  # truncated to order-1
    assert lm.score_sentence("the cat") == pytest.approx((-0.1 - 0.2 - 0.3) * LN10)


def test_arpa_unknown_without_unk_uses_floor(tmp_path):
    text = ARPA.replace("ngram 1=5", "ngram 1=4").replace("-1.0\t<unk>\n", "")
    path = tmp_path / "nounk.arpa"
    path.write_text(text)
    assert NGramLM.from_arpa(path).score("dog", ("the",)) == pytest.approx(math.log(1e-10))
    assert NGramLM.from_arpa(path, unk_floor=-5.0).score("dog") == -5.0


def test_arpa_gzip(arpa_path, tmp_path):
    gz = tmp_path / "small.arpa.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(ARPA)
    assert NGramLM.from_arpa(gz).score("cat", ("<s>",)) == pytest.approx((-0.5 - 0.7) * LN10)


@pytest.mark.parametrize(
    "old,new,line,needle",
    [
        ("-0.2\tthe cat", "-0.2\tthe", 16, "fields"),
        ("-0.7\tcat\t-0.1", "abc\tcat\t-0.1", 12, "non-numeric"),
        ("ngram 2=3", "ngram 2=4", 19, "declares ngram 2=4"),
        ("ngram 2=3", "ngram two", 5, "bad count line"),
        ("\\2-grams:", "\\3-grams:", 14, "not declared"),
        ("\\end\\\n", "", 18, "missing \\end\\"),
        ("\\data\\", "data", 19, "no \\data\\ header"),
        ("-0.5\t</s>", "0.5\t</s>", 10, "<= 0"),
    ],
)
def test_arpa_malformed_names_file_and_line(tmp_path, old, new, line, needle):
    assert old in ARPA
    path = tmp_path / "bad.arpa"
    path.write_text(ARPA.replace(old, new))
    with pytest.raises(ValueError) as err:
        NGramLM.from_arpa(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert needle in msg
    assert "\n" not in msg


# ----------------------------------------------------------------------------------- train_ngram

CORPUS = ["the cat sat on the mat", "the dog sat", "a cat ran", "the cat ate the rat", "a dog ate"]


def test_train_ngram_hand_computed_values():
    lm = train_ngram(["a b", "a"], order=2, discount=0.5)
    # continuation counts: a=1 ({<s>}), b=1 ({a}), </s>=2 ({a, b}); vocab {a, b, </s>, <unk>}
    assert math.exp(lm.score("a")) == pytest.approx(0.5 / 4 + 0.5 * 3 / 4 / 4)
    assert math.exp(lm.score("</s>")) == pytest.approx(1.5 / 4 + 0.5 * 3 / 4 / 4)
    assert math.exp(lm.score("zzz")) == pytest.approx(0.5 * 3 / 4 / 4)  # <unk>
    p_a = 0.21875
    assert math.exp(lm.score("a", ("<s>",))) == pytest.approx(1.5 / 2 + 0.25 * p_a)
    assert math.exp(lm.score("b", ("<s>",))) == pytest.approx(0.25 * p_a)
    assert math.exp(lm.score("b", ("a",))) == pytest.approx(0.5 / 2 + 0.5 * p_a)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_train_ngram_is_normalised(order):
    lm = train_ngram(CORPUS, order=order)
    assert lm.order == order
    words = sorted(lm.vocab - {"<s>"})
    assert "<unk>" in words and "</s>" in words
    contexts = [(), ("<s>",), ("the",), ("cat",), ("<s>", "the"), ("the", "cat"), ("cat", "sat"), ("zebra",)]
    for ctx in contexts:
        total = sum(math.exp(lm.score(w, ctx)) for w in words)
        assert total == pytest.approx(1.0, abs=1e-9), (order, ctx)
    assert lm.score("cat", ("<s>", "the")) > lm.score("dog", ("<s>", "the")) or order == 1


@pytest.mark.parametrize("suffix", [".arpa", ".arpa.gz"])
def test_train_to_arpa_round_trip(tmp_path, suffix):
    lm = train_ngram(CORPUS, order=3)
    path = tmp_path / f"lm{suffix}"
    lm.to_arpa(path)
    loaded = NGramLM.from_arpa(path)
    assert loaded.order == 3 and loaded.vocab == lm.vocab
    words = sorted(lm.vocab)
    for ctx in [(), ("<s>",), ("the",), ("<s>", "the"), ("the", "cat"), ("a", "dog"), ("dog", "zebra")]:
        for w in [*words, "zebra"]:
            assert loaded.score(w, ctx) == pytest.approx(lm.score(w, ctx), abs=1e-9)


def test_train_ngram_validation():
    with pytest.raises(ValueError):
        train_ngram([], order=2)
    with pytest.raises(ValueError):
        train_ngram(CORPUS, order=0)
    with pytest.raises(ValueError):
        train_ngram(CORPUS, discount=1.0)
