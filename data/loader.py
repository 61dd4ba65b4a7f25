"""Deterministic, rank-aware, resumable batches of token windows from memory-mapped shards.

Windows: each shard of n tokens holds (n - 1) // seq_len windows of seq_len + 1 tokens starting at
0, seq_len, 2 * seq_len, ... (consecutive windows share one token: the last target of one is the first
input of the next). Windows never cross a shard boundary. All windows of all shards, in the given
shard order, are numbered 0..N-1.

Order: one infinite stream of window ids, epoch after epoch; epoch e is a permutation of 0..N-1 seeded
by (seed, e) when shuffling, or 0..N-1 in order otherwise. A global cursor counts the windows consumed.

Batches: each ``next_batch()`` consumes the next ``micro_batch_size * world_size`` windows of the
stream (a batch may straddle two epochs), and rank r keeps the r-th block of ``micro_batch_size``.
So the ranks read disjoint windows, and the windows consumed per step depend only on the stream and
the global batch size, not on how it is split over ranks: the state (epoch, cursor) saved on W ranks
resumes exactly on W' ranks as long as micro_batch_size * W * grad_accum stays the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.shards import ShardError, prepare_command, read_header, read_shard


class TokenLoader:
    def __init__(self, paths, seq_len: int, micro_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, vocab_size: int | None = None):
        if seq_len < 1 or micro_batch_size < 1:
            raise ValueError(f"TokenLoader: seq_len={seq_len} and micro_batch_size={micro_batch_size} must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"TokenLoader: rank={rank} must lie in [0, world_size={world_size})")
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("TokenLoader: no shard files given (is the split empty? check data.val_fraction)")
        self.seq_len, self.micro_batch_size = int(seq_len), int(micro_batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.vocab_size = vocab_size

        self.shards = []
        for p in self.paths:
            header = read_header(p)
            if vocab_size is not None and header.num_tokens and header.max_token_id >= vocab_size:
                raise ShardError(f"token shard {p} holds token id {header.max_token_id}, outside the model's "
                                 f"vocabulary of {vocab_size}: it was prepared with another tokenizer. "
                                 f"Re-create it with: {prepare_command(p)}")
            self.shards.append(read_shard(p))
        counts = np.array([max(len(s) - 1, 0) // self.seq_len for s in self.shards], dtype=np.int64)
        self._first_window = np.concatenate([[0], np.cumsum(counts)])  # window id of each shard's first
        self.num_windows = int(self._first_window[-1])
        self.num_tokens = int(sum(len(s) for s in self.shards))
        self.global_batch = self.micro_batch_size * self.world_size
        if self.num_windows < self.global_batch:
            raise ValueError(
                f"TokenLoader: {self.num_tokens} tokens in {len(self.paths)} shard(s) (first: {self.paths[0]}) "
                f"give {self.num_windows} windows of seq_len+1={self.seq_len + 1} tokens, fewer than one global "
                f"batch of micro_batch_size*world_size={self.global_batch}: use more data, a shorter seq_len "
                f"or a smaller batch")
        self.epoch, self.cursor = 0, 0  # position in the stream: window `cursor` of epoch `epoch`
        self._order_epoch, self._order = -1, None

    @property
    def batches_per_epoch(self) -> int:
        """Whole global batches in one pass over the windows (e.g. for a full eval pass)."""
        return self.num_windows // self.global_batch

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            else:
                self._order = np.arange(self.num_windows)
            self._order_epoch = epoch
        return self._order

    def _take(self, count: int) -> np.ndarray:
        """The next ``count`` window ids of the stream, advancing the cursor across epochs."""
        out = []
        while count:
            take = min(count, self.num_windows - self.cursor)
            out.append(self._epoch_order(self.epoch)[self.cursor:self.cursor + take])
            self.cursor += take
            count -= take
            if self.cursor == self.num_windows:
                self.epoch, self.cursor = self.epoch + 1, 0
        return np.concatenate(out)

    def _shard_of(self, wid: int) -> int:
        return int(np.searchsorted(self._first_window, wid, side="right")) - 1

    def _window(self, wid: int) -> np.ndarray:
        shard = self._shard_of(wid)
        start = (wid - int(self._first_window[shard])) * self.seq_len
        return self.shards[shard][start:start + self.seq_len + 1]

    def _check_vocabulary(self, batch: np.ndarray, windows: np.ndarray) -> None:
        """Token ids past the vocabulary (a shard corrupted after its header was written) would index
        past the embedding: name the shard instead. A max over the batch: negligible next to a step."""
        if self.vocab_size is None or not batch.size or int(batch.max()) < self.vocab_size:
            return
        row = int(np.argmax(batch.max(axis=1) >= self.vocab_size))
        path = self.paths[self._shard_of(int(windows[row]))]
        raise ShardError(f"token shard {path} holds token id {int(batch[row].max())} in window {int(windows[row])}, "
                         f"outside the model's vocabulary of {self.vocab_size}: the file is corrupted. Delete its "
                         f"folder ({path.parent}) and re-create it with: {prepare_command(path)}")

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): int64 CPU tensors [micro_batch_size, seq_len]; y is x shifted left by one token."""
        ids = self._take(self.global_batch)
        mine = ids[self.rank * self.micro_batch_size:(self.rank + 1) * self.micro_batch_size]
        batch = np.stack([self._window(int(w)) for w in mine]).astype(np.int64)
        self._check_vocabulary(batch, mine)
        batch = torch.from_numpy(batch)
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        """The stream position: plain ints, the same on every rank (the cursor is global)."""
        return {"epoch": self.epoch, "cursor": self.cursor, "seq_len": self.seq_len, "seed": self.seed,
                "shuffle": int(self.shuffle), "num_windows": self.num_windows, "num_tokens": self.num_tokens}

    def load_state_dict(self, sd: dict) -> None:
        for key in ("seq_len", "num_windows", "num_tokens", "seed", "shuffle"):
            if key in sd and int(sd[key]) != int(self.state_dict()[key]):
                raise ValueError(
                    f"TokenLoader.load_state_dict: saved {key}={int(sd[key])} but this loader has "
                    f"{key}={self.state_dict()[key]} (data {self.paths[0].parent}): the checkpoint was "
                    f"written for a different data set, seq_len or seed, so its position means nothing here")
        epoch, cursor = int(sd["epoch"]), int(sd["cursor"])
        if epoch < 0 or not 0 <= cursor < self.num_windows:
            raise ValueError(f"TokenLoader.load_state_dict: position epoch={epoch} cursor={cursor} out of range "
                             f"[0, {self.num_windows})")
        self.epoch, self.cursor = epoch, cursor
