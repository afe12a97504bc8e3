"""Vocabularies, normalisers and the character tokenizer."""

import pytest

from data.text import CharTokenizer, Vocabulary, normalize_text
from data.tokenizers import tokenizer_from_dict


def test_vocabulary_build_order_unk_and_round_trip():
    v = Vocabulary.build(["b", "a", "b", "c", "c", "c"], specials=("<pad>", "<unk>"), unk="<unk>")
    assert v.itos == ["<pad>", "<unk>", "c", "b", "a"]
    assert v.encode(["a", "zzz"]) == [4, 1]
    assert Vocabulary.from_dict(v.to_dict()).itos == v.itos
    strict = Vocabulary(["x", "y"])
    with pytest.raises(KeyError):
        strict.index("z")


def test_vocabulary_min_freq_and_duplicates():
    v = Vocabulary.build(["a", "a", "b"], specials=("<unk>",), min_freq=2, unk="<unk>")
    assert v.itos == ["<unk>", "a"]
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Lord, but I'm glad to see you again, Phil.", "lord but i'm glad to see you again phil"),
        ("Twenty-one -- 'quoted' words", "twenty one quoted words"),
        ("Café 42", "cafe four two"),
        ("  many   spaces\t", "many spaces"),
    ],
)
def test_normalize_text_asr_chars(raw, expected):
    assert normalize_text(raw) == expected


def test_char_tokenizer_round_trip_and_errors():
    tok = CharTokenizer()
    assert len(tok) == 29 and tok.blank == 0
    ids = tok.encode("it's a cat")
    assert tok.decode(ids) == "it's a cat"
    assert 0 not in ids
    with pytest.raises(ValueError, match="outside the tokenizer alphabet"):
        tok.encode("cat!")
    assert tokenizer_from_dict(tok.to_dict()).tokens == tok.tokens


def test_ctc_transcripts_have_no_double_or_edge_spaces():
    """CTC may emit the space token twice in a row (with a blank between) or at the ends; the text never shows it."""
    import torch

    from modules.ctc_decoding import CTCBeamDecoder, greedy_decode

    tok = CharTokenizer()
    sp, a, b = tok.encode(" ab")
    path = [sp, 0, sp, a, 0, sp, 0, sp, sp, b, 0, sp]  # per-frame best tokens
    log_probs = torch.full((1, len(path), len(tok)), -10.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    lengths = torch.tensor([len(path)])
    assert tok.decode(greedy_decode(log_probs, lengths)[0]) == "a b"
    beam = CTCBeamDecoder(tokens=tok.tokens, blank=0, beam_size=4)
    assert tok.decode(beam.decode(log_probs, lengths)[0]) == "a b"
    assert tok.decode([]) == "" and tok.decode([sp, sp]) == ""
