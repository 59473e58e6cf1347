"""Bit-exact NumPy references for the special-function unit: softmax (with an optional causal
mask), LayerNorm and RMSNorm, table lookup (GELU, SiLU, any int8 -> int8 function) and the
elementwise multiply of two int8 tensors.

Written from ``docs/numerics.md`` ("Special functions") and the ``SFU_*`` constants of
``spec/chip.py`` only, never from the RTL generators. Every function takes *logical rows*: an
int8 array ``(R, L)`` whose rows are what the hardware reduces over (the chip stores a row of
``L`` elements as ``ceil(L / dim)`` segments; that layout is the device model's business, not
this module's). Arguments are validated like :mod:`golden.ops` (TypeError for a wrong type or
dtype, ValueError naming the value otherwise).

Exactness: every intermediate is an integer held in int64 (widths below) except the
normalization's ``D * 4^16`` and its square root, which use Python integers per row.

* softmax: ``u = d * mult < 2^8 * 2^16``; ``v <= 2^15``, ``e <= 2^25``; row sums ``< 2^25 * 2^16
  = 2^41``; ``R < 2^16``, ``e * R < 2^41``.
* norms: ``|x - zp| <= 255``, ``L <= 4096``: ``|S1| < 2^21``, ``S2 < 2^28``, ``D < 2^41``
  (``D * 2^32 + eps`` up to 2^80: Python integers),
  ``|c| < 2^22``, ``R <= 2^24``, ``|c * R| < 2^46``; ``|z| <= 2^22 + 1``, ``|z * g + beta| < 2^54``.
"""
import math

import numpy as np

from spec import chip

from .ops import INT8_MAX, INT8_MIN, SHIFT_MAX, _array_arg, _int_arg, _round_shift

__all__ = ["exp2_neg", "softmax", "norm_stats", "normalized", "layer_norm", "rms_norm", "lookup", "emul",
           "causal_mask"]

EXP2_TABLE = np.array(chip.SFU_EXP2_TABLE, dtype=np.int64)
#: The softmax output code of probability 1 (output scale 1/SOFTMAX_ONE).
SOFTMAX_ONE = chip.SFU_SOFTMAX_ONE


def _rows_arg(name, x):
    _array_arg(name, x, np.int8, (2,))
    if x.shape[1] > chip.SFU_MAX_LEN:
        raise ValueError(f"{name} rows have {x.shape[1]} elements, more than {chip.SFU_MAX_LEN}")
    return x


def exp2_neg(u):
    """``2^(-u / 2^16) * 2^25`` rounded as the hardware does, for int64 ``u >= 0`` (any shape).

    ``n = u >> 16``, ``f = u & 0xFFFF``, ``j = f >> 10``, ``w = f & 0x3FF``;
    ``v = T[j] - (((T[j] - T[j+1]) * w + 2^9) >> 10)`` (``2^(-f/2^16)`` at scale 2^15);
    with ``k = n - 10``: ``e = v << -k`` for ``k <= 0``, ``(v + 2^(k-1)) >> k`` for
    ``1 <= k <= 16`` and ``0`` for ``k >= 17``.
    """
    u = np.asarray(u, dtype=np.int64)
    if (u < 0).any():
        raise ValueError(f"exp2_neg takes u >= 0, got {int(u.min())}")
    frac, lerp = chip.SFU_EXP_FRAC_BITS, chip.SFU_EXP2_LERP_BITS
    n = u >> frac
    f = u & ((1 << frac) - 1)
    j, w = f >> lerp, f & ((1 << lerp) - 1)
    t0, t1 = EXP2_TABLE[j], EXP2_TABLE[j + 1]
    v = t0 - (((t0 - t1) * w + (1 << (lerp - 1))) >> lerp)
    k = np.minimum(n - (chip.SFU_EXP_SCALE_BITS - chip.SFU_EXP2_ONE_BITS), 17)
    up = v << np.maximum(-k, 0)
    # np.clip as np.minimum(np.maximum()): the same values without np.clip's argument handling
    down = (v + (np.int64(1) << np.minimum(np.maximum(k - 1, 0), 16))) >> np.maximum(k, 0)
    return np.where(k <= 0, up, np.where(k >= 17, 0, down))


def causal_mask(rows, length, offset):
    """Bool ``(rows, length)``: True where element ``j`` of row ``r`` is kept (``j <= r + offset``)."""
    return np.arange(length)[None, :] <= (np.arange(rows)[:, None] + offset)


def softmax(x, *, mult, causal=False, mask_offset=0):
    """The SOFTMAX command on int8 rows ``x`` ``(R, L)``: int8 probabilities at scale 1/127.

    ``mult`` (0..2^16-1) is ``round(scale * log2(e) * 2^16)`` for the input scale. With ``causal``
    element ``j`` of row ``r`` takes part only when ``j <= r + mask_offset``; excluded elements
    are written as 0. Per row: ``m = max x`` over the kept elements, ``d = m - x``,
    ``e = exp2_neg(d * mult)``, ``sum = sum e``, ``R = floor(127 * 2^34 / sum)``,
    ``y = min(127, (e * R + 2^33) >> 34)``.
    """
    _rows_arg("x", x)
    mult = _int_arg("mult", mult, 0, (1 << chip.SFU_SOFTMAX_MULT_BITS) - 1)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    offset = _int_arg("mask_offset", mask_offset, 0, chip.SFU_MAX_LEN)
    rows, length = x.shape
    keep = causal_mask(rows, length, offset) if causal else np.ones(x.shape, dtype=bool)
    xi = x.astype(np.int64)
    m = np.where(keep, xi, INT8_MIN).max(axis=1, keepdims=True)
    e = np.where(keep, exp2_neg(np.where(keep, m - xi, 0) * mult), 0)
    total = e.sum(axis=1, keepdims=True)           # >= 2^25: the max element's e
    bits = chip.SFU_SOFTMAX_RECIP_BITS
    recip = (chip.SFU_SOFTMAX_ONE << bits) // total
    y = np.minimum(chip.SFU_SOFTMAX_ONE, (e * recip + (1 << (bits - 1))) >> bits)
    return y.astype(np.int8)


_EXP2_TABLES = {}


def _exp2_table(mult):
    """``exp2_neg(d * mult)`` for ``d`` in 0..255 (read-only; the last few ``mult`` values'
    tables kept: a model's softmax commands share their scale)."""
    t = _EXP2_TABLES.get(mult)
    if t is None:
        if len(_EXP2_TABLES) >= 64:
            _EXP2_TABLES.clear()
        t = _EXP2_TABLES[mult] = exp2_neg(np.arange(256, dtype=np.int64) * mult)
        t.setflags(write=False)
    return t


def _softmax(x, mult, causal, mask_offset):
    """:func:`softmax` of checked operands (the device model's SOFTMAX): the same arithmetic with
    ``exp2_neg`` tabulated once over the 256 values ``d = m - x`` takes (a kept element's ``d``
    is 0..255), instead of evaluated per element. tests/test_special_functions.py compares it
    with :func:`softmax`."""
    rows, length = x.shape
    xi = x.astype(np.int16)
    table = _exp2_table(mult)
    if causal:
        keep = causal_mask(rows, length, mask_offset)
        m = np.where(keep, xi, INT8_MIN).max(axis=1, keepdims=True)
        e = table[m - xi]                     # masked elements (d may be < 0) are zeroed next
        e[~keep] = 0
    else:
        e = table[xi.max(axis=1, keepdims=True) - xi]
    total = e.sum(axis=1, keepdims=True)           # >= 2^25: the max element's e
    bits = chip.SFU_SOFTMAX_RECIP_BITS
    recip = (chip.SFU_SOFTMAX_ONE << bits) // total
    y = np.minimum(chip.SFU_SOFTMAX_ONE, (e * recip + (1 << (bits - 1))) >> bits)
    return y.astype(np.int8)


def norm_stats(x, *, in_zero_point, rms):
    """``(S1, S2)`` per row (int64 ``(R,)``): the sum and the sum of squares of ``x - in_zero_point``
    (``S1 = 0`` for RMSNorm)."""
    xs = x.astype(np.int64) - in_zero_point
    s1 = np.zeros(x.shape[0], dtype=np.int64) if rms else xs.sum(axis=1)
    return s1, (xs * xs).sum(axis=1)


def normalized(x, *, eps, in_zero_point, rms):
    """``z``, the normalized rows ``(x - mean) / std`` in fixed point with NORM_Z_FRAC_BITS
    fraction bits (int64): the stage before gamma and beta. ``eps`` = (mantissa, exponent)."""
    length = x.shape[1]
    eps_fx = eps[0] << eps[1]
    s1, s2 = norm_stats(x, in_zero_point=in_zero_point, rms=rms)
    c = length * (x.astype(np.int64) - in_zero_point) - s1[:, None]
    z = np.zeros(x.shape, dtype=np.int64)
    for r in range(x.shape[0]):
        d = length * int(s2[r]) - int(s1[r]) ** 2
        if d == 0:
            continue                               # every c is 0 too (equal elements, or all 0)
        q = math.isqrt((d << (2 * chip.SFU_NORM_SQRT_FRAC_BITS)) + eps_fx)   # >= 2^16
        b = q.bit_length()
        recip = (1 << (b + chip.SFU_NORM_RECIP_BITS)) // q
        sh = b + chip.SFU_NORM_RECIP_BITS - chip.SFU_NORM_SQRT_FRAC_BITS - chip.SFU_NORM_Z_FRAC_BITS
        z[r] = (c[r] * recip + (1 << (sh - 1))) >> sh
    return z


def _normalized(x, eps, in_zero_point, rms):
    """:func:`normalized` with the per-row scalars (``Q``, ``R``, the shift) in Python integers
    and ``z`` for all rows in one NumPy expression (``|c * R| < 2^46``, module docstring); the
    device model's. tests/test_special_functions.py compares it with :func:`normalized`."""
    length = x.shape[1]
    eps_fx = eps[0] << eps[1]
    xs = x.astype(np.int64) - in_zero_point
    s1 = np.zeros(x.shape[0], dtype=np.int64) if rms else xs.sum(axis=1)
    s2 = (xs * xs).sum(axis=1)
    c = length * xs - s1[:, None]
    recips, shifts = [], []
    sq, rb = 2 * chip.SFU_NORM_SQRT_FRAC_BITS, chip.SFU_NORM_RECIP_BITS
    sh0 = chip.SFU_NORM_RECIP_BITS - chip.SFU_NORM_SQRT_FRAC_BITS - chip.SFU_NORM_Z_FRAC_BITS
    for s1r, s2r in zip(s1.tolist(), s2.tolist()):
        d = length * s2r - s1r * s1r
        if d == 0:                                 # every c is 0 too: z = 0 (R = 0, shift 1)
            recips.append(0)
            shifts.append(1)
            continue
        q = math.isqrt((d << sq) + eps_fx)         # >= 2^16
        b = q.bit_length()
        recips.append((1 << (b + rb)) // q)
        shifts.append(b + sh0)
    recip = np.array(recips, dtype=np.int64)[:, None]
    sh = np.array(shifts, dtype=np.int64)[:, None]
    return (c * recip + (np.int64(1) << (sh - 1))) >> sh


def _norm_checked(x, gamma, beta, eps, shift, in_zero_point, out_zero_point, rms):
    """:func:`layer_norm` / :func:`rms_norm` of checked operands (the device model's), through
    :func:`_normalized`."""
    z = _normalized(x, eps, in_zero_point, rms)
    p = z * gamma.astype(np.int64) + (0 if beta is None else beta.astype(np.int64))
    v = _round_shift(p, np.int64(shift)) + out_zero_point
    return np.minimum(np.maximum(v, INT8_MIN), INT8_MAX).astype(np.int8)


def _norm(x, gamma, beta, *, eps, shift, in_zero_point, out_zero_point, rms):
    _rows_arg("x", x)
    length = x.shape[1]
    if length > chip.SFU_NORM_MAX_LEN:
        raise ValueError(f"x rows have {length} channels, more than {chip.SFU_NORM_MAX_LEN}")
    if not isinstance(eps, tuple) or len(eps) != 2:
        raise TypeError(f"eps must be a tuple (mantissa, exponent), got {eps!r}")
    eps = (_int_arg("eps mantissa", eps[0], 0, (1 << chip.SFU_NORM_EPS_MANT_BITS) - 1),
           _int_arg("eps exponent", eps[1], 0, (1 << chip.SFU_NORM_EPS_EXP_BITS) - 1))
    s = _int_arg("shift", shift, 0, SHIFT_MAX)
    zi = _int_arg("in_zero_point", in_zero_point, INT8_MIN, INT8_MAX)
    zo = _int_arg("out_zero_point", out_zero_point, INT8_MIN, INT8_MAX)
    for name, v, dtype in (("gamma", gamma, np.int32), ("beta", beta, np.int32)):
        if v is None and name == "beta":
            continue
        _array_arg(name, v, dtype, (1,))
        if v.shape != (length,):
            raise ValueError(f"{name} must have shape ({length},) to match the rows, got {v.shape}")
    z = normalized(x, eps=eps, in_zero_point=zi, rms=rms)
    p = z * gamma.astype(np.int64) + (0 if beta is None else beta.astype(np.int64))
    return np.clip(_round_shift(p, np.int64(s)) + zo, INT8_MIN, INT8_MAX).astype(np.int8)


def layer_norm(x, gamma, beta, *, eps, shift, in_zero_point=0, out_zero_point=0):
    """The LAYERNORM command on int8 rows ``x`` ``(R, L)``, ``L <= 4096``.

    ``xs = x - in_zero_point``, ``S1 = sum xs``, ``S2 = sum xs^2``, ``D = L*S2 - S1^2``,
    ``c = L*xs - S1``, ``Q = isqrt(D * 2^32 + eps_mant * 2^eps_exp)`` (``eps = (eps_mant,
    eps_exp)``, 16 and 6 bits: epsilon in units of 2^-32 steps^2); ``z = 0`` when ``D = 0``, else with ``b =
    bitlen(Q)``, ``R = floor(2^(b+23) / Q)``, ``z = (c*R + 2^(b-10)) >> (b-9)`` (``c / sqrt(D)``
    with 16 fraction bits); ``y = clamp(round_half_up((z*gamma + beta) / 2^shift) +
    out_zero_point)``. ``gamma`` and ``beta`` int32 ``(L,)``.
    """
    return _norm(x, gamma, beta, eps=eps, shift=shift, in_zero_point=in_zero_point,
                 out_zero_point=out_zero_point, rms=False)


def rms_norm(x, gamma, *, eps, shift, in_zero_point=0, out_zero_point=0):
    """The RMSNORM command: :func:`layer_norm` with ``S1 = 0`` and no beta (``D = L*S2``,
    ``c = L*xs``)."""
    return _norm(x, gamma, None, eps=eps, shift=shift, in_zero_point=in_zero_point,
                 out_zero_point=out_zero_point, rms=True)


def lookup(x, table):
    """The LUT command: ``y = table[x + 128]`` for int8 ``x`` (any shape), ``table`` int8 ``(256,)``
    (entry 0 for code -128)."""
    _array_arg("x", x, np.int8)
    _array_arg("table", table, np.int8, (1,))
    if table.shape != (chip.SFU_LUT_ENTRIES,):
        raise ValueError(f"table must have shape ({chip.SFU_LUT_ENTRIES},), got {table.shape}")
    return table[x.astype(np.int64) - INT8_MIN]


def emul(a, b, *, mult, shift, a_zero_point=0, b_zero_point=0, out_zero_point=0):
    """The EMUL command: ``y = clamp(round_half_up((a - za) * (b - zb) * mult / 2^shift) + zo)``
    for int8 ``a``, ``b`` of one shape, ``mult`` 0..2^16-1, ``shift`` 0..63."""
    _array_arg("a", a, np.int8)
    _array_arg("b", b, np.int8)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    mult = _int_arg("mult", mult, 0, (1 << chip.SFU_EMUL_MULT_BITS) - 1)
    s = _int_arg("shift", shift, 0, SHIFT_MAX)
    za, zb, zo = (_int_arg(n, v, INT8_MIN, INT8_MAX) for n, v in (
        ("a_zero_point", a_zero_point), ("b_zero_point", b_zero_point),
        ("out_zero_point", out_zero_point)))
    p = (a.astype(np.int64) - za) * (b.astype(np.int64) - zb) * mult
    return np.clip(_round_shift(p, np.int64(s)) + zo, INT8_MIN, INT8_MAX).astype(np.int8)
