"""CMUdict-format reading, the by-word split, G2P batches and the phoneme/word error rates."""

import pytest
import torch

from data.errors import DataError
from data.g2p import G2PDataModule, G2PVocab, cmudict_path, read_pronunciations, split_words
from pipelines.training.metrics import PhonemeErrorRates

DICT = """\
;;; comment line
abc EY1 B IY1 S IY1
abc(2) AE1 B K
a.m. EY2 EH1 M
cat K AE1 T # a comment
dog D AO1 G
dogs D AO1 G Z
emptyword
o'neil OW0 N IY1 L
"""


@pytest.fixture
def dict_file(tmp_path):
    p = tmp_path / "mini.dict"
    p.write_text(DICT.replace(";;; comment line\n", "# comment line\n"))
    return p


def test_read_pronunciations_merges_alternates_strips_stress_and_counts_skips(dict_file):
    prons, skipped = read_pronunciations(dict_file)
    assert prons["abc"] == [("EY", "B", "IY", "S", "IY"), ("AE", "B", "K")]
    assert prons["cat"] == [("K", "AE", "T")]
    assert "o'neil" in prons and "a.m." not in prons
    assert skipped == {"graphemes": 1, "no_phonemes": 1}
    stressed, _ = read_pronunciations(dict_file, keep_stress=True)
    assert stressed["cat"] == [("K", "AE1", "T")]
    with pytest.raises(DataError, match="not found: .*missing.dict"):
        read_pronunciations(dict_file.parent / "missing.dict")


def test_split_is_by_word_disjoint_and_seeded():
    words = [f"w{i}" for i in range(200)]
    a = split_words(words, (0.1, 0.05), seed=3)
    assert split_words(list(reversed(words)), (0.1, 0.05), seed=3) == a
    train, val, test = map(set, a)
    assert len(val) == 20 and len(test) == 10 and len(train) == 170
    assert not (train & val) and not (train & test) and not (val & test)
    assert split_words(words, (0.1, 0.05), seed=4) != a


def test_datamodule_batches_references_and_vocab(dict_file):
    dm = G2PDataModule(dict_path=str(dict_file), val_fraction=0.2, test_fraction=0.2, batch_size=4)
    vocab = G2PVocab.from_dict(dm.vocab)
    assert vocab.graphemes.itos[0] == "<pad>" and "'" in vocab.graphemes
    dm.setup("fit")
    n_train_words = len(dm._splits["train"])
    assert len(dm.datasets["train"]) >= n_train_words  # one example per (word, pronunciation)
    batch = next(iter(dm.val_dataloader()))
    assert batch["inputs"].shape[0] == len(batch["ids"]) == len(batch["references"])
    for word, length in zip(batch["ids"], batch["input_lengths"].tolist(), strict=True):
        assert len(word) == length
    with pytest.raises(ValueError, match="'x1'.*outside the grapheme vocabulary.*'1'"):
        vocab.encode_word("x1")


def test_shipped_cmudict_loads():
    prons, skipped = read_pronunciations(cmudict_path())
    assert len(prons) > 120_000
    assert ("K", "AE", "T") in prons["cat"]
    assert skipped.get("graphemes", 0) < 2000


def test_phoneme_error_rates_score_against_the_closest_reference():
    m = PhonemeErrorRates()
    m.update(["AE B K", "K AE T", "D AO"], [["EY B IY S IY", "AE B K"], ["K AE T"], ["D AO G"]])
    out = m.compute()
    # Errors: 0 (matches the 2nd pronunciation), 0, 1 deletion; reference lengths 3 + 3 + 3.
    assert float(out["per"]) == pytest.approx(1 / 9)
    assert float(out["wer"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no reference"):
        m.update(["A"], [[]])
    assert torch.is_tensor(out["per"])
