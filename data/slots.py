"""Slot filling + intent data: a LightningDataModule over Hugging Face datasets (hub id or local files)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from data.errors import DataError
from data.ranges import NonNegativeInt, PositiveInt
from data.rows import SkipCounter
from data.sources import load_split, row_place, split_where
from data.text import PAD, UNK, Vocabulary, read_lines

log = logging.getLogger(__name__)

IGNORE = -100


class SlotDataError(DataError):
    """A row of slot-filling data is malformed; the message names file/split, row and field."""


@dataclass
class SlotExample:
    id: int
    words: list[str]
    tags: list[str] | None
    intent: str | None


def _as_list(value, *, field: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        bad = next((v for v in value if not isinstance(v, str)), "")
        if bad != "":
            raise _RowProblem("bad_field", f"column {field!r} must hold strings, got {type(bad).__name__} "
                                           f"{bad!r}")
        return list(value)
    if value is None:
        raise _RowProblem("missing_field", f"no {field!r} value")
    raise _RowProblem("bad_field", f"column {field!r} must be a list of strings or a space-joined string, "
                                   f"got {type(value).__name__}")


class _RowProblem(Exception):
    """What is wrong with one row: a skip reason (``skip_report`` key) and the words for the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _undecodable(e: UnicodeDecodeError) -> _RowProblem:
    return _RowProblem("not_utf8", f"not UTF-8 text (byte 0x{e.object[e.start]:02x}); save it as UTF-8")


def _rows_by_number(rows):
    """``(i, row or _RowProblem)`` for every row: a row whose text is not UTF-8 comes as a problem, not an end.

    pyarrow keeps invalid UTF-8 in JSON string cells and fails only when rows are read (a chunk at a time), so
    after a failure the rest is read one row at a time, from the first row not yet given.
    """
    i = 0
    try:
        for row in rows:
            yield i, row
            i += 1
        return
    except UnicodeDecodeError:
        pass
    for j in range(i, len(rows)):
        try:
            yield j, rows[j]
        except UnicodeDecodeError as e:
            yield j, _undecodable(e)


class _Rows(list):
    """Rows read line by line (:func:`jsonl_rows`), with the columns the good ones have."""

    column_names: list[str]


def jsonl_rows(path: str) -> _Rows:
    """Every line of a JSON Lines file as a dict row, or the problem that keeps it out (named later by line)."""
    import json

    out, columns = _Rows(), {}
    with open(path, "rb") as f:
        for raw in f:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                out.append(_undecodable(e))
                continue
            if not text.strip():
                out.append(None)  # keeps the line numbers; skipped without a word, as the JSON reader does
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                out.append(_RowProblem("bad_json", f"not a JSON object ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(row, dict):
                out.append(_RowProblem("bad_json", f"not a JSON object (a {type(row).__name__})"))
                continue
            columns.update(dict.fromkeys(row))
            out.append(row)
    out.column_names = list(columns)
    return out


def resolve_column(name: str | list[str] | None, columns: list[str], *, where: str, field: str) -> str | None:
    """The first of ``name`` (one name or a list of candidates) that exists in ``columns``."""
    if name is None or not columns:
        return name if not isinstance(name, list) else (name[0] if name else None)
    candidates = [name] if isinstance(name, str) else list(name)
    for c in candidates:
        if c in columns:
            return c
    raise SlotDataError(f"{where}: missing column {' or '.join(map(repr, candidates))} (columns are {columns}); "
                        f"set data.{field}")


def parse_rows(
    rows,
    *,
    where: str,
    tokens_column: str | list[str],
    tags_column: str | list[str] | None,
    intent_column: str | list[str] | None,
    lowercase: bool,
    strict: bool = True,
    skips: SkipCounter | None = None,
) -> list[SlotExample]:
    """Validates rows and turns them into examples; every problem names ``where`` and the 1-based line or row.

    A row that cannot be used (no tokens, tokens/tags of the wrong type, no tags in a labelled file, token and tag
    counts that differ as in public copies of SNIPS, text that is not UTF-8) is an error if ``strict`` (or without
    ``skips``), else skipped: named in a warning and counted in ``skips`` by reason.
    """
    columns = list(getattr(rows, "column_names", None) or [])
    tokens_column = resolve_column(tokens_column, columns, where=where, field="tokens_column")
    tags_column = resolve_column(tags_column, columns, where=where, field="tags_column")
    intent_column = resolve_column(intent_column, columns, where=where, field="intent_column")
    # A file with a tags column is labelled: a row without tags there is a bad row, not an unlabelled one.
    labelled = tags_column is not None and tags_column in columns
    out = []
    for i, row in _rows_by_number(rows):
        if row is None:  # a blank line of a file read line by line
            continue
        try:
            if isinstance(row, _RowProblem):
                raise row
            out.append(_example(i, row, tokens_column, tags_column, intent_column, labelled, lowercase))
        except _RowProblem as problem:
            if strict or skips is None:
                raise SlotDataError(f"{where} {row_place(where, i)}: {problem}") from None
            skips.skip(problem.reason, f"{row_place(where, i)}: {problem}")
    if not out and skips is not None and skips.total:
        raise SlotDataError(f"{where}: no usable rows ({skips.total} skipped: {dict(skips.counts)})")
    return out


def _example(i: int, row: dict, tokens_column: str, tags_column: str | None, intent_column: str | None,
             labelled: bool, lowercase: bool) -> SlotExample:
    words = _as_list(row.get(tokens_column), field=tokens_column)
    if not words:
        raise _RowProblem("empty_sentence", f"empty sentence in column {tokens_column!r}")
    if lowercase:
        words = [w.lower() for w in words]
    tags = None
    if tags_column is not None and (labelled or row.get(tags_column) is not None):
        tags = _as_list(row.get(tags_column), field=tags_column)
        if len(tags) != len(words):
            raise _RowProblem("tag_count_mismatch", f"{len(words)} tokens but {len(tags)} tags "
                                                    f"(columns {tokens_column!r}/{tags_column!r})")
    intent = None
    if intent_column is not None and intent_column in row:
        intent = row[intent_column]
        if intent is None and labelled:
            raise _RowProblem("missing_field", f"no {intent_column!r} value")
        if intent is not None and not isinstance(intent, str):
            raise _RowProblem("bad_field", f"column {intent_column!r} must be a string, got "
                                           f"{type(intent).__name__} {intent!r}")
    return SlotExample(i, words, tags, intent)


def spoken_tokens(words: Sequence[str], tags: Sequence[str] | None = None) -> tuple[list[str], list[str] | None]:
    """A sentence in spoken form (:func:`data.spoken.spoken_form` per token), each token's tag spread over its words.

    A token that becomes several words gives its ``B-x`` to the first and ``I-x`` to the rest; an ``I-x`` token
    gives ``I-x`` to all of its words; ``O`` stays ``O``. A token with no spoken words (punctuation) is dropped,
    and where it began a slot the next token, if it continues that slot, begins it instead.

    Example:
        >>> spoken_tokens(["at", "838", "am"], ["O", "B-time", "I-time"])
        (['at', 'eight', 'hundred', 'thirty', 'eight', 'am'], ['O', 'B-time', 'I-time', 'I-time', 'I-time', 'I-time'])
    """
    # data.synth pulls in the corpus writer and eSpeak binding: only spoken-form runs pay for the import.
    from data.spoken import spoken_form

    out_words: list[str] = []
    out_tags: list[str] = []
    begin = None  # the slot type a dropped B- token began, handed to the next token
    for n, word in enumerate(words):
        pieces = spoken_form([word])
        tag = tags[n] if tags is not None else "O"
        if not pieces:
            begin = tag[2:] if tag.startswith("B-") else (begin if tag.startswith("I-") else None)
            continue
        if begin is not None and tag == f"I-{begin}":
            tag = f"B-{begin}"
        begin = None
        out_words += pieces
        out_tags += [tag] + [f"I-{tag[2:]}" if tag != "O" else "O"] * (len(pieces) - 1)
    return out_words, (out_tags if tags is not None else None)


def to_spoken_form(examples: list[SlotExample]) -> list[SlotExample]:
    """:func:`spoken_tokens` of every example; one whose every token is dropped is left out."""
    out = []
    for ex in examples:
        words, tags = spoken_tokens(ex.words, ex.tags)
        if words:
            out.append(SlotExample(ex.id, words, tags, ex.intent))
    return out


class SlotDataset(Dataset):
    """Encoded examples; unknown words map to ``<unk>``; unknown labels either raise or map to ``IGNORE``."""

    def __init__(self, examples: Sequence[SlotExample], vocab: dict, *, where: str,
                 unknown_labels: Literal["error", "warn"] = "warn") -> None:
        self.examples = list(examples)
        self.words = Vocabulary.from_dict(vocab["words"])
        tags = {t: i for i, t in enumerate(vocab["tags"])}
        intents = {t: i for i, t in enumerate(vocab["intents"])}
        self.items = []
        unseen: dict[str, list[int]] = {}
        for ex in self.examples:
            tag_ids = []
            for t in ex.tags or []:
                if t not in tags:
                    if unknown_labels == "error":
                        raise SlotDataError(f"{where} {row_place(where, ex.id)}: tag {t!r} does not occur in the "
                                            f"training data")
                    unseen.setdefault(t, []).append(ex.id)
                tag_ids.append(tags.get(t, IGNORE))
            intent_id = IGNORE
            if ex.intent is not None:
                if ex.intent not in intents:
                    if unknown_labels == "error":
                        raise SlotDataError(f"{where} {row_place(where, ex.id)}: intent {ex.intent!r} does not "
                                            f"occur in the training data")
                    unseen.setdefault(ex.intent, []).append(ex.id)
                intent_id = intents.get(ex.intent, IGNORE)
            self.items.append((self.words.encode(ex.words), tag_ids if ex.tags else None, intent_id))
        self.unseen_labels = {k: len(v) for k, v in unseen.items()}
        if unseen:
            detail = "; ".join(f"{k!r} ({', '.join(row_place(where, r) for r in v[:3])}{'...' if len(v) > 3 else ''})"
                               for k, v in sorted(unseen.items())[:5])
            log.warning("%s: %d labels in %d rows do not occur in the training data and count as errors in the "
                        "metrics (excluded from the loss): %s%s", where, len(unseen),
                        len({r for v in unseen.values() for r in v}), detail, " ..." if len(unseen) > 5 else "")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        word_ids, tag_ids, intent_id = self.items[i]
        ex = self.examples[i]
        return {"id": ex.id, "word_ids": word_ids, "tag_ids": tag_ids, "intent_id": intent_id,
                "words": ex.words, "tags": ex.tags, "intent": ex.intent}


def collate_slots(items: list[dict]) -> dict:
    """Pads a list of examples into a batch: ``tokens (B, T)``, ``lengths (B,)``, ``tags (B, T)``, ``intent (B,)``."""
    lengths = torch.tensor([len(it["word_ids"]) for it in items], dtype=torch.long)
    t = int(lengths.max())
    tokens = torch.zeros(len(items), t, dtype=torch.long)  # 0 = <pad>
    tags = torch.full((len(items), t), IGNORE, dtype=torch.long)
    for b, it in enumerate(items):
        n = len(it["word_ids"])
        tokens[b, :n] = torch.tensor(it["word_ids"])
        if it["tag_ids"] is not None:
            tags[b, :n] = torch.tensor(it["tag_ids"])
    return {
        "ids": [it["id"] for it in items],
        "tokens": tokens,
        "lengths": lengths,
        "tags": tags,
        "intent": torch.tensor([it["intent_id"] for it in items], dtype=torch.long),
        "words": [it["words"] for it in items],
        "tag_strings": [it["tags"] for it in items],
        "intent_strings": [it["intent"] for it in items],
    }


class SlotFillingDataModule(L.LightningDataModule):
    """Slot filling (BIO tags per token) + intent (per sentence), from the hub or local files.

    Vocabularies come from the training split only and are exposed as :attr:`vocab`, a plain dict the
    LightningModule stores in its checkpoint, so prediction never needs the data again.

    Args:
        dataset: Hugging Face hub id (e.g. ``tuetschek/atis``) or a local path.
        data_dir: Local copy with ``train.jsonl``/``validation.jsonl``... (wins over ``dataset``).
        config_name: Hub configuration name, if the dataset has several.
        train_split / val_split / test_split: Split names.
        test_file: A separate file (jsonl/json/csv/parquet) evaluated by ``test`` instead of ``test_split``.
        predict_file: Sentences to tag with ``predict``: a data file or a plain text file, one sentence a line.
        tokens_column / tags_column / intent_column: Column names (cells hold lists or space-joined strings);
            a list of names means "the first that exists", so one config reads differently named copies.
        lowercase: Lower-case words before lookup.
        min_word_freq: Words seen fewer times in training map to ``<unk>`` (and train the ``<unk>`` vector).
        unknown_labels: What a tag/intent unseen in training does in validation data: ``warn`` (a warning
            naming the rows; scored as an error by the metrics, excluded from the loss) or ``error`` (stop with a
            one-line error naming the row). Real ATIS validation data has such tags, so ``warn`` is the default.
            Test and predict data always warn.
        strict: Stop at a row whose token and tag counts differ (one-line error naming the file and line)
            instead of skipping it; skipped rows are named in a warning and counted in :attr:`skip_report`.
        spoken_form: Rewrite every sentence (all splits and predict input) as a speech recogniser writes it
            (:func:`spoken_tokens`: ``838 am`` -> ``eight hundred thirty eight am``, ``ap57`` -> ``a p fifty
            seven``, tags spread over the words), so a model trained on it tags transcripts as they come. Saved
            in :attr:`vocab` (``"spoken_form": true``), so the model converts typed text the same way.
        batch_size: Sentences per batch (per device).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        *,
        dataset: str | None = "tuetschek/atis",
        data_dir: str | None = None,
        config_name: str | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        test_file: str | None = None,
        predict_file: str | None = None,
        tokens_column: str | list[str] = "tokens",
        tags_column: str | list[str] | None = "tags",
        intent_column: str | list[str] | None = "intent",
        lowercase: bool = True,
        min_word_freq: NonNegativeInt = 1,
        unknown_labels: Literal["error", "warn"] = "warn",
        strict: bool = False,
        spoken_form: bool = False,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self._examples: dict[str, list[SlotExample]] = {}
        self._file: dict[str, str] = {}  # what messages name for each read source: its file when local
        self._vocab: dict | None = None
        self.datasets: dict[str, SlotDataset] = {}
        self.skips: dict[str, SkipCounter] = {}

    @property
    def skip_report(self) -> dict:
        """Skipped rows per split and reason, e.g. ``{"train": {"tag_count_mismatch": 1}}``."""
        return {split: dict(s.counts) for split, s in self.skips.items() if s.total}

    def _where(self, split: str) -> str:
        return split_where(self.hparams.data_dir, self.hparams.dataset, split)

    def _read(self, split: str, *, source: str | None = None) -> list[SlotExample]:
        key = source or split
        if key not in self._examples:
            hp = self.hparams
            if source is not None:
                where = f"{source}"
            else:
                local = hp.data_dir or (hp.dataset if hp.dataset and Path(hp.dataset).exists() else None)
                where = split_where(local, hp.dataset, split)  # names the file when local
            try:
                rows = load_split(None, split, data_dir=source) if source is not None else \
                    load_split(hp.dataset, split, config_name=hp.config_name, data_dir=hp.data_dir)
            except DataError:
                if not where.endswith(".jsonl") or not Path(where).is_file():
                    raise
                # The JSON reader gives up on the whole file for one bad line (mixed types, broken JSON, bytes
                # that are not UTF-8): read it line by line, so each bad row is named and skipped.
                rows = jsonl_rows(where)
            self._file[key] = where
            skips = self.skips.setdefault(key, SkipCounter(where))
            self._examples[key] = parse_rows(rows, where=where, tokens_column=hp.tokens_column,
                                             tags_column=hp.tags_column, intent_column=hp.intent_column,
                                             lowercase=hp.lowercase, strict=hp.get("strict", False), skips=skips)
            if skips.total:
                log.warning("%s: %d rows kept, %d skipped %s (data.init_args.strict=true makes this an error)",
                            where, len(self._examples[key]), skips.total, dict(skips.counts))
            if hp.get("spoken_form", False):
                self._examples[key] = to_spoken_form(self._examples[key])
        return self._examples[key]

    @property
    def vocab(self) -> dict:
        """Words, tags and intents from the training split (built on first access)."""
        if self._vocab is None:
            train = self._read(self.hparams.train_split)
            words = Vocabulary.build((w for ex in train for w in ex.words), specials=(PAD, UNK),
                                     min_freq=self.hparams.min_word_freq, unk=UNK)
            tags = sorted({t for ex in train for t in (ex.tags or [])}, key=lambda t: (t != "O", t))
            intents = sorted({ex.intent for ex in train if ex.intent is not None})
            self._vocab = {"words": words.to_dict(), "tags": tags, "intents": intents}
            if self.hparams.get("spoken_form", False):
                self._vocab["spoken_form"] = True
        return self._vocab

    @vocab.setter
    def vocab(self, value: dict) -> None:
        self._vocab = value

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        vocab = self.vocab
        if stage in (None, "fit"):
            self.datasets["train"] = SlotDataset(self._read(hp.train_split), vocab, where=self._file[hp.train_split])
        if stage in (None, "fit", "validate"):
            self.datasets["val"] = SlotDataset(self._read(hp.val_split), vocab, where=self._file[hp.val_split],
                                               unknown_labels=hp.unknown_labels)
        if stage in (None, "test"):
            key = hp.test_file or hp.test_split
            ex = self._read("test", source=hp.test_file) if hp.test_file else self._read(hp.test_split)
            self.datasets["test"] = SlotDataset(ex, vocab, where=self._file[key], unknown_labels="warn")
        if stage == "predict":
            self.datasets["predict"] = SlotDataset(self.read_sentences(hp.predict_file), vocab,
                                                   where=str(hp.predict_file), unknown_labels="warn")

    def read_sentences(self, path: str | None) -> list[SlotExample]:
        """Sentences to tag: a data file with the tokens column, or plain text (``-`` = stdin), one per line.

        Text is UTF-8 (:func:`data.text.read_lines`): a line that is not is skipped and named, or with
        ``strict`` an error, as a bad row of a data file is.
        """
        if path is None:
            raise ValueError("data.predict_file is not set: give a text file with one sentence per line, or '-'")
        if path != "-" and path.endswith((".jsonl", ".json", ".csv", ".parquet")):
            return self._read("predict", source=path)
        name = "<stdin>" if path == "-" else path
        lines, problems = read_lines(path)
        skips = self.skips.setdefault(name, SkipCounter(name))
        for n, problem in problems:
            if self.hparams.get("strict", False):
                raise SlotDataError(f"{name} line {n}: {problem}")
            skips.skip("not_utf8", f"line {n}: {problem}")
        examples = sentences_to_examples(lines, lowercase=self.hparams.lowercase)
        return to_spoken_form(examples) if self.hparams.get("spoken_form", False) else examples

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        # rnnlab trains with use_distributed_sampler=False (the speech batch sampler shards itself), so the
        # DataModule shards here under DDP; Lightning still calls set_epoch on this sampler every epoch.
        trainer = getattr(self, "trainer", None)
        sampler = None
        if trainer is not None and trainer.world_size > 1 and name != "predict":
            sampler = DistributedSampler(self.datasets[name], num_replicas=trainer.world_size,
                                         rank=trainer.global_rank, shuffle=shuffle, seed=0)
        return DataLoader(self.datasets[name], batch_size=self.hparams.batch_size,
                          shuffle=shuffle if sampler is None else None, sampler=sampler, collate_fn=collate_slots,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        # Shuffled by a seeded per-epoch order (also in one process), so a resumed run sees the same batches;
        # the seed is the run's (seed_everything), so runs with different seeds also see different orders.
        import os

        from data.resumable import ResumableDataLoader, epoch_batches, trainer_progress

        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return ResumableDataLoader(
            self.datasets["train"],
            batch_sampler=epoch_batches(self.datasets["train"], self.hparams.batch_size, shuffle=True,
                                        seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), num_replicas=world, rank=rank),
            progress=trainer_progress(self), collate_fn=collate_slots, num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)


def sentences_to_examples(lines: Sequence[str] | Sequence[tuple[int, str]], *,
                           lowercase: bool = True) -> list[SlotExample]:
    """Plain sentences (whitespace-tokenised; blank lines skipped) as unlabelled examples.

    ``lines`` are strings or ``(1-based line number, text)`` pairs (:func:`data.text.read_lines`); an example's
    ``id`` is its 0-based line.
    """
    out = []
    for i, line in enumerate(lines):
        if isinstance(line, tuple):
            i, line = line[0] - 1, line[1]
        words = line.split()
        if not words:
            continue
        out.append(SlotExample(i, [w.lower() for w in words] if lowercase else words, None, None))
    return out
