"""Length-bucketed batch samplers: batches of similar-length utterances, deterministic per epoch and DDP-aware."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["LengthBucketBatchSampler", "make_batch_sampler_for"]

# Lightning 2.6.6 and a DataLoader(dataset, batch_sampler=LengthBucketBatchSampler(...)) -- read from the installed
# source (pytorch/trainer/connectors/data_connector.py = DC, pytorch/utilities/data.py = UD,
# fabric/utilities/data.py = FD):
# * DC:169-175 `_requires_distributed_sampler` looks at `dataloader.sampler`, which for a loader built with
#   `batch_sampler=` is torch's default SequentialSampler, so it is True under every distributed strategy (DDP even
#   with one device) while `Trainer(use_distributed_sampler=True)` (the default). DC:177-194 then re-creates the
#   loader via UD:132 `_update_dataloader` -- and also for *every* predict loader, distributed or not.
# * DC:230-244 builds `DistributedSampler(dataset)` (predict: `UnrepeatedDistributedSamplerWrapper`) and
#   UD:233-336 `_dataloader_init_kwargs_resolve_sampler` tries to put it into our batch sampler. Our class is not a
#   `BatchSampler`, so it never gets the saved init args of UD:250 (DC:330 only patches BatchSampler subclasses).
#   UD:280-305: a class with BOTH `batch_size` and `drop_last` attributes is re-instantiated as
#   `cls(sampler, batch_size=..., drop_last=...)`, which our keyword-only __init__ rejects with a TypeError (the
#   regex at UD:292 does not match it, so it is re-raised as is) -- hence this class has no public `drop_last`.
#   Without them: fit/validate/test raise TypeError "Lightning can't inject a (distributed) sampler into your batch
#   sampler" (UD:317-322); predict only warns (UD:306-313) and wraps our sampler, unchanged, in
#   `_IndexBatchSamplerWrapper` (UD:324-325; predict only), dropping Lightning's sampler (UD:328-334).
#   So Lightning never double-shards this sampler: it either crashes early or leaves it alone.
# * What a DataModule must do under DDP: run with `Trainer(use_distributed_sampler=False)` (the loader is then
#   returned untouched, DC:185-194) and shard here, with num_replicas/rank from `trainer.world_size` /
#   `trainer.global_rank` (`make_batch_sampler_for`) or from the initialised process group.
# * FD:415-436 `_set_sampler_epoch` (called each epoch at fit_loop.py:443-445 and evaluation_loop.py:252-255, and
#   once for validate/test/predict at DC:509-511) calls `set_epoch` on `dataloader.sampler` and `dataloader.batch_sampler.sampler` only, never on the
#   batch sampler itself; our `.sampler` attribute forwards that call, so the order changes per epoch by itself.
# * UD:339-361 `_is_dataloader_shuffled` reads `batch_sampler.sampler`; ours is no RandomSampler, so val/test
#   loaders never get the "shuffling enabled" warning.
# * fit_loop.py:226-283 takes `len(dataloader)` once in `setup_data` (before the epoch's `set_epoch`). With
#   `max_tokens` the batch count may vary a little by epoch; the epoch then ends early (StopIteration) or is cut at
#   the first epoch's count (training_epoch_loop.py:442-445). Counts are computed globally, so all ranks agree.

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: (seed, epoch) pairs map to distinct generator seeds


def _resolve_world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    return int(num_replicas), int(rank)


class _EpochForwarder:
    """Stand-in ``batch_sampler.sampler`` so Lightning's per-epoch ``set_epoch`` call reaches the batch sampler.

    Iterating it yields the flattened indices of the owner's batches for this rank and the current epoch.

    Args:
        owner: The batch sampler to forward to.
    """

    def __init__(self, owner: LengthBucketBatchSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        """Sets the owner's epoch.

        Args:
            epoch: The epoch number.
        """
        self._owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for batch in self._owner.batches():
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self._owner.batches())


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches utterances of similar length together (a "sortish" sampler), deterministic and DDP-aware.

    Training (``shuffle=True``): each epoch the indices are randomly permuted with a generator seeded from
    ``(seed, epoch)``, cut into buckets of ``batch_size * bucket_size_multiplier`` indices (with ``max_tokens`` only:
    that many times the items of an average-length batch), each bucket is sorted by length and cut greedily into
    batches, and the batch order is shuffled. Evaluation (``shuffle=False``): all indices are sorted by
    ``(length, index)`` and cut into batches in that order -- the same batches every epoch.

    A batch grows while it has at most ``batch_size`` items and ``max_len_in_batch * n <= max_tokens`` (either
    limit or both); an item that alone exceeds ``max_tokens`` forms a batch of its own.

    Distributed: the batch list is built globally (identical on every rank for the same seed and epoch) and rank
    ``r`` takes batches ``r::num_replicas``. When the batch count ``B`` is not a multiple of ``num_replicas`` and
    ``drop_last=False``, the first ``num_replicas - B % num_replicas`` batches of the epoch's order are appended
    again (cycling if ``B`` is smaller), so every rank gets the same number of batches and none waits forever;
    those repeated batches -- at most ``num_replicas - 1`` per epoch, see `num_padded_batches` -- are the only
    duplicates, and with ``num_replicas == 1`` there are none: every index appears exactly once per epoch. Metrics
    computed under DDP therefore count the repeated utterances twice.

    With ``drop_last=True``: the trailing batch of each bucket is dropped when it is not full (fewer than
    ``batch_size`` items and/or room under ``max_tokens`` for one more item of its maximum length), and under DDP
    the batch list is cut down to a multiple of ``num_replicas`` instead of padded.

    Public attributes (``batch_size``, ``max_tokens``, ``shuffle``, ``seed``, ``num_replicas``, ``rank``,
    ``bucket_size_multiplier``) are read when batches are built, so changing one takes effect on the next
    iteration. There is deliberately no public ``drop_last`` attribute (see the Lightning notes above this class).

    Args:
        lengths: Length of every item (e.g. audio samples or frames per utterance), indexed like the dataset.
        batch_size: Maximum items per batch, or None for no item limit.
        max_tokens: Maximum padded size per batch (``max_len_in_batch * n``), or None for no size limit.
        shuffle: Random buckets and batch order per epoch; False gives the sorted evaluation order.
        seed: Base seed; batches are a function of ``(seed, epoch)`` only.
        num_replicas: Number of ranks; defaults to the initialised process group's world size, else 1.
        rank: This rank; defaults to the initialised process group's rank, else 0.
        bucket_size_multiplier: Bucket size in batches (``shuffle=True`` only); 1 means random batches.
        drop_last: Drop incomplete trailing batches and truncate instead of pad under DDP.
        groups: Group id of every item (e.g. its corpus in a mixture), indexed like ``lengths``; with
            ``group_weights`` it sets how often each group's items are drawn per training epoch.
        group_weights: Draws per item and epoch for each group id (``shuffle=True`` only): ``1`` every item once,
            ``2`` every item twice, ``0.5`` a fresh random half each epoch; the whole part repeats and the fraction
            is drawn without replacement from the ``(seed, epoch)`` generator, so every rank builds the same list.

    Raises:
        ValueError: On empty or negative lengths, no batch limit, a non-positive limit, or a bad rank.
        TypeError: When a length is not an integer.

    Example:
        >>> sampler = LengthBucketBatchSampler(lengths=[5, 1, 4, 2], batch_size=2, shuffle=False)
        >>> list(sampler)
        [[1, 3], [2, 0]]
    """

    def __init__(
        self,
        *,
        lengths: Sequence[int],
        batch_size: int | None = 16,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        bucket_size_multiplier: int = 100,
        drop_last: bool = False,
        groups: Sequence[int] | None = None,
        group_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        try:
            lens = [operator.index(x) for x in lengths]
        except TypeError as err:
            raise TypeError(f"lengths must be integers (samples or frames per item): {err}") from None
        if not lens:
            raise ValueError("lengths is empty: a LengthBucketBatchSampler needs at least one item")
        if min(lens) < 0:
            bad = next(i for i, n in enumerate(lens) if n < 0)
            raise ValueError(f"lengths must be >= 0, got lengths[{bad}] = {lens[bad]}")
        if batch_size is None and max_tokens is None:
            raise ValueError("set batch_size, max_tokens or both: with neither, a batch would have no size limit")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        if bucket_size_multiplier < 1:
            raise ValueError(f"bucket_size_multiplier must be >= 1, got {bucket_size_multiplier}")
        if group_weights is not None:
            if groups is None or len(groups) != len(lens):
                raise ValueError(f"group_weights needs groups with one group id per item ({len(lens)} items, "
                                 f"got {None if groups is None else len(groups)} group ids)")
            if any(w < 0 for w in group_weights):
                raise ValueError(f"group_weights must be >= 0, got {list(group_weights)}")
            if max(groups) >= len(group_weights) or min(groups) < 0:
                raise ValueError(f"group ids must index group_weights (0..{len(group_weights) - 1}), "
                                 f"got ids {min(groups)}..{max(groups)}")
        num_replicas, rank = _resolve_world(num_replicas, rank)
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is out of range for num_replicas={num_replicas} (need 0 <= rank < {num_replicas})")

        self.lengths: list[int] = lens
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.bucket_size_multiplier = bucket_size_multiplier
        self._drop_last = drop_last  # not `drop_last`: see the Lightning notes at the top of this module
        self.groups = list(groups) if groups is not None else None
        self.group_weights = list(group_weights) if group_weights is not None else None
        self.epoch = 0
        self.sampler = _EpochForwarder(self)  # Lightning calls batch_sampler.sampler.set_epoch(epoch)
        self._cache_key: tuple | None = None
        self._global: list[list[int]] = []
        self._num_padded = 0

    # -- epoch and batch construction ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch: batches are a deterministic function of ``(seed, epoch)``.

        Args:
            epoch: The epoch number; Lightning sets it before every epoch through ``self.sampler``.
        """
        self.epoch = int(epoch)

    def _key(self) -> tuple:
        return (self.epoch, self.seed, self.shuffle, self.batch_size, self.max_tokens, self.num_replicas,
                self.bucket_size_multiplier, self._drop_last,
                tuple(self.group_weights) if self.group_weights is not None else None)

    def _is_full(self, n: int, max_len: int) -> bool:
        if self.batch_size is not None and n >= self.batch_size:
            return True
        return self.max_tokens is not None and (n + 1) * max_len > self.max_tokens

    def _cut(self, order: list[int], out: list[list[int]]) -> None:
        """Cuts one length-sorted bucket greedily into batches, appending them to ``out``."""
        lengths, bs, mt = self.lengths, self.batch_size, self.max_tokens
        batch: list[int] = []
        top = 0
        for i in order:
            n = lengths[i]
            if batch:
                grown = max(top, n)
                if (bs is not None and len(batch) >= bs) or (mt is not None and grown * (len(batch) + 1) > mt):
                    out.append(batch)
                    batch, top = [], 0
            batch.append(i)
            top = max(top, n)
        if batch and not (self._drop_last and not self._is_full(len(batch), top)):
            out.append(batch)

    def _bucket_items(self) -> int:
        if self.batch_size is not None:
            per_batch = self.batch_size
        else:
            mean = max(1, round(sum(self.lengths) / len(self.lengths)))
            per_batch = max(1, self.max_tokens // mean)  # type: ignore[operator]
        return per_batch * self.bucket_size_multiplier

    def _build(self) -> None:
        key = self._key()
        if key == self._cache_key:
            return
        lengths = self.lengths
        batches: list[list[int]] = []
        if self.shuffle:
            gen = torch.Generator()
            gen.manual_seed((self.seed * _SEED_MIX + self.epoch) % (1 << 63))
            pool = self._epoch_pool(gen)
            perm = [pool[j] for j in torch.randperm(len(pool), generator=gen).tolist()]
            size = self._bucket_items()
            for start in range(0, len(perm), size):
                self._cut(sorted(perm[start:start + size], key=lengths.__getitem__), batches)
            batches = [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
        else:
            self._cut(sorted(range(len(lengths)), key=lambda i: (lengths[i], i)), batches)

        total, replicas = len(batches), self.num_replicas
        padded = 0
        if total % replicas:
            if self._drop_last:
                batches = batches[: total - total % replicas]
            else:
                padded = replicas - total % replicas
                batches = batches + [batches[k % total] for k in range(padded)]
        self._global, self._num_padded, self._cache_key = batches, padded, key

    def _epoch_pool(self, gen: torch.Generator) -> list[int]:
        """The indices drawn this epoch: each once, or per ``group_weights`` (whole repeats + a random fraction)."""
        if self.group_weights is None:
            return list(range(len(self.lengths)))
        members: dict[int, list[int]] = {}
        for i, g in enumerate(self.groups):  # type: ignore[arg-type]
            members.setdefault(g, []).append(i)
        pool: list[int] = []
        for g in sorted(members):
            idx, w = members[g], self.group_weights[g]
            whole, frac = int(w), w - int(w)
            pool += idx * whole
            extra = round(frac * len(idx))
            if extra:
                pick = torch.randperm(len(idx), generator=gen)[:extra].tolist()
                pool += [idx[j] for j in sorted(pick)]
        if not pool:
            raise ValueError(f"group_weights {self.group_weights} draw no item at all this epoch")
        return sorted(pool)  # index order: weights of 1 give exactly the unweighted epoch

    def global_batches(self) -> list[list[int]]:
        """All ranks' batches for the current epoch, padding included; rank ``r`` gets ``[r::num_replicas]``.

        Returns:
            The batch list (copies of the cached lists).
        """
        self._build()
        return [list(b) for b in self._global]

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, in iteration order.

        Returns:
            Lists of dataset indices.
        """
        self._build()
        return [list(b) for b in self._global[self.rank :: self.num_replicas]]

    @property
    def num_padded_batches(self) -> int:
        """How many batches were repeated this epoch so all ranks get equally many (0 when ``num_replicas == 1``)."""
        self._build()
        return self._num_padded

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        self._build()
        return len(self._global) // self.num_replicas

    # -- diagnostics --------------------------------------------------------------------------------------------
    def padding_fraction(self, batches: Sequence[Sequence[int]] | None = None) -> float:
        """Fraction of padded positions, ``1 - sum(lengths) / sum(max_len_in_batch * n)``.

        Args:
            batches: Batches of indices to measure; defaults to this rank's batches of the current epoch.

        Returns:
            A value in [0, 1); 0.0 when there is nothing to measure.
        """
        if batches is None:
            batches = self.batches()
        lengths = self.lengths
        real = padded = 0
        for batch in batches:
            if not batch:
                continue
            lens = [lengths[i] for i in batch]
            real += sum(lens)
            padded += max(lens) * len(lens)
        return 1.0 - real / padded if padded else 0.0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self.lengths)}, batch_size={self.batch_size}, "
                f"max_tokens={self.max_tokens}, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch}, "
                f"rank={self.rank}/{self.num_replicas})")


def make_batch_sampler_for(
    trainer: Any | None, lengths: Sequence[int], *, check_distributed_sampler: bool = True, **kw: Any
) -> LengthBucketBatchSampler:
    """Builds a `LengthBucketBatchSampler` sharded for the attached Lightning trainer, if any.

    With a trainer, ``num_replicas``/``rank`` default to ``trainer.world_size``/``trainer.global_rank``;
    without one, to the initialised process group (else 1/0). Explicit ``num_replicas``/``rank`` in ``kw`` win.

    Args:
        trainer: The DataModule's ``self.trainer`` (or None when not attached).
        lengths: Length of every item.
        check_distributed_sampler: Raise early when the trainer would try to inject a DistributedSampler into this
            batch sampler (distributed strategy with ``use_distributed_sampler=True`` outside predict), which
            Lightning 2.6 answers with a TypeError when the dataloaders are processed.
        **kw: Further `LengthBucketBatchSampler` keyword arguments.

    Returns:
        The sampler.

    Raises:
        ValueError: On invalid sampler arguments, or the trainer configuration described above.
    """
    if trainer is not None:
        kw.setdefault("num_replicas", int(trainer.world_size))
        kw.setdefault("rank", int(trainer.global_rank))
        if check_distributed_sampler:
            _check_no_sampler_injection(trainer)
    return LengthBucketBatchSampler(lengths=lengths, **kw)


def _check_no_sampler_injection(trainer: Any) -> None:
    connector = getattr(trainer, "_accelerator_connector", None)
    if connector is None:
        return
    if not (getattr(connector, "use_distributed_sampler", False) and getattr(connector, "is_distributed", False)):
        return
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    if str(getattr(fn, "value", fn)) == "predict":
        return  # Lightning only warns and keeps the batch sampler as is
    raise ValueError(
        "LengthBucketBatchSampler shards batches itself: run distributed training with "
        "Trainer(use_distributed_sampler=False) (CLI: --trainer.use_distributed_sampler=false); otherwise "
        "Lightning tries to inject a DistributedSampler into the batch sampler and fails"
    )
