"""SentencePiece subword tokenizer: in-memory training, round trips, checkpoint-safe serialisation, errors."""

import io
import pickle

import pytest
import torch

from data.subwords import SentencePieceTokenizer
from data.synth import generate_texts
from data.text import BLANK, UNK
from data.tokenizers import tokenizer_from_dict
from modules.ctc_decoding import prefix_beam_search, tokens_to_text

SP_SPACE = "\u2581"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return generate_texts(200, seed=0)


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def tok(request, texts) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(texts, vocab_size=128, model_type=request.param)


def test_layout_blank_unk_and_vocab_size(tok):
    assert tok.kind == "sentencepiece" and tok.blank == 0
    assert tok.tokens[0] == BLANK and tok.tokens[1] == UNK
    assert len(tok) == len(tok.tokens)
    assert 100 <= len(tok) <= 128  # a soft limit, close to what was asked
    assert len(set(tok.tokens)) == len(tok.tokens)
    assert any(t.startswith(SP_SPACE) and len(t) > 1 for t in tok.tokens)
    assert not {"<s>", "</s>", "<pad>"} & set(tok.tokens)


def test_round_trip_and_ids_never_blank_or_unk(tok, texts):
    for text in texts:
        ids = tok.encode(text)
        assert ids and all(0 < i < len(tok) for i in ids)
        assert tok.unk not in ids
        assert tok.decode(ids) == text
        assert tokens_to_text(ids, tok.tokens) == text
    # CTC output: blanks between pieces are dropped
    ids = tok.encode(texts[0])
    assert tok.decode([0, *[x for i in ids for x in (i, 0)]]) == texts[0]
    # subwords compress the text
    assert sum(len(tok.encode(t)) for t in texts) < 0.7 * sum(len(t) for t in texts)


def test_training_is_deterministic(texts):
    a = SentencePieceTokenizer.train(texts, vocab_size=64, seed=3)
    b = SentencePieceTokenizer.train(list(texts), vocab_size=64, seed=3)
    assert a.tokens == b.tokens and a.model_proto == b.model_proto


def test_dict_round_trip_and_weights_only_checkpoint(tok, texts):
    d = tok.to_dict()
    assert d["kind"] == "sentencepiece" and isinstance(d["model"], str)
    assert all(isinstance(v, str) for v in d.values())
    buf = io.BytesIO()
    torch.save({"hyper_parameters": {"vocab": d}}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["hyper_parameters"]["vocab"]
    for again in (SentencePieceTokenizer.from_dict(loaded), tokenizer_from_dict(loaded),
                  pickle.loads(pickle.dumps(tok))):
        assert isinstance(again, SentencePieceTokenizer)
        assert again.tokens == tok.tokens
        assert all(again.encode(t) == tok.encode(t) for t in texts)


def test_unknown_characters_raise_naming_them(tok):
    assert tok.unknown_chars("the cat") == set()
    assert tok.unknown_chars("the Cat\t9") == {"C", "\t", "9"}
    with pytest.raises(ValueError, match=r"'9CX'"):
        tok.encode("the Cat X9")
    with pytest.raises(ValueError, match=SP_SPACE):
        tok.encode(f"the{SP_SPACE}cat")  # the marker itself is not text


def test_required_chars_cover_letters_absent_from_training():
    tok = SentencePieceTokenizer.train(["the cat sat", "a cat"], vocab_size=60, required_chars=" 'abcdefghijklmnopqrstuvwxyz")
    assert tok.decode(tok.encode("quiz jokes")) == "quiz jokes"
    assert "q" not in SentencePieceTokenizer.train(["the cat sat"], vocab_size=60).tokens


def test_bad_arguments_and_foreign_dicts(texts):
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceTokenizer.train(texts, model_type="word")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too small"):
        SentencePieceTokenizer.train(texts, vocab_size=10)
    with pytest.raises(ValueError, match="no text"):
        SentencePieceTokenizer.train(["", "  "])
    with pytest.raises(ValueError, match="sentencepiece"):
        SentencePieceTokenizer.from_dict({"kind": "char", "alphabet": "ab"})
    with pytest.raises(ValueError, match="model"):
        SentencePieceTokenizer.from_dict({"kind": "sentencepiece", "model": "not base64!"})


def test_beam_search_word_boundaries_with_subword_tokens(tok):
    class RecordingLM:
        order = 2

        def __init__(self):
            self.words = []

        def score(self, word, context):
            self.words.append(word)
            return -1.0

    text = "the wild owl chases that horse"
    ids = tok.encode(text)
    lp = torch.full((len(ids), len(tok)), -20.0)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    lm = RecordingLM()
    best = prefix_beam_search(lp.log_softmax(-1), tokens=tok.tokens, beam_size=2, lm=lm, keep_top_k=1)
    assert best[0][0] == ids
    assert lm.words[-len(text.split()) - 1 :] == [*text.split(), "</s>"]


def test_speech_datamodule_trains_sentencepiece_on_transcripts(speech_corpus_dir):
    from data.speech import SpeechDataModule

    dm = SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), tokenizer="sentencepiece",
                          sentencepiece_vocab_size=64, batch_size=4)
    tok = dm.tokenizer
    assert isinstance(tok, SentencePieceTokenizer) and len(tok) <= 64
    train_texts = [t for part in dm._read("train") for t in part.texts()]
    vocab = dm.vocab
    assert vocab["kind"] == "sentencepiece"
    other = SpeechDataModule(dataset=None, data_dir=str(speech_corpus_dir), tokenizer="sentencepiece")
    other.vocab = vocab
    assert other.tokenizer.tokens == tok.tokens
    assert other.vocab == vocab
    for split in ("train", "validation", "test"):
        for text in (t for part in dm._read(split) for t in part.texts()):
            ids = tok.encode(text)
            assert other.tokenizer.encode(text) == ids and tok.decode(ids) == text
    assert train_texts
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    for i in range(len(batch["ids"])):
        n = batch["target_lengths"][i]
        assert tok.decode(batch["targets"][i, :n].tolist()) == batch["texts"][i]
