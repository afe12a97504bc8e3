"""Labelled isolated-word segments (e.g. FSDD spoken digits) for autoencoders, classifiers and retrieval.

Rows come through the same ``datasets.load_dataset`` path as every other corpus (:func:`data.sources.load_split`):
a local audiofolder (``<split>/metadata.jsonl`` with ``file_name`` and a label column), a manifest, or a hub id.
Every segment is decoded once up front (small corpora: FSDD is ~10 MB), with leading and trailing silence trimmed
(the same energy-based trim as :mod:`data.digits`), so the autoencoder, the classifier and the retrieval
baselines all see exactly the same audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.audio import AudioError, audio_ref, load_audio, load_audio_native, resample
from data.digits import trim_silence
from data.errors import DataError
from data.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitIntervalRightOpen
from data.rows import SkipCounter, no_decode, row_at
from data.sources import load_split, split_where

log = logging.getLogger(__name__)

DEFAULT_WORDS_DIR = "../shared/data/fsdd"
EMBEDDED = "embedded"


@dataclass
class WordSegment:
    """One labelled segment, decoded: ``waveform`` is float32 ``(S,)`` at the loader's sample rate; ``speaker``
    None when unknown."""

    id: str
    path: str
    label: str
    waveform: torch.Tensor
    speaker: str | None = None


def _label_key(label: str):
    # Numeric labels ("0".."9") sort as numbers, everything else alphabetically after them.
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def sorted_labels(labels) -> list[str]:
    return sorted(set(labels), key=_label_key)


def decode_segment(ref, sample_rate: int, trim_db: float | None, trim_margin: float = 0.02) -> torch.Tensor:
    """Decodes one audio reference to mono float32 at ``sample_rate``, trimming silence at both ends.

    Files are trimmed (energy below ``trim_db`` under the loudest 10 ms frame, ``trim_margin`` s kept); audio
    given as bytes is decoded untrimmed. ``trim_db=None`` disables trimming.

    Raises:
        AudioError: unreadable, empty or non-finite audio (the message names the file).
    """
    if ref.path is None or ref.data is not None or not trim_db:
        return load_audio(ref, sample_rate)
    native, sr = load_audio_native(ref)  # the one reader: its checks and one-line errors
    wav = trim_silence(native.numpy(), sr, float(trim_db), float(trim_margin))
    out = torch.from_numpy(np.array(wav, dtype=np.float32))
    return resample(out, sr, sample_rate) if sr != sample_rate else out


def load_word_segments(dataset: str | None, split: str, *, data_dir: str | None = None,
                       config_name: str | None = None, audio_column: str = "audio", label_column: str = "label",
                       id_column: str | None = None, speaker_column: str | None = "speaker",
                       sample_rate: int = 8000, trim_db: float | None = 30.0, min_duration: float = 0.05,
                       max_duration: float = 10.0, skips: SkipCounter | None = None) -> list[WordSegment]:
    """Every usable labelled segment of one split, decoded.

    Rows without a label, with unreadable audio or outside ``[min_duration, max_duration]`` seconds (after
    trimming) are skipped with a warning naming the row and counted in ``skips``. Rows whose label is an empty
    string (e.g. Speech Commands' ``silence`` clips in its ``word`` column: no word was spoken) are dropped
    without a warning each, counted as ``empty_label`` in the one summary line. ``speaker_column`` fills each
    segment's ``speaker`` when the split has that column (empty: unknown).

    Raises:
        DataError: a missing column, or no usable segment at all.
    """
    where = split_where(data_dir, dataset, split)
    skips = skips if skips is not None else SkipCounter(where)
    rows = load_split(dataset, split, config_name=config_name, data_dir=data_dir)
    rows = no_decode(rows, audio_column, where)
    columns = list(rows.column_names or [])
    for col, field in ((audio_column, "audio_column"), (label_column, "label_column")):
        if col not in columns:
            raise DataError(f"{where}: missing column {col!r} (columns are {columns}); set {field}")
    if id_column is not None and id_column not in columns:
        id_column = None
    if speaker_column is not None and speaker_column not in columns:
        speaker_column = None
    base_dir = None
    if data_dir is not None:
        p = Path(data_dir)
        base_dir = str(p.parent if p.is_file() else p)
    out: list[WordSegment] = []
    for i, row in enumerate(rows):
        label = row.get(label_column)
        cell = row.get(audio_column)
        rid = str(row[id_column]) if id_column else (row.get("file_name") or f"row {i + 1}")
        if isinstance(label, str) and not label.strip():
            skips.counts["empty_label"] += 1
            continue
        if label is None:
            skips.skip("no_label", f"{row_at(skips, i, rid)}: empty {label_column!r}")
            continue
        try:
            ref = audio_ref(cell, base_dir=base_dir)
            wav = decode_segment(ref, sample_rate, trim_db)
        except AudioError as e:
            skips.skip("unreadable", f"{row_at(skips, i, rid)}: {e}")
            continue
        duration = wav.numel() / sample_rate
        if not min_duration <= duration <= max_duration:
            skips.skip("duration", f"{row_at(skips, i, rid)}: {duration:.2f}s outside [{min_duration}, {max_duration}]s")
            continue
        speaker = row.get(speaker_column) if speaker_column else None
        speaker = str(speaker).strip() if speaker is not None and str(speaker).strip() else None
        out.append(WordSegment(str(rid), ref.name, str(label), wav, speaker))
    if not out:
        raise DataError(f"{where}: no usable labelled segments ({dict(skips.counts)} skipped)")
    if skips.total:
        log.warning("%s: %d segments kept, %d skipped %s", where, len(out), skips.total, dict(skips.counts))
    return out


def embedded_corpus_root(size: tuple[int, int, int] = (3000, 200, 200)) -> Path:
    """The embedded synthetic corpus of this size (built and cached on first use, as for CTC)."""
    from data.synth import default_corpus_dir, ensure_default_corpus

    n_train, n_val, n_test = size
    base = default_corpus_dir()
    return ensure_default_corpus(base.with_name(f"{base.name}_{n_train}-{n_val}-{n_test}"), n_train=n_train,
                                 n_validation=n_val, n_test=n_test)


def word_segments_from_timings(root: str | Path, split: str, *, sample_rate: int = 8000, words_column: str = "words",
                               min_duration: float = 0.05, max_duration: float = 10.0,
                               skips: SkipCounter | None = None) -> list[WordSegment]:
    """Spoken words cut from sentences at their word boundaries; the label is the word.

    Reads an audiofolder split whose metadata has a ``words`` column of ``{"word", "start", "end"}`` (seconds),
    as the embedded synthetic corpus has.

    Raises:
        DataError: the split lacks the timing column, or no word could be cut.
    """
    where = split_where(root, None, split)
    skips = skips if skips is not None else SkipCounter(where)
    rows = no_decode(load_split(None, split, data_dir=root), "audio", where)
    if words_column not in (rows.column_names or []):
        raise DataError(f"{where}: no {words_column!r} column with word timings (columns are {rows.column_names})")
    out: list[WordSegment] = []
    for i, row in enumerate(rows):
        rid = str(row.get("id") or row.get("file_name") or f"row {i + 1}")
        try:
            ref = audio_ref(row["audio"], base_dir=str(root))
            wav = load_audio(ref, sample_rate)
        except AudioError as e:
            skips.skip("unreadable", f"{row_at(skips, i, rid)}: {e}")
            continue
        for k, w in enumerate(row[words_column] or []):
            try:
                word, start, end = str(w["word"]), float(w["start"]), float(w["end"])
            except (KeyError, TypeError, ValueError):
                skips.skip("bad_timing", f"{row_at(skips, i, rid)}: word {k} is not {{word, start, end}}: {w!r}")
                continue
            if not min_duration <= end - start <= max_duration:
                skips.skip("duration", f"{row_at(skips, i, rid)}: word {k} {word!r} lasts {end - start:.2f}s")
                continue
            piece = wav[int(start * sample_rate): int(end * sample_rate)].clone()
            if piece.numel() == 0:
                skips.skip("duration", f"{row_at(skips, i, rid)}: word {k} {word!r} lies past the audio's end")
                continue
            out.append(WordSegment(f"{rid}/{k}-{word}", ref.name, word, piece))
    if not out:
        raise DataError(f"{where}: no words could be cut ({dict(skips.counts)} skipped)")
    return out


class WordDataset(Dataset):
    """Decoded segments with integer labels (index into ``labels``; -1 for a label the vocabulary lacks)."""

    def __init__(self, segments: list[WordSegment], labels: list[str]) -> None:
        self.segments = segments
        index = {lab: i for i, lab in enumerate(labels)}
        self.targets = [index.get(s.label, -1) for s in segments]

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def lengths(self) -> list[int]:
        return [s.waveform.numel() for s in self.segments]

    @property
    def speakers(self) -> list[str | None]:
        return [s.speaker for s in self.segments]

    def __getitem__(self, i: int | tuple[int, int]) -> dict:
        """Item ``i``; for ``(i, j)`` (from :class:`data.word_batches.PartnerBatchSampler`) item ``i`` with
        segment ``j``'s waveform as ``partner``."""
        j = None
        if isinstance(i, tuple):
            i, j = i
        s = self.segments[i]
        item = {"id": s.id, "waveform": s.waveform, "label": self.targets[i]}
        if j is not None:
            item["partner"] = self.segments[j].waveform
            item["partner_id"] = self.segments[j].id
        return item


def _padded(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))
    for b, w in enumerate(waves):
        out[b, : w.numel()] = w
    return out, lengths


def collate_words(items: list[dict]) -> dict:
    """Pads waveforms to ``(B, S)``; ``lengths (B,)`` samples, ``labels (B,)`` int64, ``ids``.

    Items with a ``partner`` waveform also give ``partner_waveforms (B, S')``, ``partner_lengths (B,)`` and
    ``partner_ids``.
    """
    waveforms, lengths = _padded([it["waveform"] for it in items])
    batch = {"ids": [it["id"] for it in items], "waveforms": waveforms, "lengths": lengths,
             "labels": torch.tensor([it["label"] for it in items], dtype=torch.long)}
    if items and "partner" in items[0]:
        batch["partner_waveforms"], batch["partner_lengths"] = _padded([it["partner"] for it in items])
        batch["partner_ids"] = [it["partner_id"] for it in items]
    return batch


def stratified_holdout(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Splits indices into (keep, held out), holding out ``fraction`` of each label (at least one if any)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for lab in sorted_labels(labels):
        idx = [i for i, x in enumerate(labels) if x == lab]
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        held += idx[:n]
        keep += idx[n:]
    return sorted(keep), sorted(held)


class WordDataModule(L.LightningDataModule):
    """Labelled isolated words (FSDD by default) for many-to-one models and sequence autoencoders.

    Args:
        dataset: Hub id or local path (``data_dir`` wins when both are given), or ``embedded``: words cut at their
            boundaries from the embedded synthetic corpus (label = the word; splits train/validation/test).
        data_dir: Local copy with audiofolder splits (``<split>/metadata.jsonl``) or manifests; default FSDD.
            When the default directory does not exist and ``dataset`` is unset, the embedded corpus's words are
            used instead (with a warning), so the pipeline runs anywhere; a directory that was given and is
            missing stops the run with one line.
        config_name: Hub configuration.
        train_split / test_split: Split names (``datasets`` slicing such as ``train[:50%]`` works).
        val_split: Validation split; ``None`` holds out ``val_fraction`` of the training split, stratified by label
            (FSDD has no validation split; its test split stays untouched for the final number).
        val_fraction / seed: Size and seed of that held-out part.
        audio_column / label_column / id_column: Column names. Rows whose label is empty are dropped (counted in
            one line): Speech Commands with ``label_column: word`` keeps the spoken words and drops ``silence``.
        speaker_column: The speaker of each segment, where the data has that column (pairs prefer other speakers).
        sample_rate: Rate the model expects (FSDD is 8 kHz); audio is resampled to it.
        trim_db: Trim leading/trailing audio quieter than this many dB under the loudest frame; None keeps it.
        min_duration / max_duration: Segments outside this range (seconds, after trimming) are skipped and counted.
        batch_size: Segments per batch; batches group segments of similar length.
        labels_per_batch / tokens_per_label: When set, training batches hold ``labels_per_batch`` labels x
            ``tokens_per_label`` tokens each (:class:`data.word_batches.LabelBatchSampler`; ``batch_size`` then
            applies to validation and test only), as triplet losses with in-batch negatives need.
        pairs: Every training item also carries a partner: another token of the same label, from another speaker
            when there is one, drawn anew each epoch (deterministic per seed and epoch), as ``partner_waveforms``
            / ``partner_lengths`` of the batch (correspondence autoencoder). Validation and test are unchanged.
        num_workers: DataLoader workers.
        embedded_size: Utterances of the embedded corpus in train/validation/test.
    """

    def __init__(
        self,
        *,
        dataset: str | None = None,
        data_dir: str | None = DEFAULT_WORDS_DIR,
        config_name: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str = "test",
        val_fraction: UnitIntervalRightOpen = 0.1,
        audio_column: str = "audio",
        label_column: str = "label",
        id_column: str | None = None,
        speaker_column: str | None = "speaker",
        sample_rate: PositiveInt = 8000,
        trim_db: PositiveFloat | None = 30.0,
        min_duration: NonNegativeFloat = 0.05,
        max_duration: PositiveFloat = 10.0,
        batch_size: PositiveInt = 32,
        labels_per_batch: PositiveInt | None = None,
        tokens_per_label: PositiveInt = 4,
        pairs: bool = False,
        num_workers: NonNegativeInt = 0,
        seed: int = 0,
        embedded_size: tuple[PositiveInt, NonNegativeInt, NonNegativeInt] = (3000, 200, 200),
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if min_duration >= max_duration:
            raise ValueError(f"min_duration must be below max_duration = {max_duration}, got {min_duration}")
        if data_dir is None and dataset is None:
            raise ValueError("set data.dataset (hub id or path) or data.data_dir (local copy)")
        if labels_per_batch is not None and labels_per_batch < 2:
            raise ValueError(f"labels_per_batch must be at least 2 (negatives come from other labels), got "
                             f"{labels_per_batch}")
        if tokens_per_label < 2:
            raise ValueError(f"tokens_per_label must be at least 2 (a positive pair per label), got {tokens_per_label}")
        self.save_hyperparameters()
        self._segments: dict[str, list[WordSegment]] = {}
        self._labels: list[str] | None = None
        self.datasets: dict[str, WordDataset] = {}
        self.skips: dict[str, SkipCounter] = {}

    def _where(self, split: str) -> str:
        return split_where(self.hparams.data_dir, self.hparams.dataset, split)

    @property
    def uses_embedded(self) -> bool:
        hp = self.hparams
        if hp.dataset == EMBEDDED:
            return True
        if hp.dataset is None and hp.data_dir is not None and not Path(hp.data_dir).expanduser().exists():
            if hp.data_dir != DEFAULT_WORDS_DIR:
                raise DataError(f"data directory not found: {hp.data_dir} (data.data_dir)")
            if not getattr(self, "_warned_fallback", False):
                log.warning("%s (the default data_dir) not found: using words cut from the embedded synthetic corpus "
                            "instead", hp.data_dir)
                self._warned_fallback = True
            return True
        return False

    def segments(self, split: str) -> list[WordSegment]:
        """Decoded segments of a split (cached)."""
        if split not in self._segments:
            hp = self.hparams
            skips = self.skips.setdefault(split, SkipCounter(self._where(split)))
            if self.uses_embedded:
                self._segments[split] = word_segments_from_timings(
                    embedded_corpus_root(tuple(hp.embedded_size)), split, sample_rate=hp.sample_rate,
                    min_duration=hp.min_duration, max_duration=hp.max_duration, skips=skips)
                return self._segments[split]
            self._segments[split] = load_word_segments(
                hp.dataset, split, data_dir=hp.data_dir, config_name=hp.config_name, audio_column=hp.audio_column,
                label_column=hp.label_column, id_column=hp.id_column, speaker_column=hp.speaker_column,
                sample_rate=hp.sample_rate,
                trim_db=hp.trim_db, min_duration=hp.min_duration, max_duration=hp.max_duration, skips=skips)
        return self._segments[split]

    def _train_val(self) -> tuple[list[WordSegment], list[WordSegment]]:
        hp = self.hparams
        train = self.segments(hp.train_split)
        if hp.val_split is not None:
            return train, self.segments(hp.val_split)
        keep, held = stratified_holdout([s.label for s in train], hp.val_fraction, hp.seed)
        if not held:
            raise DataError(f"{self._where(hp.train_split)}: val_fraction={hp.val_fraction} holds out no segment; "
                            f"raise it or set data.val_split")
        return [train[i] for i in keep], [train[i] for i in held]

    @property
    def labels(self) -> list[str]:
        """Label vocabulary, from the training split (numeric labels in numeric order)."""
        if self._labels is None:
            self._labels = sorted_labels(s.label for s in self.segments(self.hparams.train_split))
        return self._labels

    @property
    def vocab(self) -> dict:
        """The label set as a plain dict (stored in the model's checkpoint)."""
        return {"labels": list(self.labels)}

    @vocab.setter
    def vocab(self, value: dict) -> None:
        self._labels = list(value["labels"])

    @property
    def skip_report(self) -> dict:
        return {split: dict(s.counts) for split, s in self.skips.items() if s.total}

    def setup(self, stage: str | None = None) -> None:
        names = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}.get(
            stage or "", ["train", "val", "test"])
        if ("train" in names or "val" in names) and not {"train", "val"} <= set(self.datasets):
            train, val = self._train_val()
            self.datasets["train"] = WordDataset(train, self.labels)
            self.datasets["val"] = WordDataset(val, self.labels)
        if "test" in names and "test" not in self.datasets:
            self.datasets["test"] = WordDataset(self.segments(self.hparams.test_split), self.labels)

    def _loader(self, name: str, train: bool) -> DataLoader:
        from data.samplers import LengthBucketBatchSampler
        from data.word_batches import LabelBatchSampler, PartnerBatchSampler

        hp = self.hparams
        trainer = getattr(self, "trainer", None)
        world = {"num_replicas": trainer.world_size if trainer is not None else 1,
                 "rank": trainer.global_rank if trainer is not None else 0}
        ds = self.datasets[name]
        if train and hp.labels_per_batch is not None:
            sampler = LabelBatchSampler(labels=ds.targets, labels_per_batch=hp.labels_per_batch,
                                        tokens_per_label=hp.tokens_per_label, seed=hp.seed, **world)
        else:
            sampler = LengthBucketBatchSampler(lengths=ds.lengths, batch_size=hp.batch_size, shuffle=train,
                                               seed=hp.seed, bucket_size_multiplier=20, **world)
        if train and hp.pairs:
            sampler = PartnerBatchSampler(sampler, labels=ds.targets, speakers=ds.speakers, seed=hp.seed)
        if train:
            from data.resumable import ResumableDataLoader, trainer_progress

            return ResumableDataLoader(self.datasets[name], batch_sampler=sampler, progress=trainer_progress(self),
                                       seed=hp.seed, collate_fn=collate_words, num_workers=hp.num_workers,
                                       persistent_workers=hp.num_workers > 0)
        return DataLoader(self.datasets[name], batch_sampler=sampler, collate_fn=collate_words,
                          num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
