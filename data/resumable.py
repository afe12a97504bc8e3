"""Training DataLoaders that resume mid-epoch exactly where a checkpoint left off.

Lightning saves the ``state_dict()`` of every training DataLoader that has one in the checkpoint and hands it
back through ``load_state_dict()`` before the first batch of a resumed run. `ResumableDataLoader` stores the epoch
and the number of batches the training loop has consumed in it; on resume it sets its sampler to that epoch and
skips that many batches at the *index* level (nothing is loaded or decoded for them), so the resumed run sees
exactly the batches the uninterrupted run would have seen, in the same order.

This requires a batch order that is a function of ``(seed, epoch)`` only: `LengthBucketBatchSampler`, or a
`epoch_batches` wrapper around a seeded `DistributedSampler` (which is how the text DataModules shuffle, with or
without DDP). The DataLoader also gets its own seeded generator, so creating an iterator never draws from the
global torch RNG that dropout and augmentation use (`pipelines.training.callbacks.ExactResume` restores that one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler


class SkippableBatchSampler(Sampler[list[int]]):
    """Wraps a batch sampler; `skip_next` makes the next iteration start after its first ``n`` batches.

    ``sampler`` is the wrapped sampler's own ``sampler`` attribute, so Lightning's per-epoch
    ``batch_sampler.sampler.set_epoch(epoch)`` still reaches it.
    """

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.sampler = getattr(batch_sampler, "sampler", None)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        for target in (self.batch_sampler, self.sampler):
            if callable(getattr(target, "set_epoch", None)):
                target.set_epoch(epoch)
                return

    def skip_next(self, n: int) -> None:
        self._skip = max(int(n), 0)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for i, batch in enumerate(self.batch_sampler):
            if i >= skip:
                yield batch

    def __len__(self) -> int:
        # The full epoch length even while skipping: Lightning counts the resumed epoch's batches from the
        # restored position and stops at this number.
        return len(self.batch_sampler)


def epoch_batches(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, num_replicas: int = 1,
                  rank: int = 0) -> BatchSampler:
    """Batches of a `DistributedSampler` (also for one process): the order is a function of (seed, epoch) only."""
    sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
    return BatchSampler(sampler, batch_size, drop_last=False)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a batch sampler whose position within the epoch is saved in checkpoints.

    Args:
        dataset: The dataset.
        batch_sampler: A batch sampler with a (seed, epoch)-deterministic order.
        progress: Returns ``(epoch, batches consumed by training this epoch)`` when a checkpoint is saved (the
            DataModule reads it from its trainer), or None when unknown (nothing is skipped then).
        seed: Seeds the loader's own generator (worker seeds), keeping the global RNG untouched.
        **kwargs: Further `DataLoader` arguments (``collate_fn``, ``num_workers``, ...).
    """

    def __init__(self, dataset: Dataset, *, batch_sampler: Any,
                 progress: Callable[[], tuple[int, int] | None] | None = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=SkippableBatchSampler(batch_sampler),
                         generator=torch.Generator().manual_seed(seed), **kwargs)
        self._progress = progress
        self.resumed_at: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        where = self._progress() if self._progress is not None else None
        if where is None:
            return {}
        epoch, consumed = where
        return {"epoch": int(epoch), "batches_consumed": int(consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "epoch" not in state:
            return
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        # Set the epoch now: with worker processes, the iterator draws its first batches before Lightning calls
        # set_epoch for the resumed epoch.
        self.batch_sampler.set_epoch(epoch)
        if 0 < consumed < len(self.batch_sampler):
            self.batch_sampler.skip_next(consumed)
            self.resumed_at = (epoch, consumed)


def trainer_progress(owner: Any) -> Callable[[], tuple[int, int] | None]:
    """``progress`` for `ResumableDataLoader`: the epoch and batches processed, read from ``owner.trainer``."""

    def progress() -> tuple[int, int] | None:
        trainer = getattr(owner, "trainer", None)
        if trainer is None:
            return None
        loop = trainer.fit_loop
        return int(trainer.current_epoch), int(loop.epoch_loop.batch_progress.current.processed)

    return progress
