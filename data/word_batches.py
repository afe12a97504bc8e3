"""Training batches for acoustic word embeddings: K labels x M tokens per batch, and same-word partners.

:class:`LabelBatchSampler` draws batches that hold several tokens of each of several labels, so every token of
a batch has a positive (same label) and negatives (other labels) inside it, as triplet and contrastive losses
need. :class:`PartnerBatchSampler` wraps any batch sampler and pairs every index with another token of the same
label (from another speaker where the label has one), as a correspondence autoencoder needs; the dataset then
receives ``(index, partner)`` tuples.

Both are deterministic functions of ``(seed, epoch)``, so :class:`data.resumable.ResumableDataLoader` can skip to
the middle of an epoch, and DDP-aware in the way :class:`data.samplers.LengthBucketBatchSampler` is: every rank
builds the same global batch list and rank ``r`` takes batches ``r::num_replicas`` (the count is cut to a
multiple of ``num_replicas``, so all ranks step equally often). Lightning sets the epoch through
``batch_sampler.sampler.set_epoch``, which the ``sampler`` attribute forwards.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["LabelBatchSampler", "PartnerBatchSampler", "same_label_partners"]

_SEED_MIX = 0x9E3779B97F4A7C15  # as in data.samplers: (seed, epoch) pairs map to distinct generator seeds


def _generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed((seed * _SEED_MIX + epoch * 1_000_003 + salt) % (1 << 63))
    return gen


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    num_replicas = int(num_replicas if num_replicas is not None else dist.get_world_size() if initialised else 1)
    rank = int(rank if rank is not None else dist.get_rank() if initialised else 0)
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
    return num_replicas, rank


class _EpochSetter:
    """``batch_sampler.sampler`` stand-in: Lightning's per-epoch ``set_epoch`` reaches the owner through it."""

    def __init__(self, owner) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        for batch in self._owner:
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self._owner)


class LabelBatchSampler(Sampler[list[int]]):
    """Batches of ``labels_per_batch`` (K) labels x up to ``tokens_per_label`` (M) tokens each.

    Labels with fewer than two tokens cannot give a positive pair and are left out (their tokens are never
    drawn). Each batch draws K distinct labels at random, with probability proportional to their token counts
    (all labels when there are at most K), and takes the next M tokens of each label's own shuffled stream (all of
    a label's tokens when it has fewer than M; a stream is reshuffled when it runs out, never repeating a token
    inside one batch). An epoch holds ``round(tokens / (K * M))`` batches (at least one per rank), so every token
    is drawn about once per epoch (tokens of small labels more often).

    Args:
        labels: Label of every item (any hashable), indexed like the dataset.
        labels_per_batch: K.
        tokens_per_label: M (at least 2).
        seed: Batches are a function of ``(seed, epoch)`` only.
        num_replicas / rank: DDP sharding; default: the initialised process group, else 1 / 0.

    Raises:
        ValueError: M < 2, K < 2, or fewer than two labels with at least two tokens.
    """

    def __init__(self, *, labels: Sequence[Hashable], labels_per_batch: int = 16, tokens_per_label: int = 4,
                 seed: int = 0, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__()
        if tokens_per_label < 2:
            raise ValueError(f"tokens_per_label must be >= 2 (a positive pair per label), got {tokens_per_label}")
        if labels_per_batch < 2:
            raise ValueError(f"labels_per_batch must be >= 2 (negatives need another label), got {labels_per_batch}")
        members: dict[Hashable, list[int]] = {}
        for i, lab in enumerate(labels):
            members.setdefault(lab, []).append(i)
        self.groups = [idx for idx in members.values() if len(idx) >= 2]
        if len(self.groups) < 2:
            raise ValueError(f"need at least two labels with two or more tokens each, got {len(self.groups)} "
                             f"(of {len(members)} labels)")
        self.labels_per_batch = int(labels_per_batch)
        self.tokens_per_label = int(tokens_per_label)
        self.seed = int(seed)
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.epoch = 0
        self.sampler = _EpochSetter(self)
        self._cache: tuple[tuple, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def tokens(self) -> int:
        """Tokens that can be drawn (those of labels with at least two)."""
        return sum(len(g) for g in self.groups)

    def _num_global(self) -> int:
        per_batch = min(self.labels_per_batch, len(self.groups)) * self.tokens_per_label
        n = max(1, round(self.tokens / per_batch))
        return max(self.num_replicas, n - n % self.num_replicas)

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches for the current epoch; rank ``r`` gets ``[r::num_replicas]``."""
        key = (self.epoch, self.seed, self.labels_per_batch, self.tokens_per_label, self.num_replicas)
        if self._cache is not None and self._cache[0] == key:
            return [list(b) for b in self._cache[1]]
        gen = _generator(self.seed, self.epoch)
        k, m = min(self.labels_per_batch, len(self.groups)), self.tokens_per_label
        weights = torch.tensor([float(len(g)) for g in self.groups])
        streams: list[list[int]] = [[] for _ in self.groups]
        pos = [0] * len(self.groups)
        batches = []
        for _ in range(self._num_global()):
            chosen = torch.multinomial(weights, k, replacement=False, generator=gen).tolist()
            batch: list[int] = []
            for g in chosen:
                group, want = self.groups[g], min(m, len(self.groups[g]))
                take = streams[g][pos[g]: pos[g] + want]
                if len(take) < want:  # the stream ran out: a fresh order, this batch's tokens moved to its end
                    fresh = [group[j] for j in torch.randperm(len(group), generator=gen).tolist()]
                    fresh = [i for i in fresh if i not in take] + take
                    need = want - len(take)
                    take = take + fresh[:need]
                    streams[g], pos[g] = fresh, need
                else:
                    pos[g] += want
                batch += take
            batches.append(batch)
        self._cache = (key, batches)
        return [list(b) for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank:: self.num_replicas]

    def __len__(self) -> int:
        return self._num_global() // self.num_replicas

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(labels={len(self.groups)}, tokens={self.tokens}, "
                f"K={self.labels_per_batch}, M={self.tokens_per_label}, seed={self.seed}, epoch={self.epoch}, "
                f"rank={self.rank}/{self.num_replicas})")


def same_label_partners(labels: Sequence[Hashable], speakers: Sequence[Hashable | None] | None, *, seed: int = 0,
                        epoch: int = 0) -> list[int]:
    """A partner for every token: another token of the same label, from another speaker when there is one.

    A token whose label has tokens of other speakers gets one of them (uniformly); otherwise (no speakers, or
    every token of the label is this speaker's or has no speaker) any other token of its label; a label's only
    token is its own partner. Deterministic in ``(seed, epoch)``; a new epoch draws new partners.
    """
    n = len(labels)
    speakers = list(speakers) if speakers is not None else [None] * n
    if len(speakers) != n:
        raise ValueError(f"{len(speakers)} speakers for {n} labels")
    gen = _generator(seed, epoch, salt=0x5EED)
    u = torch.rand(n, generator=gen, dtype=torch.float64).tolist()
    by_label: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    out = list(range(n))
    for members in by_label.values():
        if len(members) == 1:
            continue
        # Tokens with a known speaker, sorted by speaker: each speaker's tokens are one run [start, end).
        known = sorted((i for i in members if speakers[i] is not None), key=lambda i: (str(speakers[i]), i))
        runs: dict[Hashable, tuple[int, int]] = {}
        for p, i in enumerate(known):
            runs[speakers[i]] = (runs.get(speakers[i], (p, p))[0], p + 1)
        for pos, i in enumerate(members):
            start, end = runs.get(speakers[i], (0, 0)) if speakers[i] is not None else (0, 0)
            others = len(known) - (end - start)
            if speakers[i] is not None and others > 0:  # another speaker's token
                k = min(int(u[i] * others), others - 1)
                out[i] = known[k if k < start else k + (end - start)]
            else:  # any other token of the label
                k = min(int(u[i] * (len(members) - 1)), len(members) - 2)
                out[i] = members[k if k < pos else k + 1]
    return out


class PartnerBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields the batches of ``base`` with every index ``i`` replaced by ``(i, partner of i)``.

    Partners come from :func:`same_label_partners` for the base sampler's current epoch (read from its
    ``epoch`` attribute), so they change every epoch and are the same on every rank and after a resume.

    Args:
        base: A batch sampler with ``set_epoch`` / ``epoch`` (e.g. ``LengthBucketBatchSampler``).
        labels / speakers: Per item, indexed like the dataset (``speakers`` None: no speaker information).
        seed: Seed of the partner draw.
    """

    def __init__(self, base, *, labels: Sequence[Hashable], speakers: Sequence[Hashable | None] | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.base = base
        self.labels = list(labels)
        self.speakers = list(speakers) if speakers is not None else None
        self.seed = int(seed)
        forwarder = getattr(base, "sampler", None)
        self.sampler = forwarder if forwarder is not None else _EpochSetter(self)
        self._cache: tuple[int, list[int]] | None = None

    @property
    def epoch(self) -> int:
        return int(getattr(self.base, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def partners(self) -> list[int]:
        """This epoch's partner of every item."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, same_label_partners(self.labels, self.speakers, seed=self.seed,
                                                           epoch=self.epoch))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        partners = self.partners()
        for batch in self.base:
            yield [(i, partners[i]) for i in batch]

    def __len__(self) -> int:
        return len(self.base)
