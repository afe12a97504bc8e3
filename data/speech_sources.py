"""What a source of speech is, and how each kind of source becomes the datasets of a stage.

A :class:`~data.speech.SpeechDataModule` reads one corpus or several (``data.sources``, each a
:class:`SpeechSource`). Every source has a kind, named by its ``dataset``: ``fsdd-digits`` (connected-digit strings
composed from an FSDD copy) or, for any other ``dataset``, ``recorded`` (a hub id, a local audiofolder or manifest,
``embedded``). :data:`SOURCE_KINDS` holds one builder per kind; ``setup`` asks :func:`stage_dataset` for each
stage, which groups the sources by kind and concatenates what the builders return. A new kind of source is one
:func:`register_source_kind` call, with no change to the DataModule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch.utils.data import Dataset

from data.digits import fsdd_digits_dataset
from data.errors import DataError
from data.mixture import MixtureDataset
from data.rows import SkipCounter

FSDD_DIGITS = "fsdd-digits"
RECORDED = "recorded"


@dataclass
class SpeechSource:
    """One corpus of a mixture (``data.sources`` in a config): where it is, its columns, splits and normaliser.

    Args:
        name: Short name, used in metric keys (``val/<name>/cer``) and messages; letters, digits, ``-`` and ``_``.
        dataset: Hub id (e.g. ``openslr/librispeech_asr``), ``embedded``, or ``fsdd-digits`` (connected digit
            strings composed from the FSDD copy in ``data_dir``, sized by ``data.digits_size``; its split names only
            say whether it takes part in a stage). ``data_dir`` wins over a hub id when both are set.
        data_dir: Local copy (audiofolder splits, ``{split}.jsonl|csv|parquet`` manifests or a hub snapshot).
        config_name: Hub configuration (e.g. ``clean``).
        train_split / val_split / test_split: Split names; ``null`` leaves the source out of that stage.
        audio_column / text_column / id_column / duration_column: Column names of this source.
        normalizer: Transcript normaliser of this source.
        weight: Draws per utterance and training epoch: 1 each once, 2 each twice, 0.5 a random half.
        only_texts: Keep only rows whose normalised transcript is one of these (e.g. the digit words of Speech
            Commands); None keeps every row. Rows left out this way are not skips and are not reported.
    """

    name: str
    dataset: str | None = None
    data_dir: str | None = None
    config_name: str | None = None
    train_split: str | None = "train"
    val_split: str | None = "validation"
    test_split: str | None = "test"
    audio_column: str = "audio"
    text_column: str = "text"
    id_column: str | None = "id"
    duration_column: str | None = "duration"
    normalizer: Literal["asr_chars", "lower", "none"] = "asr_chars"
    weight: float = 1.0
    only_texts: list[str] | None = None

    def split(self, stage: str) -> str | None:
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}[stage]

    def takes_part(self, stage: str) -> bool:
        """Whether the source has a split for ``stage`` (and, for training, a weight above 0)."""
        return self.split(stage) is not None and not (stage == "train" and self.weight == 0)


def check_sources(sources: list) -> list[SpeechSource]:
    """``data.sources`` as :class:`SpeechSource` objects, or a one-line :class:`DataError` on a bad entry."""
    out = []
    for i, src in enumerate(sources):
        if isinstance(src, dict):
            try:
                src = SpeechSource(**src)
            except TypeError as e:
                raise DataError(f"data.sources[{i}]: {e}") from None
        if not src.name or not re.fullmatch(r"[A-Za-z0-9_-]+", src.name):
            raise DataError(f"data.sources[{i}].name: {src.name!r} must be letters, digits, '-' or '_' "
                            "(it becomes part of metric keys such as val/<name>/cer)")
        if src.dataset is None and src.data_dir is None:
            raise DataError(f"data.sources[{i}] ({src.name}): set dataset (hub id) or data_dir (local copy)")
        if src.weight < 0:
            raise DataError(f"data.sources[{i}] ({src.name}).weight: must be >= 0, got {src.weight}")
        out.append(src)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise DataError(f"data.sources: names must be unique, got {names}")
    if out and not any(s.train_split and s.weight > 0 for s in out):
        raise DataError("data.sources: no source trains (every train_split is null or every weight is 0)")
    return out


# build(stage, sources, dm): the dataset of ``sources`` (``(index, source)`` pairs, index into ``dm.sources``)
# for ``stage`` (train/val/test) of the DataModule ``dm``.
Builder = Callable[[str, list[tuple[int, SpeechSource]], Any], Dataset]


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source becomes datasets.

    Args:
        build: ``build(stage, sources, dm)``; the dataset needs ``lengths`` (samples per item) once in a mixture.
        together: All sources of this kind that take part in a stage form one dataset, whose items carry their
            ``source`` index (and which has ``sources``, one index per item); otherwise each source is built alone
            and the mixture tags its items.
    """

    build: Builder
    together: bool = False


SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source_kind(name: str, build: Builder, *, together: bool = False) -> None:
    """Makes ``build`` the builder of every source whose ``dataset`` is ``name`` (``recorded``: the default kind)."""
    SOURCE_KINDS[name] = SourceKind(build, together)


def source_kind(src: SpeechSource) -> str:
    """The kind of ``src``: its ``dataset`` when that names a kind, else ``recorded``."""
    return src.dataset if src.dataset in SOURCE_KINDS else RECORDED


def skip_key(src: SpeechSource, split: str) -> str:
    """The key of ``src``'s skips of ``split`` in the DataModule's ``skips``: ``<name>/<split>``, or the bare split
    name for the single corpus."""
    return f"{src.name}/{split}" if src.name else split


def stage_dataset(stage: str, dm) -> Dataset:
    """The dataset of ``stage`` (train/val/test) of the DataModule ``dm``, from the builders of its sources' kinds.

    One corpus (no ``data.sources``) takes part in every stage and its dataset is returned as built. In a mixture
    each source with a split for the stage takes part: the sources of a ``together`` kind make one part (these
    parts come first, in the order of their first sources), every other source is a part of its own, in source
    order; the parts are concatenated in a
    :class:`~data.mixture.MixtureDataset`, unless there is one and its items carry their source already.

    Raises:
        DataError: when no source takes part in ``stage``.
    """
    mixture = bool(dm.hparams.get("sources"))
    joint: dict[str, list[tuple[int, SpeechSource]]] = {}
    alone: list[tuple[str, list[tuple[int, SpeechSource]]]] = []
    for k, src in enumerate(dm.sources):
        if mixture and not src.takes_part(stage):
            continue
        kind = source_kind(src)
        if SOURCE_KINDS[kind].together:
            joint.setdefault(kind, []).append((k, src))
        else:
            alone.append((kind, [(k, src)]))
    groups = [(SOURCE_KINDS[kind], members) for kind, members in [*joint.items(), *alone]]
    if not groups:
        raise DataError(f"data.sources: no source has a {stage} split")
    parts = [kind.build(stage, members, dm) for kind, members in groups]
    if len(parts) == 1 and (not mixture or groups[0][0].together):
        return parts[0]
    return MixtureDataset(parts, [members[0][0] for _, members in groups])


def connected_digits(stage: str, sources: list[tuple[int, SpeechSource]], dm) -> Dataset:
    """``fsdd-digits``: connected-digit strings composed from the FSDD copy in the source's ``data_dir``, sized and
    drawn by the DataModule's ``digits_size``, ``digits_per_utterance``, ``holdout_speakers`` and ``seed``."""
    ((_, src),) = sources
    hp = dm.hparams
    if not src.name and hp.tokenizer != "char":  # the single corpus; in a mixture the recorded texts train it
        raise DataError(f"{FSDD_DIGITS}: use data.tokenizer=char (digit words need no subword vocabulary)")
    tokenizer = dm.tokenizer
    skips = dm.skips.setdefault(skip_key(src, stage), SkipCounter(f"{src.name or FSDD_DIGITS} [{stage}]"))
    return fsdd_digits_dataset(
        stage, tokenizer, data_dir=src.data_dir, sizes=hp.digits_size,
        holdout_speakers=hp.get("holdout_speakers") or (), digits=hp.digits_per_utterance,
        sample_rate=hp.sample_rate, seed=hp.seed, skips=skips)


register_source_kind(FSDD_DIGITS, connected_digits)
