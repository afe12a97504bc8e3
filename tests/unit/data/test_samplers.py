"""LengthBucketBatchSampler: coverage, size limits, padding, DDP sharding and determinism, Lightning hooks."""

import datetime
import json
import random
import socket
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data.samplers import LengthBucketBatchSampler, make_batch_sampler_for


def skewed_lengths(n: int = 2000, seed: int = 0) -> list[int]:
    """Mostly short utterances with a long tail, like speech corpora (in frames)."""
    rng = random.Random(seed)
    return [int(rng.lognormvariate(5.0, 0.8)) + 1 for _ in range(n)]


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


def make(lengths, **kw) -> LengthBucketBatchSampler:
    return LengthBucketBatchSampler(lengths=lengths, **kw)


# -- single replica --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 16},
        {"batch_size": None, "max_tokens": 4000},
        {"batch_size": 8, "max_tokens": 3000},
        {"batch_size": 16, "shuffle": False},
        {"batch_size": 7, "bucket_size_multiplier": 1},
    ],
)
def test_every_index_exactly_once_per_epoch(kw):
    lengths = skewed_lengths(1000)
    s = make(lengths, num_replicas=1, rank=0, **kw)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert sorted(flat(batches)) == list(range(len(lengths)))
        assert s.num_padded_batches == 0


def test_batch_size_and_max_tokens_limits_and_overlong_item():
    lengths = skewed_lengths(1000)
    lengths[17] = 50_000  # alone exceeds max_tokens
    s = make(lengths, batch_size=10, max_tokens=2000, num_replicas=1, rank=0)
    batches = list(s)
    for b in batches:
        assert 1 <= len(b) <= 10
        assert max(lengths[i] for i in b) * len(b) <= 2000 or len(b) == 1
    assert [17] in batches
    assert sorted(flat(batches)) == list(range(len(lengths)))


def test_max_tokens_only_fills_batches():
    lengths = [10] * 100
    s = make(lengths, batch_size=None, max_tokens=95, shuffle=False, num_replicas=1, rank=0)
    assert [len(b) for b in s] == [9] * 11 + [1]


def test_padding_much_smaller_than_random_batching():
    lengths = skewed_lengths(2000)
    s = make(lengths, batch_size=16, num_replicas=1, rank=0)
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1)).tolist()
    random_batches = [perm[i : i + 16] for i in range(0, len(perm), 16)]
    bucketed, rand = s.padding_fraction(), s.padding_fraction(random_batches)
    assert rand > 0.3
    assert bucketed < 0.5 * rand
    # multiplier 1 = sorting within a single batch only: no better than random batching
    s.bucket_size_multiplier = 1  # attributes are read when the batches are built
    assert s.padding_fraction() == pytest.approx(rand, abs=0.1)
    assert s.padding_fraction([]) == 0.0


def test_shuffle_false_is_sorted_and_deterministic():
    lengths = skewed_lengths(500)
    a = make(lengths, batch_size=8, shuffle=False, num_replicas=1, rank=0)
    b = make(lengths, batch_size=8, shuffle=False, num_replicas=1, rank=0, seed=123)
    b.set_epoch(5)
    batches = list(a)
    assert batches == list(b) == list(a)
    order = flat(batches)
    assert order == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    assert Counter(order) == Counter(range(len(lengths)))  # no duplication with one replica
    assert make([5, 1, 4, 2], batch_size=2, shuffle=False, num_replicas=1).batches() == [[1, 3], [2, 0]]


def test_drop_last_drops_incomplete_batches():
    s = make([3] * 10, batch_size=4, shuffle=False, drop_last=True, num_replicas=1, rank=0)
    assert [len(b) for b in s] == [4, 4]
    s3 = [make(skewed_lengths(500), batch_size=16, drop_last=True, num_replicas=3, rank=r) for r in range(3)]
    got = [list(x) for x in s3]
    assert len({len(g) for g in got}) == 1 and s3[0].num_padded_batches == 0
    assert all(len(b) == 16 for g in got for b in g)
    assert len(set(flat(flat(got)))) == len(flat(flat(got)))  # truncated, never padded


# -- simulated DDP ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("replicas", [2, 3])
@pytest.mark.parametrize("kw", [{"batch_size": 16}, {"batch_size": None, "max_tokens": 3000}])
def test_ddp_ranks_cover_everything_with_equal_counts(replicas, kw):
    lengths = skewed_lengths(997)
    for epoch in (0, 1, 2):
        ranks = [make(lengths, num_replicas=replicas, rank=r, seed=7, **kw) for r in range(replicas)]
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        assert len({len(p) for p in per_rank}) == 1
        assert all(len(p) == len(s) for p, s in zip(per_rank, ranks, strict=True))
        counts = Counter(flat(flat(per_rank)))
        assert set(counts) == set(range(len(lengths)))
        # duplicates are exactly the padded batches: the first `num_padded_batches` of the epoch's order
        glob = ranks[0].global_batches()
        pad = ranks[0].num_padded_batches
        assert pad == (-len(glob[: len(glob) - pad])) % replicas < replicas
        assert glob[len(glob) - pad :] == glob[:pad]
        assert sum(c - 1 for c in counts.values()) == sum(len(b) for b in glob[:pad])
        for r, p in enumerate(per_rank):
            assert p == glob[r::replicas]


def test_ddp_padding_happens_and_is_counted():
    lengths = [5] * 50  # batch_size 12: batches of 12, 12, 12, 12, 2 -> 3 replicas need 1 padded batch
    ranks = [make(lengths, batch_size=12, shuffle=False, num_replicas=3, rank=r) for r in range(3)]
    per_rank = [list(s) for s in ranks]
    assert [len(p) for p in per_rank] == [2, 2, 2]
    assert ranks[0].num_padded_batches == 1
    counts = Counter(flat(flat(per_rank)))
    assert set(counts) == set(range(50))
    assert sorted(i for i, c in counts.items() if c == 2) == ranks[0].global_batches()[0]
    # fewer batches than ranks: the single batch is repeated so no rank is left without one
    tiny = [list(make([3, 1], batch_size=4, num_replicas=3, rank=r)) for r in range(3)]
    assert tiny[0] == tiny[1] == tiny[2] and sorted(tiny[0][0]) == [0, 1]


def test_deterministic_per_seed_and_epoch_and_set_epoch_changes_order():
    lengths = skewed_lengths(600)

    def run(seed, epoch, rank=0):
        s = make(lengths, batch_size=16, num_replicas=2, rank=rank, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert run(0, 0) == run(0, 0)
    assert run(0, 3, rank=1) == run(0, 3, rank=1)
    assert run(0, 0) != run(0, 1)
    assert run(0, 0) != run(1, 0)
    assert run(1, 0) != run(0, 1)  # (seed, epoch) pairs do not collide like seed + epoch would
    s = make(lengths, batch_size=16, num_replicas=1, rank=0)
    first = list(s)
    assert list(s) == first  # re-iterating the same epoch gives the same batches
    s.set_epoch(1)
    second = list(s)
    assert second != first and sorted(flat(second)) == sorted(flat(first))


def test_lightning_set_epoch_reaches_batch_sampler_and_no_reinstantiation_hooks():
    s = make(skewed_lengths(100), batch_size=8, num_replicas=1)
    # Lightning's _set_sampler_epoch calls dataloader.batch_sampler.sampler.set_epoch(epoch)
    s.sampler.set_epoch(4)
    assert s.epoch == 4
    assert sorted(s.sampler) == list(range(100)) and len(s.sampler) == 100
    # with both `batch_size` and `drop_last` public, Lightning would re-instantiate it as cls(sampler, ...)
    assert not hasattr(s, "drop_last")
    loader = torch.utils.data.DataLoader(list(range(100)), batch_sampler=s)
    assert sorted(flat(loader)) == list(range(100))


def test_make_batch_sampler_for_reads_trainer():
    lengths = skewed_lengths(100)
    assert make_batch_sampler_for(None, lengths, batch_size=4).num_replicas == 1
    trainer = SimpleNamespace(world_size=3, global_rank=2)
    s = make_batch_sampler_for(trainer, lengths, batch_size=4, seed=3)
    assert (s.num_replicas, s.rank, s.seed) == (3, 2, 3)
    assert make_batch_sampler_for(trainer, lengths, batch_size=4, rank=0).rank == 0
    injecting = SimpleNamespace(
        world_size=2, global_rank=0, state=SimpleNamespace(fn=SimpleNamespace(value="fit")),
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True, is_distributed=True),
    )
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        make_batch_sampler_for(injecting, lengths, batch_size=4)
    injecting.state.fn.value = "predict"  # Lightning only warns for predict and keeps our sampler
    assert make_batch_sampler_for(injecting, lengths, batch_size=4).num_replicas == 2
    injecting.state.fn.value = "fit"
    injecting._accelerator_connector.use_distributed_sampler = False
    assert make_batch_sampler_for(injecting, lengths, batch_size=4).rank == 0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lengths": [1, 2], "batch_size": None, "max_tokens": None}, "batch_size, max_tokens or both"),
        ({"lengths": [1, 2], "num_replicas": 2, "rank": 2}, "rank 2 is out of range for num_replicas=2"),
        ({"lengths": [1, 2], "num_replicas": 2, "rank": -1}, "out of range"),
        ({"lengths": []}, "lengths is empty"),
        ({"lengths": [1, -3]}, r"lengths\[1\] = -3"),
        ({"lengths": [1, 2], "batch_size": 0}, "batch_size must be >= 1"),
        ({"lengths": [1, 2], "max_tokens": 0}, "max_tokens must be >= 1"),
        ({"lengths": [1, 2], "num_replicas": 0, "rank": 0}, "num_replicas must be >= 1"),
        ({"lengths": [1, 2], "bucket_size_multiplier": 0}, "bucket_size_multiplier"),
    ],
)
def test_invalid_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        LengthBucketBatchSampler(**kw)


def test_non_integer_lengths_and_positional_args_rejected():
    with pytest.raises(TypeError, match="integers"):
        LengthBucketBatchSampler(lengths=[1.5, 2.0])
    with pytest.raises(TypeError):
        LengthBucketBatchSampler([1, 2])  # type: ignore[misc]


# -- real 2-process gloo group ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gloo_worker(rank: int, world: int, port: int, out_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        sampler = LengthBucketBatchSampler(lengths=skewed_lengths(301), batch_size=None, max_tokens=2500, seed=5)
        sampler.set_epoch(2)
        mine = {"rank": sampler.rank, "replicas": sampler.num_replicas, "batches": list(sampler),
                "padded": sampler.num_padded_batches}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_real_two_process_gloo_group(tmp_path):
    out = tmp_path / "gathered.json"
    mp.spawn(_gloo_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    gathered = json.loads(out.read_text())
    assert [g["rank"] for g in gathered] == [0, 1] and {g["replicas"] for g in gathered} == {2}
    assert len(gathered[0]["batches"]) == len(gathered[1]["batches"]) > 0
    counts = Counter(flat(gathered[0]["batches"] + gathered[1]["batches"]))
    assert set(counts) == set(range(301))
    # rebuild the global order (rank r took batches r::2): the duplicates are its first `padded` batches
    glob = [gathered[k % 2]["batches"][k // 2] for k in range(2 * len(gathered[0]["batches"]))]
    assert sum(c - 1 for c in counts.values()) == sum(len(b) for b in glob[: gathered[0]["padded"]])
    local = LengthBucketBatchSampler(lengths=skewed_lengths(301), batch_size=None, max_tokens=2500, seed=5,
                                     num_replicas=2, rank=0)
    local.set_epoch(2)
    assert local.global_batches() == glob  # same batches as the ranks built from the process group defaults
