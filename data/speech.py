"""Speech + transcript data for CTC (and later seq2seq): one DataModule over Hugging Face datasets.

Sources, all through ``datasets.load_dataset``: a hub id (e.g. ``openslr/librispeech_asr`` with config
``clean``), a local ``audiofolder`` (``<split>/metadata.jsonl``), JSON/CSV manifests of path + text, or
``embedded`` (the project's synthetic spoken corpus, built and cached on first use), or ``fsdd-digits``
(connected-digit strings composed on the fly from a local FSDD copy, see :mod:`data.digits`). Each kind of source
builds its datasets through the registry in :mod:`data.speech_sources`; this module registers ``recorded``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.audio import AudioError, load_audio
from data.errors import DataError
from data.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from data.row_index import SplitIndex, Utterance, check_columns, index_rows, row_to_utterance
from data.rows import SkipCounter, no_decode
from data.sources import load_split, split_where
from data.speech_sources import (
    RECORDED,
    SpeechSource,
    check_sources,
    register_source_kind,
    skip_key,
    source_kind,
    stage_dataset,
)
from data.text import CharTokenizer
from data.tokenizers import tokenizer_from_dict

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


# Decoded audio kept by cache_audio=None (auto) at most, per split and process: float32 at the model's rate.
AUTO_CACHE_BYTES = 1 << 30


class _Utterances(Sequence):
    """``dataset.utterances``: utterances built from the table on access (none are held)."""

    def __init__(self, ds: SpeechDataset) -> None:
        self._ds = ds

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._ds.utterance(k) for k in range(*i.indices(len(self)))]
        return self._ds.utterance(i)


class SpeechDataset(Dataset):
    """Reads an utterance's row and decodes its audio on access; a file that fails returns None and is counted.

    Args:
        parts: Split indices (one per source of a mixture), concatenated in order.
        cache_audio: Keep decoded waveforms after first use; None: only if the whole dataset's decoded audio
            fits in :data:`AUTO_CACHE_BYTES`.
    """

    def __init__(self, parts: list[SplitIndex], tokenizer, *, sample_rate: int, skips: SkipCounter,
                 cache_audio: bool | None = False) -> None:
        self.parts = list(parts)
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.skips = skips
        self._offsets = np.cumsum([0] + [len(p) for p in self.parts])
        if cache_audio is None:
            cache_audio = float(self.durations.sum()) * sample_rate * 4 <= AUTO_CACHE_BYTES
        self.cache_audio = bool(cache_audio)
        self._cache: dict[int, torch.Tensor] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def durations(self) -> np.ndarray:
        """``(N,)`` float32 seconds of every utterance."""
        return np.concatenate([p.durations for p in self.parts]) if self.parts else np.zeros(0, np.float32)

    @property
    def sources(self) -> np.ndarray:
        """``(N,)`` source index of every utterance (0 for a single corpus)."""
        return np.concatenate([np.full(len(p), p.source, dtype=np.int64) for p in self.parts]) if self.parts \
            else np.zeros(0, np.int64)

    @property
    def lengths(self) -> list[int]:
        return (self.durations.astype(np.float64) * self.sample_rate).astype(np.int64).tolist()

    @property
    def utterances(self) -> Sequence[Utterance]:
        """Every utterance, each read from its table when accessed."""
        return _Utterances(self)

    def utterance(self, i: int) -> Utterance:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return self.parts[k].utterance(i - int(self._offsets[k]))

    def __getitem__(self, i: int):
        if i in self._bad:
            return None
        u = self.utterance(i)
        wav = self._cache.get(i)
        if wav is None:
            try:
                wav = load_audio(u.audio, self.sample_rate)
            except AudioError as e:
                self._bad.add(i)
                self.skips.skip("decode_failed", f"{u.id}: {e}")
                return None
            if self.cache_audio:
                self._cache[i] = wav
        return {"id": u.id, "waveform": wav, "text": u.text, "tokens": self.tokenizer.encode(u.text),
                "source": u.source}


def collate_speech(items: list[dict | None]) -> dict | None:
    """Pads waveforms ``(B, S)`` and targets ``(B, L)``; drops items that failed to decode (None)."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    wav_lengths = torch.tensor([it["waveform"].numel() for it in items], dtype=torch.long)
    waveforms = torch.zeros(len(items), int(wav_lengths.max()))
    for b, it in enumerate(items):
        waveforms[b, : it["waveform"].numel()] = it["waveform"]
    target_lengths = torch.tensor([len(it["tokens"]) for it in items], dtype=torch.long)
    targets = torch.zeros(len(items), max(1, int(target_lengths.max())), dtype=torch.long)
    for b, it in enumerate(items):
        targets[b, : len(it["tokens"])] = torch.tensor(it["tokens"], dtype=torch.long)
    batch = {"ids": [it["id"] for it in items], "waveforms": waveforms, "lengths": wav_lengths, "targets": targets,
             "target_lengths": target_lengths, "texts": [it["text"] for it in items]}
    if all("source" in it for it in items):
        batch["sources"] = torch.tensor([it["source"] for it in items], dtype=torch.long)  # (B,) source index
    return batch


class SpeechDataModule(L.LightningDataModule):
    """Transcribed speech from the hub, local audiofolders/manifests or the embedded synthetic corpus.

    Every row is validated up front (readable header, duration range, transcript inside the tokenizer's
    alphabet after normalisation); bad rows are skipped with a warning naming them and counted in
    :attr:`skip_report`, so an epoch never dies on one bad file.

    Args:
        dataset: Hub id, local path, ``embedded``, or ``fsdd-digits`` (connected-digit strings composed from FSDD
            recordings: training from FSDD ``train``, validation/test from FSDD ``test``; ``data_dir`` is the FSDD
            copy, default ``../shared/data/fsdd``; split names, duration limits and ``validate`` do not apply).
        data_dir: Local copy (audiofolder splits or ``{split}.jsonl|csv`` manifests); wins over ``dataset``.
        config_name: Hub configuration (e.g. ``clean`` for LibriSpeech).
        train_split / val_split / test_split: Split names (``datasets`` slicing such as ``train[:10%]`` works).
        audio_column / text_column / id_column / duration_column: Column names.
        sample_rate: Rate the model expects; audio is resampled to it.
        min_duration / max_duration: Utterances outside this range (seconds) are skipped and counted.
        normalizer: Transcript normaliser (``asr_chars``: lower-case letters, apostrophe, space).
        tokenizer: ``char`` (default) or ``sentencepiece`` (trained on the training transcripts).
        sentencepiece_vocab_size: Subword vocabulary size for ``sentencepiece``.
        batch_size: Utterances per batch (per device).
        max_batch_seconds: Optional cap on padded audio seconds per batch (length-bucketed batches).
        bucketing: Group utterances of similar length (less padding); False gives random batches. Training batches
            are shuffled per epoch either way.
        validate: Read every file's header up front (reject unreadable files before training). With
            ``validate=false`` a corpus without a duration column still reads each header once, to learn the
            durations; they are cached beside the prepared dataset and reused by later runs.
        cache_audio: Keep decoded waveforms in memory after first use: ``true``, ``false``, or ``null`` (the
            default): cache a split only if its decoded audio fits in 1 GiB (about 4.6 h at 16 kHz), since the
            cache grows in every process (rank and worker) until the run ends. Encoded audio is never held: rows
            stay in the memory-mapped Arrow table and are read when a batch needs them.
        embedded_size: Utterances the embedded corpus has in train/validation/test.
        embedded_texts: A slot JSONL or text file whose sentences the embedded corpus speaks instead of generated
            ones (validation: its last ``embedded_size[1]`` sentences; see :func:`data.synth.ensure_text_corpus`).
        embedded_voices: ``all`` eSpeak NG voices, or ``train``: all but the evaluation voices
            (:data:`data.synth.EVAL_VOICES`).
        digits_per_utterance: ``fsdd-digits``: inclusive range of digits per string.
        digits_size: ``fsdd-digits``: strings in train (per epoch)/validation/test.
        num_workers: DataLoader workers.
        streaming: Read the corpus as a stream (``datasets`` streaming; nothing downloaded up front, bounded
            memory; see `data.streaming`): rows are checked and decoded as they arrive. Character tokenizer only.
        shuffle_buffer: Streaming: rows in the shuffle buffer (reseeded each epoch).
        steps_per_epoch: Streaming: batches per epoch on every rank (required under DDP, so ranks stay in step).
        sources: Several corpora in one run (see :class:`SpeechSource`): each has its own location, columns,
            splits, normaliser and sampling weight; training draws from all of them, and validation keeps the
            source of every utterance so a model can report ``val/<source>/cer`` beside the combined ``val/cer``.
            When set, the top-level ``dataset``/``data_dir``/split/column/normaliser fields are not used.
        holdout_speakers: ``fsdd-digits``: speakers never trained on; validation and test use only them
            (leave-speakers-out: how well the model reads a voice it has never heard).
    """

    def __init__(
        self,
        *,
        dataset: str | None = EMBEDDED,
        data_dir: str | None = None,
        config_name: str | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        audio_column: str = "audio",
        text_column: str = "text",
        id_column: str | None = "id",
        duration_column: str | None = "duration",
        sample_rate: PositiveInt = 16000,
        min_duration: NonNegativeFloat = 0.1,
        max_duration: PositiveFloat = 20.0,
        normalizer: Literal["asr_chars", "lower", "none"] = "asr_chars",
        tokenizer: Literal["char", "sentencepiece"] = "char",
        sentencepiece_vocab_size: PositiveInt = 128,
        batch_size: PositiveInt = 16,
        max_batch_seconds: PositiveFloat | None = None,
        bucketing: bool = True,
        validate: bool = True,
        cache_audio: bool | None = None,
        embedded_size: tuple[PositiveInt, NonNegativeInt, NonNegativeInt] = (3000, 200, 200),
        embedded_texts: str | None = None,
        embedded_voices: Literal["all", "train"] = "all",
        num_workers: NonNegativeInt = 0,
        seed: int = 0,
        digits_per_utterance: tuple[PositiveInt, PositiveInt] = (2, 7),
        digits_size: tuple[PositiveInt, NonNegativeInt, NonNegativeInt] = (3000, 300, 300),
        streaming: bool = False,
        shuffle_buffer: PositiveInt = 2000,
        steps_per_epoch: PositiveInt | None = None,
        sources: list[SpeechSource] | None = None,
        holdout_speakers: list[str] | None = None,
    ) -> None:
        super().__init__()
        if min_duration >= max_duration:
            raise ValueError(f"min_duration must be below max_duration = {max_duration}, got {min_duration}")
        self.save_hyperparameters()
        self._index: dict[str, SplitIndex] = {}
        self._tokenizer = None
        self.datasets: dict[str, Dataset] = {}
        self.skips: dict[str, SkipCounter] = {}

    # -- sources ------------------------------------------------------------------------------------------------
    def _source(self, src: SpeechSource | None = None) -> tuple[str | None, str | None]:
        """``(dataset, data_dir)`` of one source (the single corpus by default); ``embedded`` is built on first use."""
        hp = self.hparams
        dataset, data_dir = (hp.dataset, hp.data_dir) if src is None else (src.dataset, src.data_dir)
        if data_dir is None and dataset == EMBEDDED:
            from data.synth import (
                TRAIN_VOICES,
                VOICES,
                default_corpus_dir,
                ensure_default_corpus,
                ensure_text_corpus,
            )

            voices = TRAIN_VOICES if hp.get("embedded_voices") == "train" else VOICES
            if hp.get("embedded_texts"):
                try:
                    return None, str(ensure_text_corpus(hp.embedded_texts, hp.embedded_size, voices=voices))
                except (OSError, ValueError) as e:  # a missing file or a bad row: one line, not a traceback
                    raise DataError(f"data.embedded_texts: {e}") from None
            n_train, n_val, n_test = hp.embedded_size
            # One cache directory per size, so a small test corpus never replaces the full one.
            base = default_corpus_dir()
            suffix = "" if voices == VOICES else "_train-voices"
            root = base.with_name(f"{base.name}_{n_train}-{n_val}-{n_test}{suffix}")
            root = ensure_default_corpus(root, n_train=n_train, n_validation=n_val, n_test=n_test, voices=voices)
            return None, str(root)
        return dataset, data_dir

    @property
    def sources(self) -> list[SpeechSource]:
        """The corpora read: ``data.sources``, or one unnamed source built from the top-level fields."""
        hp = self.hparams
        if hp.get("sources"):
            return check_sources(hp.sources)
        return [SpeechSource(name="", dataset=hp.dataset, data_dir=hp.data_dir, config_name=hp.config_name,
                             train_split=hp.train_split, val_split=hp.val_split, test_split=hp.test_split,
                             audio_column=hp.audio_column, text_column=hp.text_column, id_column=hp.id_column,
                             duration_column=hp.duration_column, normalizer=hp.normalizer)]

    @property
    def source_names(self) -> list[str]:
        """Names of a mixture's sources, in the order of the ``sources`` index in batches ([] for one corpus)."""
        return [s.name for s in self.sources] if self.hparams.get("sources") else []

    def _where(self, split: str, src: SpeechSource | None = None) -> str:
        """What messages about ``split`` name: the file its rows come from when local, else the corpus and split."""
        if src is not None and src.name:
            return f"{src.name}: {split_where(src.data_dir, src.dataset, split)}"
        return split_where(self.hparams.data_dir, self.hparams.dataset, split)

    def _read_source(self, k: int, src: SpeechSource, split: str) -> SplitIndex:
        key = f"{k}:{split}"
        if key not in self._index:
            hp = self.hparams
            where = self._where(split, src)
            dataset, data_dir = self._source(src)
            rows = load_split(dataset, split, config_name=src.config_name, data_dir=data_dir)
            rows = no_decode(rows, src.audio_column, where)
            skips = self.skips.setdefault(skip_key(src, split), SkipCounter(where))
            index = index_rows(
                rows, where=where, audio_column=src.audio_column, text_column=src.text_column,
                id_column=src.id_column, duration_column=src.duration_column, base_dir=_base_dir(data_dir),
                normalizer=src.normalizer, tokenizer=self.tokenizer_for_validation(), min_duration=hp.min_duration,
                max_duration=hp.max_duration, validate=hp.validate, skips=skips, source=k,
                only_texts=src.only_texts)
            if not len(index):
                raise DataError(f"{where}: no usable utterances ({dict(skips.counts)} skipped)")
            if skips.total:
                log.warning("%s: %d utterances kept, %d skipped %s", where, len(index), skips.total,
                            dict(skips.counts))
            self._index[key] = index
        return self._index[key]

    def _read_stage(self, stage: str) -> list[SplitIndex]:
        """Every recorded source's split index for ``stage`` (train/val/test), in source order."""
        out: list[SplitIndex] = []
        for k, src in enumerate(self.sources):
            split = src.split(stage)
            if not src.takes_part(stage) or source_kind(src) != RECORDED:
                continue
            out.append(self._read_source(k, src, split))
        if not out:
            raise DataError(f"data.sources: no source has a {stage} split")
        return out

    def _read(self, split: str) -> list[SplitIndex]:
        """One split of the single corpus (by split name)."""
        return [self._read_source(0, self.sources[0], split)]

    def tokenizer_for_validation(self):
        # Character checks use the char alphabet; subword tokenizers cover the same characters.
        return CharTokenizer() if self.hparams.tokenizer == "sentencepiece" else self.tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.hparams.tokenizer == "char":
                self._tokenizer = CharTokenizer()
            else:
                from data.subwords import SentencePieceTokenizer

                texts = [t for part in self._read_stage("train") for t in part.texts()]
                # Every split is validated against the char alphabet, so each of its characters gets a piece
                # even when the training transcripts lack it (a held-out text must never hit <unk>).
                self._tokenizer = SentencePieceTokenizer.train(
                    texts, vocab_size=self.hparams.sentencepiece_vocab_size,
                    required_chars=self.tokenizer_for_validation().alphabet, seed=self.hparams.seed)
        return self._tokenizer

    @property
    def vocab(self) -> dict:
        """The tokenizer as a plain dict (stored in the model's checkpoint)."""
        return self.tokenizer.to_dict()

    @vocab.setter
    def vocab(self, value: dict) -> None:
        self._tokenizer = tokenizer_from_dict(value)

    @property
    def skip_report(self) -> dict:
        return {split: dict(s.counts) for split, s in self.skips.items() if s.total}

    # -- Lightning hooks ----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Builds the datasets of ``stage`` (``fit``: train and val; None: all three) from the sources' kinds
        (:func:`data.speech_sources.stage_dataset`)."""
        names = ["train", "val", "test"] if stage is None else \
            {"fit": ["train", "val"], "validate": ["val"], "test": ["test"]}.get(stage or "fit", [])
        if self.hparams.get("sources") and self.hparams.streaming:
            raise DataError("data.sources: a mixture is read from prepared datasets; set data.streaming=false")
        for name in names:
            if name not in self.datasets:
                self.datasets[name] = stage_dataset(name, self)

    def _stream(self, name: str, split: str) -> Dataset:
        """``data.streaming``: one split of the single corpus, checked and decoded as its rows arrive."""
        from data.streaming import StreamingSpeechDataset, decode_item, streaming_rows

        hp = self.hparams
        if hp.tokenizer != "char":
            raise DataError("data.streaming needs data.tokenizer=char (a subword vocabulary is trained on a full "
                            "pass over the training transcripts)")
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        train = name == "train"
        if world > 1 and hp.steps_per_epoch is None and train:
            raise DataError("data.streaming under DDP needs data.steps_per_epoch (every rank must run the same "
                            "number of training batches, or one waits forever)")
        dataset, data_dir = self._source()
        base_dir = _base_dir(data_dir)
        where = self._where(split)
        rows = no_decode(load_split(dataset, split, config_name=hp.config_name, data_dir=data_dir, streaming=True),
                         hp.audio_column, where)
        columns = list(getattr(rows, "column_names", None) or [])
        id_column, duration_column = check_columns(columns, where=where, audio_column=hp.audio_column,
                                                    text_column=hp.text_column, id_column=hp.id_column,
                                                    duration_column=hp.duration_column)
        skips = self.skips.setdefault(split, SkipCounter(where))

        def check(i, row):
            return row_to_utterance(i, row, audio_column=hp.audio_column, text_column=hp.text_column,
                                     id_column=id_column, duration_column=duration_column, base_dir=base_dir,
                                     normalizer=hp.normalizer, tokenizer=self.tokenizer,
                                     min_duration=hp.min_duration, max_duration=hp.max_duration,
                                     validate=hp.validate, skips=skips)

        return StreamingSpeechDataset(
            streaming_rows(lambda: rows, rank=rank, world_size=world,
                           shuffle_buffer=hp.shuffle_buffer if train else None, seed=hp.seed),
            decode_item(check, self.tokenizer, sample_rate=hp.sample_rate, skips=skips), collate_speech,
            batch_size=hp.batch_size, bucket_batches=20 if hp.bucketing else 1,
            steps_per_epoch=hp.steps_per_epoch if train else None, shuffle=train, seed=hp.seed,
            epoch_fn=(lambda: self.trainer.current_epoch) if trainer is not None else None)

    def _loader(self, name: str, train: bool) -> DataLoader:
        ds = self.datasets[name]
        hp = self.hparams
        if hp.streaming:
            # Batches come ready-made from the stream; workers restart each epoch (they read the epoch then).
            return DataLoader(ds, batch_size=None, num_workers=hp.num_workers)
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        from data.samplers import LengthBucketBatchSampler

        max_tokens = int(hp.max_batch_seconds * hp.sample_rate) if hp.max_batch_seconds else None
        weights = {}
        if train and hp.get("sources"):
            # Source weights act in the sampler: the epoch's index list repeats or subsamples each corpus.
            weights = {"groups": ds.sources.tolist(),
                       "group_weights": [s.weight for s in self.sources]}
        sampler = LengthBucketBatchSampler(
            lengths=ds.lengths, batch_size=hp.batch_size, max_tokens=max_tokens,
            shuffle=train, seed=hp.seed, num_replicas=world, rank=rank,
            bucket_size_multiplier=100 if hp.bucketing else 1, **weights)
        self._samplers = getattr(self, "_samplers", {})
        self._samplers[name] = sampler
        if train:
            from data.resumable import ResumableDataLoader, trainer_progress

            return ResumableDataLoader(ds, batch_sampler=sampler, progress=trainer_progress(self), seed=hp.seed,
                                       collate_fn=collate_speech, num_workers=hp.num_workers,
                                       persistent_workers=hp.num_workers > 0)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_speech, num_workers=hp.num_workers,
                          persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        trainer = getattr(self, "trainer", None)
        if hasattr(ds, "set_epoch") and trainer is not None:
            # Generated data (connected digits) draws new strings each epoch; with
            # trainer.reload_dataloaders_every_n_epochs=1 the sampler sees the new lengths.
            ds.set_epoch(trainer.current_epoch)
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def padding_fraction(self, name: str = "train") -> float | None:
        s = getattr(self, "_samplers", {}).get(name)
        return s.padding_fraction() if s is not None else None


def _base_dir(data_dir: str | None) -> str | None:
    """The folder relative audio paths of a local copy start from (the manifest's folder for a manifest file)."""
    if data_dir is None:
        return None
    p = Path(data_dir)
    return str(p.parent if p.is_file() else p)


def recorded_corpora(stage: str, sources: list[tuple[int, SpeechSource]], dm: SpeechDataModule) -> Dataset:
    """``recorded`` sources (hub ids, local copies, ``embedded``) of one stage in one :class:`SpeechDataset`, or
    the single corpus read as a stream with ``data.streaming`` (a mixture refuses streaming).

    A mixture's decode failures are counted under the stage (``data.sources [val]``); the single corpus counts them
    with its rows' skips, under its split name.
    """
    hp = dm.hparams
    if hp.streaming:
        ((_, src),) = sources
        return dm._stream(stage, src.split(stage))
    parts = [dm._read_source(k, src, src.split(stage)) for k, src in sources]
    tokenizer = dm.tokenizer
    if hp.get("sources"):
        skips = dm.skips.setdefault(stage, SkipCounter(f"data.sources [{stage}]"))
    else:
        split = sources[0][1].split(stage)
        skips = dm.skips.setdefault(split, SkipCounter(dm._where(split)))
    return SpeechDataset(parts, tokenizer, sample_rate=hp.sample_rate, skips=skips, cache_audio=hp.cache_audio)


register_source_kind(RECORDED, recorded_corpora, together=True)
