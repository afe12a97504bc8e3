"""Mid-epoch resume of training DataLoaders: the resumed epoch yields exactly the batches not yet consumed."""

import io

import pytest
import torch

from data.resumable import ResumableDataLoader, SkippableBatchSampler, epoch_batches
from data.samplers import LengthBucketBatchSampler


class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _collate(items):
    return list(items)


@pytest.mark.parametrize("make", ["bucket", "distributed"])
@pytest.mark.parametrize("consumed", [0, 1, 3, 5, 6])
def test_resumed_loader_yields_the_rest_of_the_same_epoch(make, consumed):
    ds = _Items(23)

    def sampler():
        if make == "bucket":
            return LengthBucketBatchSampler(lengths=[(7 * i) % 11 + 1 for i in range(23)], batch_size=4,
                                            shuffle=True, seed=5, num_replicas=1, rank=0)
        return epoch_batches(ds, 4, shuffle=True, seed=5)

    progress = {"now": (2, consumed)}
    full = ResumableDataLoader(ds, batch_sampler=sampler(), collate_fn=_collate, progress=lambda: progress["now"])
    full.batch_sampler.set_epoch(2)
    epoch2 = list(full)
    full.batch_sampler.set_epoch(1)
    assert list(full) != epoch2  # the order depends on the epoch
    state = full.state_dict()
    assert state == {"epoch": 2, "batches_consumed": consumed}

    resumed = ResumableDataLoader(ds, batch_sampler=sampler(), collate_fn=_collate)
    resumed.load_state_dict(state)  # a fresh process: the sampler is still at epoch 0 before this
    assert len(resumed) == len(epoch2)  # Lightning counts the resumed epoch against the full length
    # A checkpoint saved after the epoch's last batch (6 of 6) skips nothing: the next iteration is a new epoch.
    assert list(resumed) == (epoch2[consumed:] if consumed < len(epoch2) else epoch2)
    assert list(resumed) == epoch2  # the skip applies to the resumed epoch only
    covered = sorted(i for b in epoch2 for i in b)
    assert covered == list(range(23))


def test_loader_does_not_draw_from_the_global_rng():
    ds = _Items(10)
    loader = ResumableDataLoader(ds, batch_sampler=epoch_batches(ds, 3, shuffle=True, seed=0), collate_fn=_collate)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(loader)
    assert torch.equal(torch.rand(3), expected)


def test_state_without_trainer_is_empty_and_ignored():
    ds = _Items(5)
    loader = ResumableDataLoader(ds, batch_sampler=epoch_batches(ds, 2, shuffle=False, seed=0), collate_fn=_collate)
    assert loader.state_dict() == {}
    loader.load_state_dict({})
    assert list(loader) == [[0, 1], [2, 3], [4]]


def test_skippable_forwards_set_epoch_to_the_wrapped_sampler():
    inner = LengthBucketBatchSampler(lengths=[1, 2, 3, 4, 5], batch_size=2, shuffle=True, seed=0)
    wrapped = SkippableBatchSampler(inner)
    wrapped.sampler.set_epoch(3)  # what Lightning calls
    assert inner.epoch == 3
    wrapped.set_epoch(4)
    assert inner.epoch == 4


def test_rng_states_round_trip_through_a_weights_only_checkpoint():
    import random

    import numpy as np

    from pipelines.training.callbacks import ExactResume

    cb = ExactResume()
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    buf = io.BytesIO()
    torch.save(cb.state_dict(), buf)
    expected = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    buf.seek(0)
    cb.load_state_dict(torch.load(buf, weights_only=True))

    class _T:
        world_size = 1
        global_rank = 0

    cb.on_train_batch_start(_T(), None, None, 0)
    got = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
