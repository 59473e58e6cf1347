"""Fast tests of the golden models (golden/ops.py) against slow, obviously-correct Python-int
references written here from docs/numerics.md and the DmaCmd docstring. No simulator.

Reproducibility (Hypothesis seeding)
------------------------------------
Every property test is decorated with ``hypothesis.seed(SEED)`` and runs with ``database=None``, so
its examples are a pure function of the seed:

* ``SEED=<n>`` in the environment (as ``make test SEED=<n>`` exports it) fixes the seed;
* otherwise a fresh random seed is drawn once per process (like ``cocotb_tests/simbuild.test_seed``).

An autouse fixture prints ``[golden] Hypothesis SEED=<n>`` for every test; pytest shows it under
"Captured stdout setup" whenever a test fails (and always with ``-s``). To reproduce a failure:
``SEED=<n> .venv/bin/python -m pytest tests/test_golden_ops.py``. Under pytest-xdist each worker
draws its own seed when ``SEED`` is unset; the seed printed with a failure is the one that test used.
"""
import os
import random
import time

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden import ops
from golden.ops import F32_EXACT_K, _gemm_f32
from golden.ops import (BadShiftError, add_sat, bias_add, dma_load, dma_store, gemm, max_reduce,
                        relu_q, requantize, vector_epilogue)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _seed_from_env():
    env = os.environ.get("SEED", "")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


SEED = _seed_from_env()


@pytest.fixture(autouse=True)
def _print_seed():
    print(f"[golden] Hypothesis SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_golden_ops.py)")


def prop(max_examples=100):
    """Seeded, database-free, deadline-free Hypothesis settings for one property test."""
    def deco(f):
        f = settings(max_examples=max_examples, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])(f)
        return hypothesis.seed(SEED)(f)
    return deco


# --------------------------------------------------------------------------------------------------
# Python-int references (straight from docs/numerics.md, no NumPy arithmetic)
# --------------------------------------------------------------------------------------------------

def wrap32(v):
    return (v + 2**31) % 2**32 - 2**31


def clamp8(v):
    return max(-128, min(127, v))


def ref_gemm(a, b, c=None):
    m, k, n = len(a), len(b), len(b[0])
    return [[wrap32((c[i][j] if c is not None else 0) + sum(a[i][t] * b[t][j] for t in range(k)))
             for j in range(n)] for i in range(m)]


def ref_round_shift(p, s):
    return p if s == 0 else (p + 2**(s - 1)) // 2**s        # big ints: no overflow, floor division


def ref_requant(x, m, s, zp):
    return clamp8(ref_round_shift(x * m, s) + zp)


def ref_epilogue(acc, *, bias, mult, shift, zp, relu, residual, maxred):
    out = []
    for r, row in enumerate(acc):
        orow = []
        for c, v in enumerate(row):
            x = wrap32(v + bias[c]) if bias is not None else v
            y = ref_requant(x, mult[c], shift[c], zp)
            if relu:
                y = max(y, zp)
            if residual is not None:
                y = clamp8(y + residual[r][c])
            orow.append(y)
        out.append(orow)
    if maxred:
        out = [[max(col) for col in zip(*out)]]
    return out


def ref_dma_load(host, *, host_addr, host_row_stride, host_plane_stride, row_bytes, col_offset,
                 rows, planes, local_row_bytes):
    out = []
    for p in range(planes):
        for r in range(rows):
            a = host_addr + p * host_plane_stride + r * host_row_stride
            out.append(list(bytes(col_offset) + bytes(host[a:a + row_bytes])
                            + bytes(local_row_bytes - col_offset - row_bytes)))
    return out


def ref_dma_store(host, local, *, host_addr, host_row_stride, host_plane_stride, row_bytes,
                  col_offset, rows, planes):
    h = bytearray(host)
    for p in range(planes):
        for r in range(rows):
            a = host_addr + p * host_plane_stride + r * host_row_stride
            h[a:a + row_bytes] = bytes(local[p * rows + r][col_offset:col_offset + row_bytes])
    return h


# --------------------------------------------------------------------------------------------------
# Strategies, biased towards the edges
# --------------------------------------------------------------------------------------------------

EDGES32 = [INT32_MIN, INT32_MIN + 1, -2**30, -65536, -257, -256, -129, -128, -2, -1, 0, 1, 2, 127,
           128, 255, 256, 65535, 2**30, INT32_MAX - 1, INT32_MAX]
EDGES8 = [-128, -127, -64, -1, 0, 1, 63, 126, 127]
SHIFT_EDGES = [0, 1, 2, 31, 32, 61, 62, 63]
ZP_EDGES = [-128, -127, -1, 0, 1, 126, 127]

i32 = st.one_of(st.sampled_from(EDGES32), st.integers(INT32_MIN, INT32_MAX))
i8 = st.one_of(st.sampled_from(EDGES8), st.integers(-128, 127))
shifts = st.one_of(st.sampled_from(SHIFT_EDGES), st.integers(0, 63))
zps = st.one_of(st.sampled_from(ZP_EDGES), st.integers(-128, 127))
dims = st.integers(1, 6)


def arr32(shape):
    return hnp.arrays(np.int32, shape, elements=i32)


def arr8(shape):
    return hnp.arrays(np.int8, shape, elements=i8)


# --------------------------------------------------------------------------------------------------
# GEMM
# --------------------------------------------------------------------------------------------------

@prop()
@given(st.data(), dims, st.integers(1, 40), dims, st.booleans())
def test_gemm_matches_python_ints(data, m, k, n, with_c):
    a = data.draw(arr8((m, k)), "a")
    b = data.draw(arr8((k, n)), "b")
    c = data.draw(arr32((m, n)), "c_init") if with_c else None
    got = gemm(a, b, c)
    assert got.dtype == np.int32 and got.shape == (m, n)
    assert got.tolist() == ref_gemm(a.tolist(), b.tolist(), None if c is None else c.tolist())


def test_gemm_k131071_all_minus128_is_exact():
    k = 131071                                  # 128*128*K < 2^31: largest K that cannot wrap
    a = np.full((2, k), -128, np.int8)
    a[1] = 127
    b = np.full((k, 3), -128, np.int8)
    got = gemm(a, b)
    assert got[0].tolist() == [16384 * k] * 3 == [2147467264] * 3
    assert got[1].tolist() == [-127 * 128 * k] * 3


@pytest.mark.parametrize("k", [131072, 131073, 3 * 131072 + 5])
def test_gemm_wraps_mod_2_32_at_large_k(k):
    a = np.full((1, k), -128, np.int8)
    b = np.full((k, 1), -128, np.int8)
    assert gemm(a, b)[0, 0] == wrap32(16384 * k)
    if k == 131072:
        assert gemm(a, b)[0, 0] == INT32_MIN         # exactly 2^31 wraps to -2^31


def test_gemm_large_k_random_against_python_ints():
    rng = np.random.default_rng(SEED)
    k = 200_003
    a = rng.integers(-128, 128, (2, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, 2), dtype=np.int8)
    a[:, :150_000] = -128                            # push the sum past 2^31 so it wraps
    b[:150_000, :] = -128
    c = np.array([[INT32_MAX, INT32_MIN], [-1, 12345]], np.int32)
    al, bl = a.tolist(), b.T.tolist()
    want = [[wrap32(int(c[i, j]) + sum(x * y for x, y in zip(al[i], bl[j]))) for j in range(2)]
            for i in range(2)]
    assert gemm(a, b, c).tolist() == want


def test_gemm_c_init_wraps():
    a = np.ones((1, 1), np.int8)
    b = np.ones((1, 1), np.int8)
    assert gemm(a, b, np.array([[INT32_MAX]], np.int32))[0, 0] == INT32_MIN
    assert gemm(-a, b, np.array([[INT32_MIN]], np.int32))[0, 0] == INT32_MAX


def test_gemm_256_is_fast_and_matches_int64():
    rng = np.random.default_rng(SEED)
    a = rng.integers(-128, 128, (256, 256), dtype=np.int8)
    b = rng.integers(-128, 128, (256, 256), dtype=np.int8)
    c = rng.integers(INT32_MIN, INT32_MAX, (256, 256), dtype=np.int32, endpoint=True)
    gemm(a, b, c)                                    # warm-up (BLAS threads, page faults)
    t0 = time.perf_counter()
    got = gemm(a, b, c)
    dt = time.perf_counter() - t0
    want = (a.astype(np.int64) @ b.astype(np.int64) + c + 2**31) % 2**32 - 2**31
    assert np.array_equal(got, want)
    assert dt < 0.5, f"256x256x256 gemm took {dt * 1e3:.1f} ms"


@pytest.mark.parametrize("k", [1, 8, 64, 1000, F32_EXACT_K])
def test_gemm_f32_is_exact_up_to_its_k(k):
    """The engines' float32 product (``_gemm_f32``, K <= F32_EXACT_K) equals the int64 one:
    random operands and the largest sums (-128 * -128 * K = 2^24 at K = 1024, and -2^24 + ...)."""
    rng = np.random.default_rng(k)
    cases = [(rng.integers(-128, 128, (7, k)), rng.integers(-128, 128, (k, 24))),
             (np.full((2, k), -128), np.full((k, 9), -128)),
             (np.full((2, k), -128), np.full((k, 9), 127)),
             (np.full((2, k), 127), np.full((k, 9), 127))]
    for a, b in cases:
        a, b = a.astype(np.int8), b.astype(np.int8)
        want = a.astype(np.int64) @ b.astype(np.int64)
        for serial in (False, True):
            got = _gemm_f32(a.astype(np.float32), b.astype(np.float32), serial=serial)
            assert got.dtype == np.int32 and np.array_equal(got, want)
        assert np.array_equal(ops._gemm(a, b), want)


def test_gemm_validation():
    a = np.zeros((2, 3), np.int8)
    b = np.zeros((3, 4), np.int8)
    with pytest.raises(TypeError, match="a must have dtype int8, got int16"):
        gemm(a.astype(np.int16), b)
    with pytest.raises(TypeError, match="b must be a numpy.ndarray"):
        gemm(a, b.tolist())
    with pytest.raises(ValueError, match="K = 3 columns, b has 2 rows"):
        gemm(a, b[:2])
    with pytest.raises(ValueError, match="b must be 2-D"):
        gemm(a, b[0])
    with pytest.raises(ValueError, match="a must not be empty"):
        gemm(np.zeros((0, 3), np.int8), b)
    with pytest.raises(ValueError, match=r"c_init must have shape \(2, 4\)"):
        gemm(a, b, np.zeros((4, 2), np.int32))
    with pytest.raises(TypeError, match="c_init must have dtype int32"):
        gemm(a, b, np.zeros((2, 4), np.int64))


# --------------------------------------------------------------------------------------------------
# Bias, requantize, relu, residual add, max-reduce
# --------------------------------------------------------------------------------------------------

@prop()
@given(st.data(), dims, dims)
def test_bias_add_wraps(data, r, c):
    acc = data.draw(arr32((r, c)), "acc")
    bias = data.draw(arr32((c,)), "bias")
    got = bias_add(acc, bias)
    assert got.dtype == np.int32
    assert got.tolist() == [[wrap32(v + bias.tolist()[j]) for j, v in enumerate(row)]
                            for row in acc.tolist()]
    assert np.array_equal(bias_add(acc, bias[None, :]), got)   # a (1, C) row works too


def test_bias_add_edges():
    acc = np.array([[INT32_MAX, INT32_MIN, -1]], np.int32)
    bias = np.array([1, -1, INT32_MIN], np.int32)
    assert bias_add(acc, bias).tolist() == [[INT32_MIN, INT32_MAX, INT32_MAX]]


@prop(max_examples=200)
@given(st.integers(-(2**62), 2**62), shifts)
def test_round_shift_equals_big_int_formula(p, s):
    """The overflow-free (p >> s) + ((p >> (s-1)) & 1) equals floor((p + 2^(s-1)) / 2^s)."""
    got = ops._round_shift(np.array([p], np.int64), np.array([s], np.int64))
    assert int(got[0]) == ref_round_shift(p, s)


def test_round_shift_exhaustive_edges_all_shifts():
    """Every shift 0..63 against every edge p: +-2^62 (the int64-overflow case), +-2^(s-1) (exact
    halves), multiples of 2^s and their neighbours, small values."""
    ps = {0, 1, -1, 2, -2, 3, -3, 2**62, -(2**62), 2**62 - 1, -(2**62) + 1, 2**61, -(2**61),
          (2**31 - 1)**2, -(2**31) * (2**31 - 1)}
    for s in range(64):
        for base in (2**s, 2**(s - 1) if s else 1, 3 * 2**(s - 1) if s else 3):
            for d in (-1, 0, 1):
                for sign in (1, -1):
                    ps.add(sign * base + d)
    ps = sorted(p for p in ps if abs(p) <= 2**62)
    p_arr = np.array(ps, np.int64)[:, None]
    s_arr = np.arange(64, dtype=np.int64)[None, :]
    got = ops._round_shift(p_arr, s_arr).tolist()
    for i, p in enumerate(ps):
        for s in range(64):
            assert got[i][s] == ref_round_shift(p, s), (p, s)
    # and the naive int64 formula really would overflow here:
    with np.errstate(over="ignore"):
        assert np.int64(2**62) + np.int64(2**62) < 0


@prop(max_examples=200)
@given(st.data(), dims, dims)
def test_requantize_matches_python_ints(data, r, c):
    x = data.draw(arr32((r, c)), "x")
    mult = data.draw(hnp.arrays(np.int32, (c,), elements=st.one_of(
        st.sampled_from([INT32_MIN, INT32_MAX, 0, 1, -1, 2**30]), i32)), "mult")
    shift = data.draw(hnp.arrays(np.int32, (c,), elements=shifts), "shift")
    zp = data.draw(zps, "zp")
    got = requantize(x, mult, shift, zp)
    assert got.dtype == np.int8 and got.shape == (r, c)
    ml, sl = mult.tolist(), shift.tolist()
    assert got.tolist() == [[ref_requant(v, ml[j], sl[j], zp) for j, v in enumerate(row)]
                            for row in x.tolist()]


def test_requantize_edge_cross_product():
    """All edge x × edge mult × every shift 0..63 × zero points -128/0/127, vs big ints."""
    e = np.array(EDGES32, np.int32)
    mult = np.tile(e, 64)
    shift = np.repeat(np.arange(64, dtype=np.int32), len(e))
    x = np.repeat(e[:, None], mult.size, axis=1)
    ml, sl = mult.tolist(), shift.tolist()
    for zp in (-128, 0, 127):
        got = requantize(x, mult, shift, zp).tolist()
        for i, xv in enumerate(EDGES32):
            assert got[i] == [ref_requant(xv, m, s, zp) for m, s in zip(ml, sl)], (xv, zp)


@pytest.mark.parametrize("x, m, s, zp, want", [
    (INT32_MIN, INT32_MIN, 63, 0, 1),        # p = 2^62: (2^62 + 2^62) / 2^63 = 1 exactly
    (INT32_MIN, INT32_MIN, 62, 0, 1),        # p/2^s = 1, +0.5 floors to 1
    (INT32_MIN, INT32_MIN, 63, -128, -127),
    (INT32_MIN, INT32_MAX, 63, 0, 0),        # p = -2^62 + 2^31: -0.5 + tiny rounds to 0
    (INT32_MIN, INT32_MAX, 62, 0, -1),       # p/2^62 = -1 + 2^-31: floor(-0.5 + 2^-31) = -1
    (INT32_MIN, INT32_MIN, 0, 0, 127),       # shift 0: r = p, saturates high
    (INT32_MIN, INT32_MAX, 0, 127, -128),    # saturates low even with zp 127
    (INT32_MAX, INT32_MAX, 0, -128, 127),
    (1, 1, 1, 0, 1),                         # +0.5 -> 1 (half up)
    (-1, 1, 1, 0, 0),                        # -0.5 -> 0 (half up, towards +inf)
    (-3, 1, 1, 0, -1),                       # -1.5 -> -1
    (3, 1, 1, 0, 2),                         # 1.5 -> 2
    (-5, 1, 2, 0, -1),                       # -1.25 -> -1
    (-6, 1, 2, 0, -1),                       # -1.5 -> -1
    (-7, 1, 2, 0, -2),                       # -1.75 -> -2
    (2**31 - 1, 1, 31, 0, 1),                # (2^31 - 1) / 2^31 -> 1
    (INT32_MIN, 1, 31, 0, -1),
    (INT32_MIN, -1, 31, 0, 1),
    (0, INT32_MIN, 5, -128, -128),           # zero-point only
    (0, INT32_MAX, 5, 127, 127),
    (100, 1, 0, -100, 0),
    (-200, 1, 0, 100, -100),
    (300, 1, 1, -30, 120),
])
def test_requantize_corners(x, m, s, zp, want):
    assert ref_requant(x, m, s, zp) == want                  # the hand value agrees with the spec
    got = requantize(np.array([[x]], np.int32), np.array([m], np.int32), np.array([s]), zp)
    assert got.tolist() == [[want]]


def test_requantize_scalar_params_broadcast():
    x = np.array([[10, -10, 7], [1, 2, 3]], np.int32)
    got = requantize(x, 3, 1, -2)
    assert got.tolist() == [[ref_requant(v, 3, 1, -2) for v in row] for row in x.tolist()]
    mult = np.array([[3, 3, 3]], np.int32)                    # a (1, C) row
    assert np.array_equal(requantize(x, mult, np.array([[1, 1, 1]], np.int32), -2), got)


@pytest.mark.parametrize("bad, chan", [(64, 2), (-1, 0), (INT32_MAX, 1), (INT32_MIN, 2)])
def test_bad_shift_names_value_and_channel(bad, chan):
    shift = np.array([5, 5, 5], np.int32)
    shift[chan] = bad
    x = np.zeros((2, 3), np.int32)
    mult = np.ones(3, np.int32)
    with pytest.raises(BadShiftError, match=rf"shift\[{chan}\] = {bad} is outside 0\.\.63") as ei:
        requantize(x, mult, shift, 0)
    assert isinstance(ei.value, ValueError) and ei.value.channel == chan and ei.value.value == bad
    with pytest.raises(BadShiftError, match=rf"shift\[{chan}\] = {bad}"):
        vector_epilogue(x, mult=mult, shift=shift, zero_point=0, relu=True)


def test_bad_shift_first_channel_reported_and_scalar():
    with pytest.raises(BadShiftError, match=r"shift\[1\] = 70"):
        requantize(np.zeros((1, 4), np.int32), 1, np.array([0, 70, 63, 99]), 0)
    with pytest.raises(BadShiftError, match=r"^shift = 64 is outside"):
        requantize(np.zeros((1, 4), np.int32), 1, 64, 0)


def test_requantize_validation():
    x = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="zero_point = 128 is outside -128..127"):
        requantize(x, 1, 0, 128)
    with pytest.raises(ValueError, match="zero_point = -129"):
        requantize(x, 1, 0, -129)
    with pytest.raises(TypeError, match="zero_point must be an integer"):
        requantize(x, 1, 0, 1.0)
    with pytest.raises(TypeError, match="zero_point must be an integer"):
        requantize(x, 1, 0, True)
    with pytest.raises(TypeError, match="mult must have dtype int32, got int64"):
        requantize(x, np.ones(3, np.int64), 0, 0)
    with pytest.raises(ValueError, match=r"mult must have shape \(3,\) or \(1, 3\)"):
        requantize(x, np.ones(4, np.int32), 0, 0)
    with pytest.raises(ValueError, match="mult = 2147483648 is outside"):
        requantize(x, 2**31, 0, 0)
    with pytest.raises(TypeError, match="shift must have an integer dtype, got float64"):
        requantize(x, 1, np.zeros(3), 0)
    with pytest.raises(TypeError, match="x must have dtype int32"):
        requantize(x.astype(np.int64), 1, 0, 0)


@prop()
@given(st.data(), dims, dims, zps)
def test_relu_q(data, r, c, zp):
    y = data.draw(arr8((r, c)), "y")
    got = relu_q(y, zp)
    assert got.dtype == np.int8
    assert got.tolist() == [[max(v, zp) for v in row] for row in y.tolist()]


@pytest.mark.parametrize("zp", [-128, -5, 0, 127])
def test_relu_at_zero_point(zp):
    y = np.array([[zp, max(zp - 1, -128), min(zp + 1, 127), -128, 127]], np.int8)
    assert relu_q(y, zp).tolist() == [[zp, zp, min(zp + 1, 127), zp, 127]]


@prop()
@given(st.data(), dims, dims)
def test_add_sat(data, r, c):
    a = data.draw(arr8((r, c)), "a")
    b = data.draw(arr8((r, c)), "b")
    got = add_sat(a, b)
    assert got.dtype == np.int8
    assert got.tolist() == [[clamp8(x + y) for x, y in zip(ra, rb)]
                            for ra, rb in zip(a.tolist(), b.tolist())]


def test_add_sat_both_ends():
    a = np.array([127, -128, 127, -128, 100, -100, 0], np.int8)
    b = np.array([127, -128, -128, 127, 28, -29, -128], np.int8)
    assert add_sat(a, b).tolist() == [127, -128, -1, -1, 127, -128, -128]
    with pytest.raises(ValueError, match="same shape"):
        add_sat(a, b[:3])


@prop()
@given(st.data(), st.integers(1, 8), dims)
def test_max_reduce(data, r, c):
    y = data.draw(arr8((r, c)), "y")
    got = max_reduce(y)
    assert got.dtype == np.int8 and got.shape == (1, c)
    assert got.tolist() == [[max(col) for col in zip(*y.tolist())]]


def test_max_reduce_one_row_and_validation():
    y = np.array([[-128, 0, 127, -1]], np.int8)
    got = max_reduce(y)
    assert got.shape == (1, 4) and got.tolist() == y.tolist()
    with pytest.raises(ValueError, match="y must not be empty"):
        max_reduce(np.zeros((0, 4), np.int8))
    with pytest.raises(ValueError, match="y must be 2-D"):
        max_reduce(y[0])


# --------------------------------------------------------------------------------------------------
# The whole epilogue
# --------------------------------------------------------------------------------------------------

@prop(max_examples=200)
@given(st.data(), st.integers(1, 5), dims, st.booleans(), st.booleans(), st.booleans(),
       st.booleans())
def test_vector_epilogue_matches_python_ints(data, r, c, use_bias, relu, use_res, maxred):
    acc = data.draw(arr32((r, c)), "acc")
    bias = data.draw(arr32((c,)), "bias") if use_bias else None
    mult = data.draw(arr32((c,)), "mult")
    shift = data.draw(hnp.arrays(np.int32, (c,), elements=shifts), "shift")
    zp = data.draw(zps, "zp")
    res = data.draw(arr8((r, c)), "residual") if use_res else None
    got = vector_epilogue(acc, bias=bias, mult=mult, shift=shift, zero_point=zp, relu=relu,
                          residual=res, maxred=maxred)
    assert got.dtype == np.int8 and got.shape == ((1, c) if maxred else (r, c))
    want = ref_epilogue(acc.tolist(), bias=None if bias is None else bias.tolist(),
                        mult=mult.tolist(), shift=shift.tolist(), zp=zp, relu=relu,
                        residual=None if res is None else res.tolist(), maxred=maxred)
    assert got.tolist() == want


@pytest.mark.parametrize("top_shift", [62, 63])
def test_vector_epilogue_rounding_extremes(top_shift):
    """The epilogue's rounding, floor((p + 2^(s-1)) / 2^s) in one addition while every shift is
    <= 62 and with the round bit otherwise, at the largest products (+-2^62 and nearby) and every
    shift 0..top_shift, equals the Python-int reference."""
    vals = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
    acc = np.array([[a] * 8 for a in vals], np.int32)
    for mult_v in (INT32_MIN, INT32_MAX, -1, 1):
        for s0 in range(0, top_shift + 1, 8):
            shift = np.array([min(top_shift, s0 + j) for j in range(7)] + [top_shift], np.int32)
            mult = np.full(8, mult_v, np.int32)
            for zp in (-128, 0, 127):
                got = vector_epilogue(acc, mult=mult, shift=shift, zero_point=zp)
                want = ref_epilogue(acc.tolist(), bias=None, mult=mult.tolist(),
                                    shift=shift.tolist(), zp=zp, relu=False, residual=None,
                                    maxred=False)
                assert got.tolist() == want, (mult_v, shift.tolist(), zp)


def test_epilogue_stage_order():
    acc = np.array([[INT32_MAX, -40, 40], [0, 8, -8]], np.int32)
    kw = dict(mult=np.ones(3, np.int32), shift=np.array([0, 2, 2], np.int32))
    # bias wraps before requantization: INT32_MAX + 1 -> INT32_MIN -> saturates to -128
    assert vector_epilogue(acc, bias=np.array([1, 0, 0], np.int32), zero_point=0,
                           **kw).tolist() == [[-128, -10, 10], [1, 2, -2]]
    # relu clamps at the zero point *before* the residual add, so the add can go below it
    res = np.array([[-128, -100, 127], [-1, 127, -128]], np.int8)
    assert vector_epilogue(acc, zero_point=-5, relu=True, residual=res, **kw).tolist() == \
        [[-1, -105, 127], [-6, 124, -128]]
    # max-reduce runs last, over the post-residual values
    assert vector_epilogue(acc, zero_point=-5, relu=True, residual=res, maxred=True,
                           **kw).tolist() == [[-1, 124, 127]]
    # requantization saturates before the residual add (not a wider add then one clamp)
    one = np.array([[1000]], np.int32)
    assert vector_epilogue(one, mult=np.ones(1, np.int32), shift=np.zeros(1, np.int32),
                           zero_point=0, residual=np.array([[-100]], np.int8)).tolist() == [[27]]


def test_epilogue_residual_saturation_and_maxred_one_row():
    acc = np.array([[127, -128, 5]], np.int32)
    kw = dict(mult=np.ones(3, np.int32), shift=np.zeros(3, np.int32), zero_point=0)
    res = np.array([[1, -1, 0]], np.int8)
    assert vector_epilogue(acc, residual=res, **kw).tolist() == [[127, -128, 5]]
    assert vector_epilogue(acc, residual=res, maxred=True, **kw).tolist() == [[127, -128, 5]]


def test_epilogue_validation():
    acc = np.zeros((2, 3), np.int32)
    kw = dict(mult=np.ones(3, np.int32), shift=np.zeros(3, np.int32), zero_point=0)
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 3\)"):
        vector_epilogue(acc, residual=np.zeros((1, 3), np.int8), **kw)
    with pytest.raises(TypeError, match="residual must have dtype int8"):
        vector_epilogue(acc, residual=np.zeros((2, 3), np.int32), **kw)
    with pytest.raises(TypeError, match="bias must have dtype int32"):
        vector_epilogue(acc, bias=np.zeros(3, np.int8), **kw)
    with pytest.raises(TypeError, match="relu must be a bool"):
        vector_epilogue(acc, relu=1, **kw)
    with pytest.raises(ValueError, match="acc_rows must be 2-D"):
        vector_epilogue(acc[0], **kw)
    with pytest.raises(TypeError, match="acc_rows must have dtype int32"):
        vector_epilogue(acc.astype(np.int8), **kw)


# --------------------------------------------------------------------------------------------------
# DMA
# --------------------------------------------------------------------------------------------------

HOST32 = bytes(range(100, 132))            # byte at address a is 100 + a


def _load(**kw):
    base = dict(host_addr=0, host_row_stride=0, host_plane_stride=0, col_offset=0, rows=1,
                planes=1)
    base.update(kw)
    return dma_load(base.pop("host", HOST32), **base)


def test_dma_load_padding():
    got = _load(host_addr=3, row_bytes=2, col_offset=1, rows=2, host_row_stride=5,
                local_row_bytes=4)
    assert got.dtype == np.uint8 and got.tolist() == [[0, 103, 104, 0], [0, 108, 109, 0]]


def test_dma_load_unaligned_full_row():
    got = _load(host_addr=7, row_bytes=4, rows=3, host_row_stride=9, local_row_bytes=4)
    assert got.tolist() == [[107, 108, 109, 110], [116, 117, 118, 119], [125, 126, 127, 128]]


def test_dma_load_3d():
    got = _load(host_addr=1, row_bytes=3, col_offset=2, rows=2, planes=2, host_row_stride=3,
                host_plane_stride=10, local_row_bytes=6)
    assert got.tolist() == [[0, 0, 101, 102, 103, 0], [0, 0, 104, 105, 106, 0],
                            [0, 0, 111, 112, 113, 0], [0, 0, 114, 115, 116, 0]]


def test_dma_load_zero_strides_and_host_kinds():
    want = [[0, 0, 0, 131]] * 3
    for host in (HOST32, bytearray(HOST32), memoryview(HOST32), np.frombuffer(HOST32, np.uint8)):
        assert _load(host=host, host_addr=31, row_bytes=1, col_offset=3, rows=3,
                     local_row_bytes=4).tolist() == want


def test_dma_load_last_byte_fits_and_one_past_fails():
    assert _load(host_addr=28, row_bytes=4, local_row_bytes=4).tolist() == [[128, 129, 130, 131]]
    with pytest.raises(ValueError, match="address 32 .* 32-byte host memory .HOST_RANGE"):
        _load(host_addr=29, row_bytes=4, local_row_bytes=4)
    with pytest.raises(ValueError, match=r"address 35 \(plane 1, row 2\).*HOST_RANGE"):
        _load(host_addr=0, row_bytes=2, rows=3, planes=2, host_row_stride=2,
              host_plane_stride=30, local_row_bytes=2)


def test_dma_row_bytes_zero_is_legal():
    """DmaCmd: row_bytes == 0 loads all-zero (padding) rows and stores nothing; no host byte is
    accessed, so not even an address past the end of host memory is an error."""
    got = _load(host_addr=1000, row_bytes=0, col_offset=2, rows=2, planes=2, host_row_stride=7,
                local_row_bytes=4)
    assert got.dtype == np.uint8 and got.tolist() == [[0, 0, 0, 0]] * 4
    out = dma_store(bytes(range(8)), np.full((3, 4), 9, np.uint8), host_addr=6, host_row_stride=1,
                    host_plane_stride=0, row_bytes=0, col_offset=4, rows=3, planes=1)
    assert out == bytes(range(8))
    with pytest.raises(ValueError, match=r"col_offset \+ row_bytes = 5 \+ 0 exceeds"):
        _load(row_bytes=0, col_offset=5, local_row_bytes=4)


def test_dma_store_2d_with_col_offset():
    host = bytearray(16)
    local = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.uint8)
    out = dma_store(host, local, host_addr=3, host_row_stride=6, host_plane_stride=0,
                    row_bytes=2, col_offset=1, rows=2, planes=1)
    assert isinstance(out, bytearray) and host == bytearray(16)          # input untouched
    assert list(out) == [0, 0, 0, 2, 3, 0, 0, 0, 0, 6, 7, 0, 0, 0, 0, 0]


def test_dma_store_3d_unaligned_keeps_other_bytes():
    host = np.arange(200, 224, dtype=np.uint8)
    local = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], np.uint8)
    out = dma_store(host, local, host_addr=1, host_row_stride=4, host_plane_stride=11,
                    row_bytes=3, col_offset=0, rows=2, planes=2)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert host.tolist() == list(range(200, 224))
    want = list(range(200, 224))
    want[1:4], want[5:8], want[12:15], want[16:19] = [1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]
    assert out.tolist() == want


def test_dma_store_overlap_last_row_wins_and_bytes_in_bytes_out():
    local = np.array([[1, 2], [3, 4], [5, 6]], np.uint8)
    out = dma_store(bytes(6), local, host_addr=1, host_row_stride=1, host_plane_stride=0,
                    row_bytes=2, col_offset=0, rows=3, planes=1)
    assert isinstance(out, bytes) and list(out) == [0, 1, 3, 5, 6, 0]
    out = dma_store(bytes(4), local, host_addr=1, host_row_stride=0, host_plane_stride=0,
                    row_bytes=2, col_offset=0, rows=3, planes=1)
    assert list(out) == [0, 5, 6, 0]


def test_dma_load_store_round_trip():
    rows = _load(host_addr=2, row_bytes=5, col_offset=3, rows=2, planes=2, host_row_stride=6,
                 host_plane_stride=13, local_row_bytes=8)
    out = dma_store(bytes(32), rows, host_addr=2, host_row_stride=6, host_plane_stride=13,
                    row_bytes=5, col_offset=3, rows=2, planes=2)
    covered = {2 + p * 13 + r * 6 + i for p in range(2) for r in range(2) for i in range(5)}
    assert list(out) == [HOST32[a] if a in covered else 0 for a in range(32)]


def test_dma_validation():
    base = dict(host_addr=0, host_row_stride=4, host_plane_stride=0, row_bytes=4, col_offset=0,
                rows=2, planes=1, local_row_bytes=4)
    for field in ("rows", "planes"):
        with pytest.raises(ValueError, match=f"{field} = 0: .*BAD_SHAPE"):
            dma_load(HOST32, **{**base, field: 0})
    with pytest.raises(ValueError, match=r"col_offset \+ row_bytes = 1 \+ 4 exceeds .* 4 bytes"):
        dma_load(HOST32, **{**base, "col_offset": 1})
    for field, bits in ops.DMA_FIELD_BITS.items():
        with pytest.raises(ValueError, match=f"{field} = {2**bits} is outside 0..{2**bits - 1}"):
            dma_load(HOST32, **{**base, field: 2**bits})
        with pytest.raises(ValueError, match=f"{field} = -1 is outside"):
            dma_load(HOST32, **{**base, field: -1})
    with pytest.raises(TypeError, match="host_row_stride must be an integer"):
        dma_load(HOST32, **{**base, "host_row_stride": 4.0})
    with pytest.raises(TypeError, match="host must be bytes"):
        dma_load(list(HOST32), **base)
    with pytest.raises(TypeError, match="host must have dtype uint8"):
        dma_load(np.zeros(32, np.int8), **base)
    with pytest.raises(ValueError, match="local_row_bytes = 0"):
        dma_load(HOST32, **{**base, "local_row_bytes": 0})
    st_kw = {k: v for k, v in base.items() if k != "local_row_bytes"}
    with pytest.raises(ValueError, match=r"local_rows must have planes\*rows = 2 rows"):
        dma_store(bytes(32), np.zeros((3, 4), np.uint8), **st_kw)
    with pytest.raises(TypeError, match="local_rows must have dtype uint8"):
        dma_store(bytes(32), np.zeros((2, 4), np.int8), **st_kw)
    with pytest.raises(ValueError, match="HOST_RANGE"):
        dma_store(bytes(7), np.zeros((2, 4), np.uint8), **st_kw)


def test_dma_field_widths_match_descriptor():
    from amaranth.lib import data
    from hdl_gen.descriptor import DmaCmd
    layout = data.Layout.cast(DmaCmd)
    assert {name: layout[name].width for name in ops.DMA_FIELD_BITS} == ops.DMA_FIELD_BITS


@st.composite
def dma_geometry(draw):
    g = dict(row_bytes=draw(st.integers(0, 8)), col_offset=draw(st.integers(0, 4)),
             rows=draw(st.integers(1, 4)), planes=draw(st.integers(1, 3)),
             host_row_stride=draw(st.integers(0, 12)), host_plane_stride=draw(st.integers(0, 30)),
             host_addr=draw(st.integers(0, 9)))
    lrb = max(1, g["row_bytes"] + g["col_offset"] + draw(st.integers(0, 4)))   # a row is >= 1 B
    end = (g["host_addr"] + (g["planes"] - 1) * g["host_plane_stride"]
           + (g["rows"] - 1) * g["host_row_stride"] + g["row_bytes"])
    host = draw(st.binary(min_size=end, max_size=end + 5))
    local = draw(hnp.arrays(np.uint8, (g["planes"] * g["rows"], lrb)))
    return g, lrb, host, local


@prop(max_examples=200)
@given(dma_geometry())
def test_dma_matches_python_loops(geom):
    g, lrb, host, local = geom
    assert dma_load(host, local_row_bytes=lrb, **g).tolist() == \
        ref_dma_load(host, local_row_bytes=lrb, **g)
    assert dma_store(bytearray(host), local, **g) == ref_dma_store(host, local.tolist(), **g)
