"""Streaming speech corpora (larger than local disk): ``datasets`` streaming, sharded per rank, bounded memory.

Rows arrive from a ``datasets.IterableDataset`` (hub or local files, ``load_dataset(..., streaming=True)``), split
across DDP ranks with ``datasets.distributed.split_dataset_by_node`` and shuffled through a bounded buffer that
is reseeded every epoch. Each row is checked (transcript, header, duration) and decoded as it arrives; a bad row
is skipped, counted and named, as in the map-style path. Batches are length-bucketed inside a window of
``bucket_batches`` batches, so memory holds at most ``shuffle_buffer`` rows plus one window of decoded audio.

Under DDP every rank must run the same number of batches, or one rank waits forever in a collective: there
``steps_per_epoch`` is required, and each rank yields exactly that many batches per epoch, restarting its shard
(with the next shuffle seed) if it runs out.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info


class StreamingSpeechDataset(IterableDataset):
    """Yields collated batches (``collate_speech`` dicts) from a row stream.

    Args:
        open_rows: Returns the row stream for this rank (an iterable; ``set_epoch`` is called on it if it has one).
        to_item: Turns ``(index, row)`` into a dataset item (id, waveform, text, tokens) or None (skipped, counted).
        collate: Pads a list of items into a batch.
        batch_size: Items per batch.
        bucket_batches: Batches per length-sorting window (1 = no bucketing).
        steps_per_epoch: Exact batches per epoch on this rank (split over DataLoader workers), or None to run
            through the stream once.
        shuffle: Shuffle the batch order inside each window (training).
        seed: Base seed; the window shuffle is a function of (seed, epoch).
        epoch_fn: Returns the current epoch when iteration starts (the DataModule reads its trainer's), else
            the value given to `set_epoch` is used.
    """

    def __init__(self, open_rows: Callable[[], Any], to_item: Callable[[int, dict], dict | None],
                 collate: Callable[[list[dict]], dict | None], *, batch_size: int, bucket_batches: int = 20,
                 steps_per_epoch: int | None = None, shuffle: bool = True, seed: int = 0,
                 epoch_fn: Callable[[], int] | None = None) -> None:
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError("batch_size and bucket_batches must be at least 1")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        self.open_rows = open_rows
        self.to_item = to_item
        self.collate = collate
        self.batch_size = batch_size
        self.bucket_batches = bucket_batches
        self.steps_per_epoch = steps_per_epoch
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.epoch_fn = epoch_fn
        self.max_window_items = 0  # the largest number of decoded items held at once (memory bound, tested)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.steps_per_epoch is None:
            raise TypeError("a stream without steps_per_epoch has no length")
        return self.steps_per_epoch

    def _rows(self, epoch: int) -> Iterator[tuple[int, dict]]:
        rows = self.open_rows()
        if hasattr(rows, "set_epoch"):
            rows.set_epoch(epoch)
        yield from enumerate(rows)

    def _batches(self, epoch: int) -> Iterator[dict]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        window: list[dict] = []
        for i, row in self._rows(epoch):
            item = self.to_item(i, row)
            if item is None:
                continue
            window.append(item)
            if len(window) >= self.batch_size * self.bucket_batches:
                yield from self._cut(window, rng)
                window = []
        if window:
            yield from self._cut(window, rng)

    def _cut(self, window: list[dict], rng: random.Random) -> Iterator[dict]:
        self.max_window_items = max(self.max_window_items, len(window))
        if self.bucket_batches > 1:
            window = sorted(window, key=lambda it: it["waveform"].numel())
        groups = [window[k:k + self.batch_size] for k in range(0, len(window), self.batch_size)]
        if self.shuffle:
            rng.shuffle(groups)
        for group in groups:
            batch = self.collate(group)
            if batch is not None:
                yield batch

    def __iter__(self) -> Iterator[dict]:
        if self.epoch_fn is not None:
            self.epoch = int(self.epoch_fn())
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if self.steps_per_epoch is None:
            yield from self._batches(self.epoch)
            return
        # Exactly steps_per_epoch batches on this rank, split over the DataLoader's workers.
        steps = self.steps_per_epoch // workers + (worker < self.steps_per_epoch % workers)
        produced, restart = 0, 0
        while produced < steps:
            got_any = False
            for batch in self._batches(self.epoch * 1000 + restart):
                got_any = True
                yield batch
                produced += 1
                if produced >= steps:
                    return
            if not got_any:
                raise RuntimeError("the stream yielded no usable utterance on this rank (see the skip warnings)")
            restart += 1


def streaming_rows(load: Callable[[], Any], *, rank: int, world_size: int, shuffle_buffer: int | None,
                   seed: int) -> Callable[[], Any]:
    """``open_rows`` for `StreamingSpeechDataset`: this rank's shard of a ``datasets`` stream, shuffled."""

    def open_rows():
        rows = load()
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            rows = split_dataset_by_node(rows, rank=rank, world_size=world_size)
        if shuffle_buffer:
            rows = rows.shuffle(seed=seed, buffer_size=shuffle_buffer)
        return rows

    return open_rows


def decode_item(utt_fn: Callable[[int, dict], Any], tokenizer, *, sample_rate: int, skips) -> Callable:
    """``to_item``: row -> utterance (checked by ``utt_fn``) -> decoded item, or None (counted, named)."""
    from data.audio import AudioError, load_audio

    def to_item(i: int, row: dict) -> dict | None:
        utt = utt_fn(i, row)
        if utt is None:
            return None
        try:
            wav = load_audio(utt.audio, sample_rate)
        except AudioError as e:
            skips.skip("decode_failed", f"{utt.id}: {e}")
            return None
        return {"id": utt.id, "waveform": wav, "text": utt.text, "tokens": tokenizer.encode(utt.text)}

    return to_item

