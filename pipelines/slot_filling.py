"""RNN slot filling: embedding -> recurrent encoder -> per-token tag head + sentence intent head, trained jointly.

Run it with ``make train-slots`` or ``rnnlab fit -c defaults -c slots``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from data.slots import IGNORE, collate_slots, sentences_to_examples
from data.text import Vocabulary
from modules.encoders import RecurrentEncoder
from pipelines.base import RnnlabModule
from pipelines.training.metrics import SentenceExactMatch, SlotF1


class SlotFillingModule(RnnlabModule):
    """Joint slot filling (many-to-many) and intent detection (many-to-one).

    Args:
        vocab: ``{"words": Vocabulary dict, "tags": [...], "intents": [...]}`` from the DataModule (linked by the
            CLI, saved in the checkpoint).
        embedding_dim: Word embedding size.
        cell: Recurrent cell: ``elman`` (simple RNN), ``jordan`` (output fed back), ``lstm`` or ``gru``.
        implementation: ``fused`` (torch's nn.RNN/LSTM/GRU), ``reference`` (from-scratch cells) or ``auto``
            (fused where torch has the cell, reference for Jordan).
        hidden_size / num_layers / bidirectional / dropout: Encoder shape; dropout also on embeddings.
        intent_pooling: How the sentence vector for the intent head is made from the encoder outputs.
        intent_weight: Weight of the intent loss in the joint loss.
    """

    monitor = "val/slot_f1"
    monitor_mode = "max"
    run_prefix = "slots"

    def __init__(
        self,
        *,
        vocab: dict | None = None,
        embedding_dim: int = 100,
        cell: Literal["elman", "jordan", "lstm", "gru"] = "lstm",
        implementation: Literal["auto", "fused", "reference"] = "auto",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.3,
        intent_pooling: Literal["mean", "max", "last"] = "max",
        intent_weight: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, lr_scheduler=lr_scheduler)
        if vocab is None:
            raise ValueError("SlotFillingModule needs vocab (the CLI links it from the DataModule)")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.words = Vocabulary.from_dict(vocab["words"])
        self.tags: list[str] = list(vocab["tags"])
        self.intents: list[str] = list(vocab["intents"])
        impl = implementation if implementation != "auto" else ("reference" if cell == "jordan" else "fused")
        self.embedding = nn.Embedding(len(self.words), embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.encoder = RecurrentEncoder(input_size=embedding_dim, hidden_size=hidden_size, num_layers=num_layers,
                                        cell=cell, bidirectional=bidirectional,
                                        dropout=dropout if num_layers > 1 else 0.0, implementation=impl)
        d = self.encoder.output_size
        self.tag_head = nn.Linear(d, len(self.tags))
        self.intent_head = nn.Linear(d, max(1, len(self.intents)))
        self.slot_f1 = nn.ModuleDict({s: SlotF1() for s in ("val", "test")})
        self.intent_acc = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.exact = nn.ModuleDict({s: SentenceExactMatch() for s in ("val", "test")})

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag logits ``(B, T, n_tags)`` and intent logits ``(B, n_intents)`` for padded ``tokens (B, T)``."""
        x = self.dropout(self.embedding(tokens))  # (B, T, E)
        h, _ = self.encoder(x, lengths)  # (B, T, D*H), zeros past each length
        h = self.dropout(h)
        mask = (torch.arange(h.size(1), device=h.device)[None, :] < lengths[:, None].to(h.device))[..., None]
        pooling = self.hparams.intent_pooling
        if pooling == "mean":
            pooled = h.sum(1) / lengths[:, None].to(h)
        elif pooling == "max":
            pooled = h.masked_fill(~mask, float("-inf")).amax(1)
        else:
            pooled = h[torch.arange(h.size(0)), (lengths - 1).to(h.device)]
        return self.tag_head(h), self.intent_head(pooled)

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        tag_logits, intent_logits = self(batch["tokens"], batch["lengths"])
        tag_loss = F.cross_entropy(tag_logits.flatten(0, 1), batch["tags"].flatten(), ignore_index=IGNORE)
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
        tag_ids = tag_logits.argmax(-1).tolist()
        tags = [[self.tags[i] for i in row[:n]] for row, n in zip(tag_ids, lengths.tolist(), strict=True)]
        intents = [self.intents[i] if self.intents else "" for i in intent_logits.argmax(-1).tolist()]
        return tags, intents

    def _log_epoch_metrics(self, stage: str) -> None:
        f1 = self.slot_f1[stage].compute()
        self.log(f"{stage}/slot_f1", f1["f1"] * 100, prog_bar=True)
        self.log(f"{stage}/slot_precision", f1["precision"] * 100)
        self.log(f"{stage}/slot_recall", f1["recall"] * 100)
        self.log(f"{stage}/intent_acc", self.intent_acc[stage].compute() * 100, prog_bar=True)
        self.log(f"{stage}/exact_match", self.exact[stage].compute() * 100)
        for m in (self.slot_f1[stage], self.intent_acc[stage], self.exact[stage]):
            m.reset()

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch, batch_idx):
        tag_logits, intent_logits = self(batch["tokens"], batch["lengths"])
        tags, intents = self._decode(tag_logits, intent_logits, batch["lengths"])
        return [{"words": w, "tags": t, "intent": i} for w, t, i in zip(batch["words"], tags, intents, strict=True)]

    @torch.no_grad()
    def tag_sentences(self, sentences: list[str], batch_size: int = 64) -> list[dict]:
        """Tags raw sentences (whitespace-tokenised); returns ``[{"words", "tags", "intent"}]`` per non-empty line."""
        self.eval()
        examples = sentences_to_examples(sentences)
        out = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            items = [{"id": ex.id, "word_ids": self.words.encode(ex.words), "tag_ids": None, "intent_id": IGNORE,
                      "words": ex.words, "tags": None, "intent": None} for ex in chunk]
            batch = collate_slots(items)
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out.extend(self.predict_step(batch, 0))
        return out
