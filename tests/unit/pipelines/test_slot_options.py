"""SlotFillingModule options: each trains on a small generated corpus and decodes what the option promises."""

import pytest
import torch
import torch.nn.functional as F

from data.slots import IGNORE, collate_slots
from data.text import Vocabulary
from pipelines.slot_filling import SlotFillingModule
from tests.fixtures.slot_corpus import _example

VARIANTS = {
    "softmax": {},
    "window": {"context_window": 1},
    "crf": {"crf": True},
    "chars": {"char_features": "cnn"},
    "attention": {"joint": "attention", "intent_pooling": "attention"},
    "gated": {"joint": "slot_gated", "intent_pooling": "last"},
    "all": {"crf": True, "char_features": "cnn", "joint": "slot_gated", "word_dropout": 0.05, "context_window": 1},
}


@pytest.fixture(scope="module")
def corpus():
    import random

    rng = random.Random(0)
    rows = [_example(rng) for _ in range(40)]
    words = Vocabulary.build((w for r in rows for w in r["tokens"]), specials=("<pad>", "<unk>"), unk="<unk>")
    tags = sorted({t for r in rows for t in r["tags"]})
    intents = sorted({r["intent"] for r in rows})
    vocab = {"words": words.to_dict(), "tags": tags, "intents": intents}
    items = [{"id": i, "word_ids": words.encode(r["tokens"]), "tag_ids": [tags.index(t) for t in r["tags"]],
              "intent_id": intents.index(r["intent"]), "words": r["tokens"], "tags": r["tags"], "intent": r["intent"]}
             for i, r in enumerate(rows)]
    return vocab, collate_slots(items)


def _train(model: SlotFillingModule, batch: dict, steps: int = 50) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        tag_logits, intent_logits = model(batch["tokens"], batch["lengths"], batch["words"])
        loss = (model.model.tag_loss(tag_logits, batch["tags"], batch["lengths"])
                + F.cross_entropy(intent_logits, batch["intent"]))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_learns_the_corpus(corpus, name):
    vocab, batch = corpus
    torch.manual_seed(0)
    model = SlotFillingModule(vocab=vocab, embedding_dim=16, encoder={"hidden_size": 16}, dropout=0.0, **VARIANTS[name])
    losses = _train(model, batch)
    assert losses[-1] < 0.25 * losses[0], (name, losses[0], losses[-1])
    model.eval()
    with torch.no_grad():
        tag_logits, intent_logits = model(batch["tokens"], batch["lengths"], batch["words"])
    tags, intents = model._decode(tag_logits, intent_logits, batch["lengths"])
    right = sum(p == g for p, g in zip(tags, batch["tag_strings"], strict=True))
    assert right >= 0.9 * len(tags), (name, right)
    assert [len(t) for t in tags] == batch["lengths"].tolist()


def test_crf_decoding_obeys_bio_even_untrained(corpus):
    vocab, batch = corpus
    torch.manual_seed(3)
    model = SlotFillingModule(vocab=vocab, embedding_dim=8, encoder={"hidden_size": 8}, crf=True).eval()
    with torch.no_grad():
        tag_logits, intent_logits = model(batch["tokens"], batch["lengths"], batch["words"])
    tags, _ = model._decode(tag_logits, intent_logits, batch["lengths"])
    for sent in tags:
        for prev, cur in zip(["O", *sent], sent, strict=False):
            if cur.startswith("I-"):
                assert prev in (f"B-{cur[2:]}", cur), sent


def test_crf_loss_leaves_out_sentences_with_unknown_tags(corpus):
    vocab, batch = corpus
    model = SlotFillingModule(vocab=vocab, embedding_dim=8, encoder={"hidden_size": 8}, crf=True)
    tag_logits, _ = model(batch["tokens"], batch["lengths"], batch["words"])
    tags = batch["tags"].clone()
    base = model.model.tag_loss(tag_logits[1:], tags[1:], batch["lengths"][1:])
    tags[0, 0] = IGNORE  # a validation tag never seen in training
    assert model.model.tag_loss(tag_logits, tags, batch["lengths"]).item() == pytest.approx(base.item(), rel=1e-5)


def test_char_features_tell_unseen_words_apart(corpus):
    """Two unseen words share the <unk> embedding; the character CNN still gives them different inputs."""
    vocab, batch = corpus
    torch.manual_seed(0)
    model = SlotFillingModule(vocab=vocab, embedding_dim=8, encoder={"hidden_size": 8}, char_features="cnn").eval()
    unk = model.words.index("<unk>")
    tokens, lengths = torch.tensor([[unk], [unk]]), torch.tensor([1, 1])
    with torch.no_grad():
        a, _ = model(tokens, lengths, [["taipei"], ["1991"]])
        b, _ = model(tokens, lengths, [["taipei"], ["taipei"]])
    assert not torch.allclose(a[1], b[1]) and torch.allclose(a[0], b[0])


def test_select_by_sets_the_monitored_metric_and_options_are_checked(corpus):
    vocab, _ = corpus
    assert SlotFillingModule(vocab=vocab).monitor == "val/slot_f1"
    assert SlotFillingModule(vocab=vocab, select_by="joint").monitor == "val/joint"
    assert SlotFillingModule(vocab=vocab, select_by="exact_match").monitor == "val/exact_match"
    with pytest.raises(ValueError, match="context_window"):
        SlotFillingModule(vocab=vocab, context_window=-1)
    with pytest.raises(ValueError, match="word_dropout"):
        SlotFillingModule(vocab=vocab, word_dropout=1.0)
