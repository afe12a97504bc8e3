"""RNN slot filling: embedding -> recurrent encoder -> per-token tag head + sentence intent head, trained jointly.

The network is :class:`~modules.tagging.SlotTagger` (``self.model``); this module holds the vocabularies, the
loss, decoding to tag names and the metrics.

Run it with ``make train-slots`` or ``rnnlab fit -c defaults -c slots``. Options add the classic improvements:
a word context window (Mesnil et al. 2015), character features, the attention-based joint model (Liu & Lane
2016) or the slot-gated one (Goo et al. 2018), a CRF output layer and word dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from data.ranges import NonNegativeFloat, NonNegativeInt, PositiveInt, UnitIntervalRightOpen
from data.slots import IGNORE, collate_slots, sentences_to_examples, to_spoken_form
from data.text import Vocabulary
from modules.tagging import SlotTagger
from pipelines.base import EncoderOptions, RnnlabModule, flat_names
from pipelines.training.metrics import SentenceExactMatch, SlotF1


@dataclasses.dataclass(frozen=True)
class TaggerEncoderOptions(EncoderOptions):
    """:class:`~pipelines.base.EncoderOptions` whose cell may also be ``elman`` (simple RNN) or ``jordan``
    (output fed back; the from-scratch cells, which ``implementation: auto`` picks for it)."""

    cell: Literal["elman", "jordan", "lstm", "gru"] = "lstm"


class SlotFillingModule(RnnlabModule):
    """Joint slot filling (many-to-many) and intent detection (many-to-one).

    Args:
        vocab: ``{"words": Vocabulary dict, "tags": [...], "intents": [...]}`` from the DataModule (linked by the
            CLI, saved in the checkpoint); ``"spoken_form": true`` where the data was in spoken form
            (``data.spoken_form``), which :meth:`tag_sentences` then applies to its input.
        embedding_dim: Word embedding size.
        encoder: The recurrent encoder (:class:`TaggerEncoderOptions`): cell ``elman``, ``jordan``, ``lstm`` or
            ``gru``; ``implementation`` ``fused`` (torch's nn.RNN/LSTM/GRU), ``reference`` (from-scratch cells) or
            ``auto`` (fused where torch has the cell, reference for Jordan); size, layers, directions.
        dropout: On the embeddings and the encoder outputs, and between encoder layers unless ``encoder.dropout``
            is set.
        intent_pooling: How the sentence vector for the intent head is made from the encoder outputs (``last``:
            both directions' final states).
        intent_weight: Weight of the intent loss in the joint loss.
        context_window: Each word's input also holds the embeddings of this many words on each side.
        char_features: ``cnn`` adds a character-CNN vector to each word's embedding (helps unseen words).
        char_dim / char_channels: Character embedding size and CNN output size.
        joint: ``pooled`` (tags from each state, intent from the pooled states), ``attention`` (Liu & Lane
            2016: each tag also reads an attention context; the intent adds an attention-pooled vector) or
            ``slot_gated`` (Goo et al. 2018: the intent context gates each slot context).
        crf: Score whole tag sequences with a linear-chain CRF (BIO-impossible transitions forbidden) and
            decode with Viterbi, instead of an independent softmax per word.
        word_dropout: Probability of replacing a training word by ``<unk>``, so the ``<unk>`` vector unseen
            words get at test time is trained.
        select_by: The validation metric that picks ``best.ckpt``: ``slot_f1``, ``joint`` (mean of slot F1 and
            intent accuracy) or ``exact_match`` (all tags and the intent right).
        legacy: Flat options from before ``encoder`` (``cell``, ``hidden_size``, ``num_layers``, ...).
    """

    monitor = "val/slot_f1"
    monitor_mode = "max"
    run_prefix = "slots"
    legacy_options = flat_names("encoder", ("cell", "implementation", "hidden_size", "num_layers", "bidirectional"))
    # The layers of checkpoints from before SlotTagger, which now holds them (see upgrade_state_dict).
    legacy_state_prefixes = {f"{name}.": f"model.{name}." for name in (
        "embedding", "char_cnn", "encoder", "pooling", "slot_attention", "intent_attention", "slot_gate", "tag_head",
        "intent_head", "crf")}

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        embedding_dim: PositiveInt = 100,
        encoder: TaggerEncoderOptions = TaggerEncoderOptions(hidden_size=128, num_layers=1),
        dropout: UnitIntervalRightOpen = 0.3,
        intent_pooling: Literal["mean", "max", "last", "attention"] = "max",
        intent_weight: NonNegativeFloat = 1.0,
        context_window: NonNegativeInt = 0,
        char_features: Literal["none", "cnn"] = "none",
        char_dim: PositiveInt = 32,
        char_channels: PositiveInt = 64,
        joint: Literal["pooled", "attention", "slot_gated"] = "pooled",
        crf: bool = False,
        word_dropout: UnitIntervalRightOpen = 0.0,
        select_by: Literal["slot_f1", "joint", "exact_match"] = "slot_f1",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        **legacy: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler)
        if vocab is None:
            raise ValueError("SlotFillingModule needs vocab (the CLI links it from the DataModule)")
        options = self.save_network_options(legacy, encoder=encoder, dropout=dropout)
        self.words = Vocabulary.from_dict(vocab["words"])
        self.tags: list[str] = list(vocab["tags"])
        self.intents: list[str] = list(vocab["intents"])
        self.spoken_form = bool(vocab.get("spoken_form", False))
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        self.monitor = {"slot_f1": "val/slot_f1", "joint": "val/joint", "exact_match": "val/exact_match"}[select_by]
        # Characters of the training vocabulary; 0 = padding, 1 = a character never seen in training.
        self.chars = ({c: i + 2 for i, c in enumerate(sorted({c for w in self.words.itos for c in w}))}
                      if char_features == "cnn" else {})
        self.model = SlotTagger.from_options(
            encoder=options["encoder"], vocab_size=len(self.words), tags=self.tags, num_intents=len(self.intents),
            embedding_dim=embedding_dim, dropout=dropout, intent_pooling=intent_pooling,
            context_window=context_window, num_chars=len(self.chars) + 2 if char_features == "cnn" else 0,
            char_dim=char_dim, char_channels=char_channels, joint=joint, crf=crf)
        self.slot_f1 = nn.ModuleDict({s: SlotF1() for s in ("val", "test")})
        self.intent_acc = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.exact = nn.ModuleDict({s: SentenceExactMatch() for s in ("val", "test")})

    def char_ids(self, words: list[list[str]], length: int) -> torch.Tensor:
        """``(B, length, L)`` character ids of each sentence's words (0 = padding, 1 = unseen character)."""
        longest = max(1, max((len(w) for sent in words for w in sent), default=1))
        pad_word = [0] * longest
        rows = [[[self.chars.get(c, 1) for c in w] + [0] * (longest - len(w)) for w in sent[:length]]
                + [pad_word] * (length - len(sent[:length])) for sent in words]
        # One tensor from nested lists: far cheaper than a small tensor per word.
        return torch.tensor(rows, dtype=torch.long)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor,
                words: list[list[str]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag scores ``(B, T, n_tags)`` and intent logits ``(B, n_intents)`` for padded ``tokens (B, T)``.

        ``words`` (the sentences' words as strings) feed the character features; without them the words are
        read back from the vocabulary (unknown words then have no characters).
        """
        chars = None
        if self.model.char_cnn is not None:
            if words is None:
                words = [[self.words.itos[i] for i in row[:n]]
                         for row, n in zip(tokens.tolist(), lengths.tolist(), strict=True)]
            chars = self.char_ids(words, tokens.size(1)).to(tokens.device)
        return self.model(tokens, lengths, chars)

    def _shared_step(self, batch: dict, stage: str, batch_idx: int = 0) -> torch.Tensor:
        tokens = batch["tokens"]
        if stage == "train" and self.hparams.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.hparams.word_dropout) & (tokens > 0)
            tokens = tokens.masked_fill(drop, self.words.index(self.words.unk))
        tag_logits, intent_logits = self(tokens, batch["lengths"], batch.get("words"))
        tag_loss = self.model.tag_loss(tag_logits, batch["tags"], batch["lengths"], ignore_index=IGNORE)
        has_intent = (batch["intent"] != IGNORE).any()
        intent_loss = (F.cross_entropy(intent_logits, batch["intent"], ignore_index=IGNORE) if has_intent
                       else intent_logits.sum() * 0.0)
        loss = tag_loss + self.hparams.intent_weight * intent_loss
        bs = batch["tokens"].size(0)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        self.log(f"{stage}/tag_loss", tag_loss, batch_size=bs, sync_dist=stage != "train")
        self.log(f"{stage}/intent_loss", intent_loss, batch_size=bs, sync_dist=stage != "train")
        if stage in ("val", "test"):
            pred_tags, pred_intents = self._decode(tag_logits, intent_logits, batch["lengths"])
            gold_tags = batch["tag_strings"]
            gold_intents = batch["intent_strings"]
            self.slot_f1[stage].update(pred_tags, gold_tags)
            correct = torch.tensor([float(p == g) for p, g in zip(pred_intents, gold_intents, strict=True)],
                                   device=self.device)
            self.intent_acc[stage].update(correct)
            self.exact[stage].update(pred_tags, gold_tags, pred_intents, gold_intents)
        return loss

    def _decode(self, tag_logits, intent_logits, lengths) -> tuple[list[list[str]], list[str]]:
        tags = [[self.tags[i] for i in row] for row in self.model.decode_tags(tag_logits, lengths)]
        intents = [self.intents[i] if self.intents else "" for i in intent_logits.argmax(-1).tolist()]
        return tags, intents

    def _epoch_end(self, stage: str) -> None:
        f1 = self.slot_f1[stage].compute()
        intent_acc = self.intent_acc[stage].compute() * 100
        self.log(f"{stage}/slot_f1", f1["f1"] * 100, prog_bar=True)
        self.log(f"{stage}/slot_precision", f1["precision"] * 100)
        self.log(f"{stage}/slot_recall", f1["recall"] * 100)
        self.log(f"{stage}/intent_acc", intent_acc, prog_bar=True)
        self.log(f"{stage}/joint", (f1["f1"] * 100 + intent_acc) / 2)
        self.log(f"{stage}/exact_match", self.exact[stage].compute() * 100)
        for m in (self.slot_f1[stage], self.intent_acc[stage], self.exact[stage]):
            m.reset()

    def predict_step(self, batch, batch_idx):
        tag_logits, intent_logits = self(batch["tokens"], batch["lengths"], batch.get("words"))
        tags, intents = self._decode(tag_logits, intent_logits, batch["lengths"])
        return [{"words": w, "tags": t, "intent": i} for w, t, i in zip(batch["words"], tags, intents, strict=True)]

    @torch.no_grad()
    def tag_sentences(self, sentences: list[str], batch_size: int = 64) -> list[dict]:
        """Tags raw sentences (whitespace-tokenised); returns ``[{"words", "tags", "intent"}]`` per non-empty line.

        A model trained on spoken form tags the spoken form of each sentence (``5 pm`` -> ``five pm``; words
        already spoken stay as they are), and ``words`` are those spoken words.
        """
        self.eval()
        examples = sentences_to_examples(sentences)
        if self.spoken_form:
            examples = to_spoken_form(examples)
        out = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            items = [{"id": ex.id, "word_ids": self.words.encode(ex.words), "tag_ids": None, "intent_id": IGNORE,
                      "words": ex.words, "tags": None, "intent": None} for ex in chunk]
            batch = collate_slots(items)
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out.extend(self.predict_step(batch, 0))
        return out
