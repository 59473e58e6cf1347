"""The KV block manager (serving/kv_blocks.py) on its own: allocation on the 16-token boundary,
reference counts, prefix sharing, the LRU free queue, poison before reuse, double free, and
``check()`` catching broken bookkeeping. A seeded random walk of operations checks every
invariant after each one (SEED= reruns it; the seed is printed)."""
import os
import random

import numpy as np
import pytest

from serving.kv_blocks import (PAGE_TOKENS, BlockError, BlockManager, DoubleFreeError,
                               InvariantError, blocks_for, prefix_hashes)

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))


def _seed_note():
    print(f"[serving blocks] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest -q "
          f"tests/test_serving_blocks.py)")


def test_allocate_on_16_token_boundary():
    bm = BlockManager(8)
    assert bm.allocate(0, 1)
    assert len(bm.table(0)) == 1 and bm.num_free == 7
    assert bm.allocate(0, 16)
    assert len(bm.table(0)) == 1                       # position 15 is still block 0
    assert bm.allocate(0, 17)
    assert len(bm.table(0)) == 2                       # position 16 opens block 1
    assert bm.allocate(0, 48)
    assert len(bm.table(0)) == 3 and bm.covered(0) == 48
    assert bm.num_free + bm.num_used == bm.total == 8
    bm.check()
    assert [blocks_for(n) for n in (1, 16, 17, 32, 33)] == [1, 1, 2, 2, 3]


def test_allocation_is_all_or_nothing():
    bm = BlockManager(3)
    assert bm.allocate(0, 33)
    assert not bm.allocate(1, 17)                      # needs 2, 0 free
    assert not bm.has(1) and bm.num_free == 0
    assert not bm.allocate(0, 49)
    assert bm.covered(0) == 33 and len(bm.table(0)) == 3
    bm.check()


def test_free_returns_blocks_tail_first_and_double_free_is_named():
    bm = BlockManager(4)
    bm.allocate(7, 40)
    table = bm.table(7)
    bm.free(7)
    assert bm.num_free == 4 and bm.num_used == 0
    assert list(bm._free)[-3:] == list(reversed(table))   # the tail goes back first
    with pytest.raises(DoubleFreeError, match=rf"sequence 7 .*blocks \[{table[0]}, "):
        bm.free(7)
    with pytest.raises(DoubleFreeError, match="sequence 9"):
        bm.free(9)
    bm.check()


def test_prefix_sharing_needs_full_equal_prefix_and_counts_references():
    bm = BlockManager(16)
    a = list(range(40))                                # 2 full blocks + 8
    bm.allocate(0, 40)
    bm.commit(0, a, 40)
    assert [bm.is_cached(b) for b in bm.table(0)] == [True, True, False]
    b = a[:32] + [99, 98]                              # same 32-token prefix
    shared = bm.lookup(b)
    assert shared == list(bm.table(0)[:2])
    assert bm.allocate(1, 34, shared)
    assert bm.table(1)[:2] == bm.table(0)[:2] and bm.table(1)[2] != bm.table(0)[2]
    assert [bm.refcount(x) for x in bm.table(1)] == [2, 2, 1]
    bm.check({0: a, 1: b})
    # a different second block: only the first is shared
    c = a[:16] + [5] * 16 + [1]
    assert bm.lookup(c) == [bm.table(0)[0]]
    # the last token is never covered by a hit (its logits are needed)
    assert bm.lookup(a[:32]) == [bm.table(0)[0]]
    assert bm.lookup(a[:33]) == list(bm.table(0)[:2])
    # check() sees a sharer whose tokens differ from the block's prefix
    with pytest.raises(InvariantError, match="tokens differ"):
        bm.check({0: a, 1: [7] + b[1:]})
    bm.free(0)
    assert [bm.refcount(x) for x in bm.table(1)] == [1, 1, 1]
    bm.check({1: b})


def test_freed_cached_blocks_are_revived_or_evicted_and_poisoned():
    bm = BlockManager(3)
    a = list(range(32)) + [1]
    bm.allocate(0, 33)
    assert bm.pending_poison() == []                   # never used: nothing stale
    bm.commit(0, a, 33)
    full = bm.table(0)[:2]
    bm.free(0)
    # same prefix later: the cached blocks come back without recomputation or poison
    shared = bm.lookup(a)
    assert shared == list(full)
    assert bm.allocate(1, 33, shared)
    assert bm.pending_poison() == [bm.table(1)[2]]     # the partial block held seq 0's rows
    bm.mark_poisoned(bm.pending_poison())
    bm.check({1: a})
    bm.free(1)
    # other content: the LRU front is taken, cached prefixes evicted, every stale block poisoned
    assert bm.allocate(2, 48)
    assert sorted(bm.pending_poison()) == sorted(bm.table(2))
    assert bm.lookup(a) == []                          # evicted
    assert bm.counters["evicted"] == 2
    bm.check({2: [0] * 48})


def test_check_catches_broken_bookkeeping():
    def fresh():
        bm = BlockManager(6)
        bm.allocate(0, 20)
        bm.allocate(1, 5)
        return bm
    bm = fresh()
    bm._ref[bm.table(0)[0]] += 1
    with pytest.raises(InvariantError, match="reference count"):
        bm.check()
    bm = fresh()
    bm._free[bm.table(1)[0]] = None                    # a used block also on the free queue
    with pytest.raises(InvariantError, match="free queue"):
        bm.check()
    bm = fresh()
    bm._tables[1].append(bm._tables[0][0])             # shared without being a cached block
    bm._ref[bm._tables[0][0]] += 1
    bm._slots[1] = 17
    with pytest.raises(InvariantError, match="not a registered full block"):
        bm.check()
    bm = fresh()
    bm._slots[0] = 40                                  # covers 40 positions with 2 blocks
    with pytest.raises(InvariantError, match="16-token boundary"):
        bm.check()
    with pytest.raises(BlockError, match="not a cached full block"):
        fresh().allocate(5, 20, shared=[3])


def test_random_walk_keeps_every_invariant():
    """Random admissions (with prefix lookups), growth, commits, frees and poisons; check()
    after every operation; a shadow model of the reference counts and the sharing."""
    _seed_note()
    rng = np.random.default_rng(SEED)
    for trial in range(20):
        n_blocks = int(rng.integers(2, 24))
        bm = BlockManager(n_blocks, prefix_caching=bool(trial % 4))
        base = rng.integers(0, 4, 200)                  # few symbols: prefixes repeat
        live, computed, next_id = {}, {}, 0
        for _ in range(150):
            op = rng.random()
            if op < 0.3 or not live:
                n = int(rng.integers(1, 80))
                toks = list(base[:n]) if rng.random() < 0.5 else list(rng.integers(0, 4, n))
                shared = bm.lookup(toks)
                assert len(shared) * PAGE_TOKENS < len(toks)
                hashes = prefix_hashes(toks[:-1])
                for j, blk in enumerate(shared):        # a hit is the same prefix
                    assert bm._hash_of[blk] == hashes[j]
                first = len(shared) * PAGE_TOKENS + int(rng.integers(1, len(toks) -
                                                                     len(shared) * 16 + 1))
                free_before = bm.num_free
                if bm.allocate(next_id, first, shared):
                    live[next_id], computed[next_id] = toks, len(shared) * PAGE_TOKENS
                    next_id += 1
                else:
                    assert bm.num_free == free_before and not bm.has(next_id)
            elif op < 0.6:
                s = int(rng.choice(list(live)))
                cov = bm.covered(s)
                computed[s] = cov
                bm.commit(s, live[s], cov)
                grow = min(len(live[s]), cov + int(rng.integers(1, 40)))
                if grow > cov and bm.allocate(s, grow):
                    assert len(bm.table(s)) == blocks_for(grow)
            elif op < 0.85:
                s = int(rng.choice(list(live)))
                bm.free(s)
                del live[s], computed[s]
                with pytest.raises(DoubleFreeError):
                    bm.free(s)
            pend = bm.pending_poison()
            if pend and rng.random() < 0.7:
                bm.mark_poisoned(pend)
            bm.check(live)
            assert bm.num_free + bm.num_used == n_blocks
        for s in list(live):
            bm.free(s)
        bm.check()
        assert bm.num_free == n_blocks
