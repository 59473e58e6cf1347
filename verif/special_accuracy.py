"""How close the special functions' integer arithmetic comes to float64: input populations,
float64 references and the error of each op in output steps (LSB).

The integer side is the golden model (:mod:`golden.special_functions`) fed with the parameters
the compiler derives (:mod:`compiler.special_params`); the reference is the float64 function of
the *dequantized* int8 inputs, quantized to the output scale without rounding (so an exactly
rounded result has error <= 0.5). ``tests/test_special_functions.py`` gates on these errors and
``python -m tools.accuracy`` prints the table of docs/numerics.md.
"""
import math

import numpy as np

from compiler import special_params as sp
from golden import special_functions as sf

__all__ = ["ROW_KINDS", "rows_of", "softmax_float", "norm_float", "gelu", "silu",
           "softmax_error", "norm_error", "lut_error", "emul_error", "measure"]

#: Input populations of the row tests: the edge cases the issue names, then ordinary rows.
ROW_KINDS = ("uniform", "normal", "equal", "near_equal", "dominant", "min")


def rows_of(rng, kind, rows, length, centre=0):
    """int8 ``(rows, length)`` of one population ``kind`` (:data:`ROW_KINDS`)."""
    if kind == "uniform":
        x = rng.integers(-128, 128, (rows, length))
    elif kind == "normal":
        x = np.rint(rng.normal(centre, rng.uniform(0.3, 60), (rows, length)))
    elif kind == "equal":
        x = np.full((rows, length), rng.integers(-128, 128))
    elif kind == "near_equal":
        x = rng.integers(-128, 127) + (rng.random((rows, length)) < 0.3)
    elif kind == "dominant":
        x = rng.integers(-128, -90, (rows, length))
        x[np.arange(rows), rng.integers(0, length, rows)] = 127
    elif kind == "min":
        x = np.full((rows, length), -128)
    else:
        raise ValueError(f"unknown row kind {kind!r}; kinds: {ROW_KINDS}")
    return np.clip(x, -128, 127).astype(np.int8)


def softmax_float(x, scale, keep):
    xf = np.where(keep, x.astype(np.float64) * scale, -np.inf)
    p = np.exp(xf - xf.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def norm_float(x, scale, zero_point, gamma, beta, eps, rms):
    xf = (x.astype(np.float64) - zero_point) * scale
    if rms:
        return xf / np.sqrt((xf * xf).mean(axis=1, keepdims=True) + eps) * gamma
    mu = xf.mean(axis=1, keepdims=True)
    var = ((xf - mu) ** 2).mean(axis=1, keepdims=True)
    return (xf - mu) / np.sqrt(var + eps) * gamma + beta


#: The float references of the activation tables (the compiler samples the same functions).
gelu, silu = sp.gelu, sp.silu


def softmax_error(x, scale, causal=False, offset=0):
    """|int8 result - 127 p| of the kept elements (1-D)."""
    y = sf.softmax(x, mult=sp.softmax_mult(scale), causal=causal, mask_offset=offset)
    keep = sf.causal_mask(*x.shape, offset) if causal else np.ones(x.shape, dtype=bool)
    if (y[~keep] != 0).any():
        raise AssertionError("a masked softmax element is not 0")
    return np.abs(y - sf.SOFTMAX_ONE * softmax_float(x, scale, keep))[keep]


def norm_error(x, scale, zero_point, gamma, beta, eps, out_scale, out_zero_point, rms):
    """|int8 result - clamp(float / out_scale + zp)| of every element."""
    length = x.shape[1]
    g, b, shift = sp.norm_params(gamma, None if rms else beta, out_scale)
    eps_q = sp.norm_eps(eps, scale, length)
    kw = dict(eps=eps_q, shift=shift, in_zero_point=zero_point, out_zero_point=out_zero_point)
    y = sf.rms_norm(x, g, **kw) if rms else sf.layer_norm(x, g, b, **kw)
    ref = norm_float(x, scale, zero_point, gamma, beta, eps, rms) / out_scale + out_zero_point
    return np.abs(y - np.clip(ref, -128, 127)).ravel()


def lut_error(fn, in_scale, in_zero_point, out_scale, out_zero_point):
    """Errors of a lookup table over all 256 input codes."""
    codes = np.arange(-128, 128, dtype=np.int64).astype(np.int8)
    table = sp.lut_table(fn, in_scale, in_zero_point, out_scale, out_zero_point)
    y = sf.lookup(codes, table)
    ref = fn(in_scale * (codes.astype(np.float64) - in_zero_point)) / out_scale + out_zero_point
    return np.abs(y - np.clip(ref, -128, 127))


def emul_error(a_scale, b_scale, out_scale, za=0, zb=0, zo=0):
    """Errors of the elementwise multiply over all 65,536 pairs of int8 codes."""
    a, b = (c.astype(np.int8) for c in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    mult, shift = sp.emul_params(a_scale, b_scale, out_scale)
    y = sf.emul(a, b, mult=mult, shift=shift, a_zero_point=za, b_zero_point=zb, out_zero_point=zo)
    ref = ((a.astype(np.float64) - za) * a_scale * (b.astype(np.float64) - zb) * b_scale / out_scale
           + zo)
    return np.abs(y - np.clip(ref, -128, 127)).ravel()


def _norm_case(rng, length, rms):
    zero_point = 0 if rms else int(rng.integers(-128, 128))
    x = rows_of(rng, str(rng.choice(ROW_KINDS)), 4, length, centre=zero_point)
    scale = float(10 ** rng.uniform(-3, 0))
    gamma = rng.uniform(0.2, 2.0, length) * rng.choice([-1, 1], length)
    beta = rng.normal(0, 0.5, length)
    eps = float(10 ** rng.uniform(-6, -3))
    ref = norm_float(x, scale, zero_point, gamma, beta, eps, rms)
    out_scale = max(float(np.abs(ref).max()), 1e-3) / 120
    return norm_error(x, scale, zero_point, gamma, beta, eps, out_scale,
                      int(rng.integers(-10, 11)), rms)


def measure(seed, cases=200, lengths=(1, 2, 3, 8, 31, 64, 128, 1000, 4096)):
    """``{op: (max error, mean error, elements)}`` over ``cases`` random cases per row op (seeded),
    every int8 code for GELU/SiLU (several scales) and every code pair for the multiply."""
    rng = np.random.default_rng(seed)
    errs = {"softmax": [], "softmax (causal)": [], "layer_norm": [], "rms_norm": [], "gelu": [],
            "silu": [], "mul": []}
    for _ in range(cases):
        length = int(rng.choice(lengths))
        x = rows_of(rng, str(rng.choice(ROW_KINDS)), 4, length)
        scale = float(10 ** rng.uniform(-3, math.log10(0.69)))
        errs["softmax"].append(softmax_error(x, scale))
        errs["softmax (causal)"].append(softmax_error(x, scale, True, int(rng.integers(0, length))))
        errs["layer_norm"].append(_norm_case(rng, length, rms=False))
        errs["rms_norm"].append(_norm_case(rng, length, rms=True))
    for in_scale in (0.01, 0.03, 0.05, 0.1):
        for zp in (-20, 0, 15):
            errs["gelu"].append(lut_error(gelu, in_scale, zp, in_scale * 0.9, -5))
            errs["silu"].append(lut_error(silu, in_scale, zp, in_scale * 0.8, 3))
    for scales in ((0.05, 0.02, 0.01), (0.1, 0.1, 0.5), (0.013, 0.027, 0.0031)):
        errs["mul"].append(emul_error(*scales, za=3, zb=-7, zo=2))
    out = {}
    for op, parts in errs.items():
        e = np.concatenate(parts)
        out[op] = (float(e.max()), float(e.mean()), int(e.size))
    return out
