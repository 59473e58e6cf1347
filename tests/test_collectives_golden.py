"""Golden collectives (golden/collectives.py): the chunking rule, the ring schedule as data, and
all_reduce / reduce_scatter / all_gather / broadcast against plain NumPy sums and concatenations
for groups of 1 to 4 chips (and 3, not a power of two), buffers of 1 element to 64 KiB.

Reproducibility: random tests use ``SEED`` (``SEED=<n>`` in the environment; otherwise a fresh
seed per process) plus a fixed per-test offset, and print it. Rerun a failure with
``SEED=<n> .venv/bin/python -m pytest tests/test_collectives_golden.py``.
"""
import os
import secrets

import numpy as np
import pytest

from golden import collectives as col

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))

GROUPS = (1, 2, 3, 4)
#: element counts of int32 buffers: 1 element ... 64 KiB (16384 x 4 bytes), odd sizes, sizes
#: below the group size and not divisible by 3 or 4
SIZES = (1, 2, 3, 5, 7, 127, 1000, 4099, 16383, 16384)


def rng_for(offset):
    print(f"[collectives] SEED={SEED} (+{offset}) (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_collectives_golden.py)")
    return np.random.default_rng(SEED + offset)


def int32_buffers(rng, n, shape):
    return [rng.integers(-2**31, 2**31, shape, dtype=np.int64).astype(np.int32) for _ in range(n)]


def wrapped_sum(buffers):
    """The int32 sum modulo 2^32, with Python integers (independent of NumPy's int32 wrap)."""
    total = sum(int(v) for v in buffers)
    return (total + 2**31) % 2**32 - 2**31


def expected_sum(buffers):
    flat = np.stack([b.reshape(-1) for b in buffers])
    out = np.array([wrapped_sum(flat[:, i]) for i in range(flat.shape[1])], dtype=np.int64)
    return out.astype(np.int32).reshape(buffers[0].shape)


def fast_expected_sum(buffers):
    """Same as expected_sum for big buffers: int64 sum of at most 4 int32 values, then mod 2^32."""
    total = np.sum([b.astype(np.int64) for b in buffers], axis=0)
    return ((total + 2**31) % 2**32 - 2**31).astype(np.int32)


# ---------------------------------------------------------------------------------- chunking rule

@pytest.mark.parametrize("n", range(1, 7))
def test_chunks_cover_the_buffer_once_with_sizes_within_one(n):
    for size in range(0, 40):
        bounds = col.chunks(size, n)
        assert len(bounds) == n
        assert bounds[0][0] == 0 and bounds[-1][1] == size
        for (a0, a1), (b0, _) in zip(bounds, bounds[1:]):
            assert a1 == b0 and a0 <= a1                     # contiguous, in order, maybe empty
        lengths = [b - a for a, b in bounds]
        assert max(lengths) - min(lengths) <= 1
        assert sum(lengths) == size


# ---------------------------------------------------------------------------------- the schedule

def _simulate_ownership(schedule, start):
    """Which chips' contributions each chip's units hold after the schedule, as sets (an
    abstract run of the schedule: a copy replaces the set, an add unions disjoint sets)."""
    held = [[set(s) for s in row] for row in start]
    for step in schedule:
        sent = [(t, [set(held[t.src][u]) for u in range(t.offset, t.offset + t.count)]) for t in step]
        for t, data in sent:
            for u, d in zip(range(t.offset, t.offset + t.count), data):
                if t.reduce:
                    assert not (held[t.dst][u] & d), "a contribution would be added twice"
                    held[t.dst][u] |= d
                else:
                    held[t.dst][u] = d
    return held


@pytest.mark.parametrize("op", col.OPS)
@pytest.mark.parametrize("n", range(1, 7))
def test_schedule_is_a_ring_with_independent_transfers_per_step(op, n):
    for size in (0, 1, n - 1, n, 2 * n + 1, 37):
        for root in range(n) if op == "broadcast" else (0,):
            sched = col.ring_schedule(op, n, size, root=root)
            for s, step in enumerate(sched):
                senders = [t.src for t in step]
                receivers = [t.dst for t in step]
                assert len(set(senders)) == len(senders) and len(set(receivers)) == len(receivers)
                for t in step:
                    assert t.dst == (t.src + 1) % n and t.count > 0
                    assert 0 <= t.offset and t.offset + t.count <= size
                    assert t.reduce == (op == "reduce_scatter" or (op == "all_reduce" and s < n - 1))
                # no transfer reads units another transfer of the step writes: any order works
                for a in step:
                    for b in step:
                        if a is not b and a.src == b.dst:
                            assert (a.offset + a.count <= b.offset or b.offset + b.count <= a.offset)


@pytest.mark.parametrize("n", range(1, 7))
def test_all_reduce_schedule_gives_every_chip_every_contribution_once(n):
    for size in (1, n - 1, n, 3 * n + 2):
        start = [[{c} for _ in range(size)] for c in range(n)]
        held = _simulate_ownership(col.ring_schedule("all_reduce", n, size), start)
        assert all(u == set(range(n)) for chip in held for u in chip)
        # bandwidth-optimal: each chip sends everything but one chunk twice (RS then AG)
        bounds = col.chunks(size, n)
        sent = [0] * n
        for step in col.ring_schedule("all_reduce", n, size):
            for t in step:
                sent[t.src] += t.count
        for i in range(n):
            own_rs = bounds[i][1] - bounds[i][0]
            own_ag = bounds[(i + 1) % n][1] - bounds[(i + 1) % n][0]
            assert sent[i] == 2 * size - own_rs - own_ag
        assert len(col.ring_schedule("all_reduce", n, size)) == 2 * (n - 1)


@pytest.mark.parametrize("n", range(1, 7))
def test_reduce_scatter_schedule_leaves_chunk_c_complete_on_chip_c(n):
    for size in (1, n - 1, n, 3 * n + 2):
        start = [[{c} for _ in range(size)] for c in range(n)]
        held = _simulate_ownership(col.ring_schedule("reduce_scatter", n, size), start)
        for c, (a, b) in enumerate(col.chunks(size, n)):
            assert all(held[c][u] == set(range(n)) for u in range(a, b))


@pytest.mark.parametrize("n", range(1, 7))
def test_broadcast_schedule_carries_each_chunk_once_per_link(n):
    for root in range(n):
        size = 2 * n + 1
        sched = col.ring_schedule("broadcast", n, size, root=root)
        assert len(sched) == (2 * n - 2 if n > 1 else 0)
        moved = {}
        for step in sched:
            for t in step:
                moved[t.src] = moved.get(t.src, 0) + t.count
        last = (root - 1) % n                                # the chain's end forwards nothing
        assert moved == ({} if n == 1 else {c: size for c in range(n) if c != last})


# ---------------------------------------------------------------------------------- collectives

@pytest.mark.parametrize("n", GROUPS)
def test_all_reduce_equals_the_wrapped_sum_for_1_element_to_64_KiB(n):
    rng = rng_for(1 + n)
    for size in SIZES:
        bufs = int32_buffers(rng, n, size)
        before = [b.copy() for b in bufs]
        want = expected_sum(bufs) if size <= 127 else fast_expected_sum(bufs)
        got = col.all_reduce(bufs)
        assert len(got) == n
        for g in got:
            assert g.dtype == np.int32 and g.shape == (size,)
            np.testing.assert_array_equal(g, want)
        for b, o in zip(bufs, before):                      # inputs are not modified
            np.testing.assert_array_equal(b, o)


@pytest.mark.parametrize("n", GROUPS)
def test_all_reduce_wraps_modulo_2_32(n):
    bufs = [np.full(5, 2**31 - 1 - c, np.int32) for c in range(n)]
    if n > 1:                                                # one chip at the other extreme
        bufs[-1] = np.full(5, -2**31, np.int32)
    want = np.array([wrapped_sum([b[0] for b in bufs])] * 5, np.int64).astype(np.int32)
    for g in col.all_reduce(bufs):
        np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("n", GROUPS)
def test_all_reduce_keeps_any_shape(n):
    rng = rng_for(10 + n)
    for shape in [(), (1, 1), (3, 5), (2, 3, 7), (0, 4)]:
        bufs = int32_buffers(rng, n, shape)
        for g in col.all_reduce(bufs):
            assert g.shape == shape
            np.testing.assert_array_equal(g, expected_sum(bufs))


@pytest.mark.parametrize("n", GROUPS)
def test_reduce_scatter_gives_chip_c_chunk_c_of_the_sum(n):
    rng = rng_for(20 + n)
    for size in SIZES:
        bufs = int32_buffers(rng, n, size)
        total = expected_sum(bufs) if size <= 127 else fast_expected_sum(bufs)
        got = col.reduce_scatter(bufs)
        for c, g in enumerate(got):
            # the documented rule, written out here: chunk c is [c*size//n, (c+1)*size//n)
            np.testing.assert_array_equal(g, total[c * size // n:(c + 1) * size // n])
        assert sum(len(g) for g in got) == size


@pytest.mark.parametrize("n", GROUPS)
def test_reduce_scatter_along_an_axis(n):
    rng = rng_for(30 + n)
    for shape, axis in [((4 * n, 3), 0), ((2, 6 * n), 1), ((5, 7), 0), ((3, 2, 5), -1)]:
        bufs = int32_buffers(rng, n, shape)
        total = expected_sum(bufs)
        length = shape[axis]
        for c, g in enumerate(col.reduce_scatter(bufs, axis=axis)):
            idx = np.arange(c * length // n, (c + 1) * length // n)
            np.testing.assert_array_equal(g, np.take(total, idx, axis=axis))


@pytest.mark.parametrize("n", GROUPS)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float32, np.uint16])
def test_all_gather_concatenates_in_chip_order(n, dtype):
    rng = rng_for(40 + n)
    for shape, axis in [((1,), 0), ((7,), 0), ((3, 5), 0), ((3, 5), 1), ((2, 3, 4), -1),
                        ((16384 // n,), 0)]:
        bufs = [rng.integers(-100, 100, shape).astype(dtype) for _ in range(n)]
        want = np.concatenate(bufs, axis=axis)
        for g in col.all_gather(bufs, axis=axis):
            assert g.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("n", GROUPS)
def test_broadcast_copies_the_root_for_every_root(n):
    rng = rng_for(50 + n)
    for size in (1, 3, 1000, 65536):                         # bytes (int8): 1 B ... 64 KiB
        bufs = [rng.integers(-128, 128, size, dtype=np.int8) for _ in range(n)]
        for root in range(n):
            for g in col.broadcast(bufs, root=root):
                np.testing.assert_array_equal(g, bufs[root])
    floats = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(n)]
    for g in col.broadcast(floats, root=n - 1):
        np.testing.assert_array_equal(g, floats[n - 1])


def test_execute_follows_the_schedule_it_is_given():
    # a hand-written two-step schedule: chip 0 -> 1 overwrite, then 1 -> 2 add
    bufs = [np.array([1, 2, 3], np.int32), np.array([10, 20, 30], np.int32),
            np.array([100, 200, 300], np.int32)]
    sched = [[col.Transfer(0, 1, 1, 2, False)], [col.Transfer(1, 2, 0, 2, True)]]
    out = col.execute(sched, bufs)
    np.testing.assert_array_equal(out[1], [10, 2, 3])
    np.testing.assert_array_equal(out[2], [110, 202, 300])
    np.testing.assert_array_equal(out[0], bufs[0])


# ---------------------------------------------------------------------------------- bad input

def _raises(fn, *args, match, **kw):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kw)


@pytest.mark.parametrize("fn", [col.all_reduce, col.reduce_scatter, col.all_gather, col.broadcast])
def test_bad_groups_name_the_offending_value(fn):
    a = np.zeros(4, np.int32)
    _raises(fn, [], match="n = 0 chips")
    _raises(fn, a, match="must be a list .* got ndarray")
    _raises(fn, [a, [0, 0, 0, 0]], match=r"buffers\[1\] is a list, not a NumPy array")
    _raises(fn, [a, np.zeros(5, np.int32)], match=r"buffers\[1\] is int32 \(5,\).*\(4,\)")
    _raises(fn, [a, np.zeros((2, 2), np.int32)], match=r"buffers\[1\] is int32 \(2, 2\)")


@pytest.mark.parametrize("fn", [col.all_reduce, col.reduce_scatter])
@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.int8, np.uint32])
def test_reductions_need_int32_and_convert_nothing(fn, dtype):
    bad = np.zeros(4, dtype)
    _raises(fn, [bad], match=f"buffers\\[0\\] has dtype {np.dtype(dtype)}.*nothing is converted")
    _raises(fn, [np.zeros(4, np.int32), bad], match=f"buffers\\[1\\] has dtype {np.dtype(dtype)}")


def test_gathers_need_matching_dtypes():
    _raises(col.all_gather, [np.zeros(2, np.int8), np.zeros(2, np.int16)],
            match=r"buffers\[1\] is int16 \(2,\), buffers\[0\] is int8")
    _raises(col.broadcast, [np.zeros(2, np.float32), np.zeros(2, np.float64)],
            match=r"buffers\[1\] is float64")


def test_bad_root_axis_op_and_counts():
    a = np.zeros(3, np.int8)
    for root in (-1, 2, 2.0, True, None):
        _raises(col.broadcast, [a, a], root=root, match=f"root = {root!r} is not a chip")
    _raises(col.all_gather, [a, a], axis=1, match="axis = 1 is out of range")
    _raises(col.all_gather, [np.zeros((), np.int8)], match="0-dimensional")
    _raises(col.reduce_scatter, [np.zeros(3, np.int32)], axis=-2, match="axis = -2")
    _raises(col.ring_schedule, "all_to_all", 2, 4, match="'all_to_all' is not a collective")
    _raises(col.ring_schedule, "all_reduce", 0, 4, match="n = 0 must be an integer >= 1")
    _raises(col.ring_schedule, "all_reduce", 2, -1, match="size = -1")
    _raises(col.ring_schedule, "broadcast", 3, 4, root=3, match="root = 3")
    _raises(col.chunks, 4, 2.5, match="n = 2.5")
