"""TokenLoader: windows, determinism, rank disjointness, world-size independence, exact resume."""

import numpy as np
import pytest
import torch

from data.loader import TokenLoader
from data.shards import ShardError, write_shard

SEQ = 8


@pytest.fixture
def shards(tmp_path):
    """Two shards of distinct, increasing token ids, so a window is identified by its first token.
    Shard 0: 8*7+1 tokens -> 7 windows; shard 1: 8*5+4 tokens -> 5 windows (3 tokens left unused)."""
    a = tmp_path / "train_000000.bin"
    b = tmp_path / "train_000001.bin"
    write_shard(a, np.arange(0, SEQ * 7 + 1))
    write_shard(b, np.arange(1000, 1000 + SEQ * 5 + 4))
    return [a, b]


def window_ids(x):
    return x[:, 0].tolist()


def test_batch_shapes_and_shift(shards):
    loader = TokenLoader(shards, seq_len=SEQ, micro_batch_size=3, seed=1)
    assert loader.num_windows == 12
    for _ in range(5):
        x, y = loader.next_batch()
        assert x.shape == y.shape == (3, SEQ) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        # tokens are consecutive ids inside one shard: no window crosses a shard boundary
        assert torch.equal(y - x, torch.ones_like(x))


def test_sequential_order_without_shuffle(shards):
    loader = TokenLoader(shards, seq_len=SEQ, micro_batch_size=4, shuffle=False)
    starts = [0, 8, 16, 24, 32, 40, 48, 1000, 1008, 1016, 1024, 1032]
    assert window_ids(loader.next_batch()[0]) == starts[:4]
    assert window_ids(loader.next_batch()[0]) == starts[4:8]
    assert window_ids(loader.next_batch()[0]) == starts[8:]
    assert window_ids(loader.next_batch()[0]) == starts[:4]  # epoch 2
    assert loader.batches_per_epoch == 3


def test_each_epoch_is_a_permutation_and_seed_determines_it(shards):
    def first_epochs(seed):
        loader = TokenLoader(shards, seq_len=SEQ, micro_batch_size=4, seed=seed)
        return [window_ids(loader.next_batch()[0]) for _ in range(6)]

    a = first_epochs(3)
    assert a == first_epochs(3)
    assert a != first_epochs(4)
    epoch0, epoch1 = sum(a[:3], []), sum(a[3:], [])
    assert sorted(epoch0) == sorted(epoch1) == [0, 8, 16, 24, 32, 40, 48, 1000, 1008, 1016, 1024, 1032]
    assert epoch0 != epoch1  # a new permutation each epoch


def test_ranks_disjoint_and_global_sequence_independent_of_world_size(shards):
    """W=1 with micro-batch 4 and W=2 with micro-batch 2 consume the same global batches; the ranks
    of W=2 read disjoint halves. 7 steps of 4 = two epochs of 12 windows and a bit."""
    one = TokenLoader(shards, seq_len=SEQ, micro_batch_size=4, seed=7)
    two = [TokenLoader(shards, seq_len=SEQ, micro_batch_size=2, rank=r, world_size=2, seed=7) for r in range(2)]
    for _ in range(7):
        r0, r1 = (window_ids(l.next_batch()[0]) for l in two)
        assert not set(r0) & set(r1)
        assert r0 + r1 == window_ids(one.next_batch()[0])
    assert one.state_dict() == two[0].state_dict() == two[1].state_dict()


def test_world_size_independence_across_epoch_straddle(shards):
    one = TokenLoader(shards, seq_len=SEQ, micro_batch_size=5, seed=2)
    five = [TokenLoader(shards, seq_len=SEQ, micro_batch_size=1, rank=r, world_size=5, seed=2) for r in range(5)]
    for _ in range(6):  # 30 windows: batches straddle the epoch ends at 12 and 24
        assert sum((window_ids(l.next_batch()[0]) for l in five), []) == window_ids(one.next_batch()[0])


def test_exact_resume_mid_epoch(shards):
    ref = TokenLoader(shards, seq_len=SEQ, micro_batch_size=2, seed=5)
    for _ in range(4):
        ref.next_batch()
    state = ref.state_dict()
    assert all(isinstance(v, int) for v in state.values())
    expected = [ref.next_batch() for _ in range(10)]

    resumed = TokenLoader(shards, seq_len=SEQ, micro_batch_size=2, seed=5)
    resumed.load_state_dict(state)
    for x_ref, y_ref in expected:
        x, y = resumed.next_batch()
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_resume_on_another_world_size(shards):
    ref = TokenLoader(shards, seq_len=SEQ, micro_batch_size=4, seed=9)
    for _ in range(2):
        ref.next_batch()
    state = ref.state_dict()
    ranks = [TokenLoader(shards, seq_len=SEQ, micro_batch_size=2, rank=r, world_size=2, seed=9) for r in range(2)]
    for l in ranks:
        l.load_state_dict(state)
    for _ in range(5):
        assert sum((window_ids(l.next_batch()[0]) for l in ranks), []) == window_ids(ref.next_batch()[0])


@pytest.mark.parametrize("kwargs, key", [({"seq_len": 4}, "seq_len"), ({"seed": 1}, "seed")])
def test_load_state_refuses_other_setup(shards, kwargs, key):
    state = TokenLoader(shards, seq_len=SEQ, micro_batch_size=2).state_dict()
    other = TokenLoader(shards, **{"seq_len": SEQ, "micro_batch_size": 2, **kwargs})
    with pytest.raises(ValueError, match=f"saved {key}="):
        other.load_state_dict(state)


def test_load_state_refuses_other_dataset(shards):
    state = TokenLoader(shards, seq_len=SEQ, micro_batch_size=2).state_dict()
    with pytest.raises(ValueError, match="num_windows"):
        TokenLoader(shards[:1], seq_len=SEQ, micro_batch_size=2).load_state_dict(state)


def test_vocab_check_names_shard(tmp_path):
    path = tmp_path / "train_000000.bin"
    write_shard(path, [1, 2, 50257, 3] * 10)
    TokenLoader([path], seq_len=4, micro_batch_size=1, vocab_size=50258)
    with pytest.raises(ShardError, match=f"{path}.*50257"):
        TokenLoader([path], seq_len=4, micro_batch_size=1, vocab_size=50257)


def test_too_little_data(shards):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TokenLoader(shards, seq_len=SEQ, micro_batch_size=7, world_size=2)
    with pytest.raises(ValueError, match="no shard files"):
        TokenLoader([], seq_len=SEQ, micro_batch_size=1)


def test_corrupt_shard_surfaces(shards):
    shards[1].write_bytes(shards[1].read_bytes()[:-2])
    with pytest.raises(ShardError, match="truncated"):
        TokenLoader(shards, seq_len=SEQ, micro_batch_size=1)
