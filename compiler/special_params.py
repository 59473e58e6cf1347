"""Integer parameters of the special-function commands from a float model's scales and weights.

Each function turns what a model states in real numbers (tensor scales, LayerNorm's gamma, beta
and epsilon, an activation function) into the integer fields the hardware takes, choosing widths
and shifts as docs/numerics.md ("Special functions") describes. A parameter the fields cannot
represent is a :class:`CompileError` naming ``where`` and the value.
"""
import math

import numpy as np

from spec import chip

from .errors import CompileError

__all__ = ["softmax_mult", "norm_eps", "norm_params", "emul_params", "lut_table", "gelu", "silu"]

LOG2E = 1.0 / math.log(2.0)
_erf = np.vectorize(math.erf)


def gelu(v):
    """GELU, exact (erf) form, on a float array: what a model's ``gelu`` table samples."""
    return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))


def silu(v):
    """SiLU, ``v * sigmoid(v)``, on a float array."""
    return v / (1.0 + np.exp(-v))


def _positive(where, name, v):
    if not (np.isfinite(v) and v > 0):
        raise CompileError(where, f"{name} {v!r} must be positive and finite")
    return float(v)


def softmax_mult(scale, where="softmax"):
    """``mult = round(scale * log2(e) * 2^16)`` for a softmax input of ``scale``; a scale of
    ``2^16 / (2^16 * log2 e)`` (~0.69) or more per step cannot be represented (the int8 input
    then spans more than +-88, where the exponential is 0 or 1 anyway)."""
    scale = _positive(where, "input scale", scale)
    mult = round(scale * LOG2E * (1 << chip.SFU_EXP_FRAC_BITS))
    if mult >= 1 << chip.SFU_SOFTMAX_MULT_BITS:
        raise CompileError(where, f"softmax input scale {scale:.6g} is too large: mult {mult} needs "
                                  f"more than {chip.SFU_SOFTMAX_MULT_BITS} bits (scale must be below "
                                  f"{(1 << chip.SFU_SOFTMAX_MULT_BITS) / LOG2E / 2**16:.4f})")
    return mult


def norm_eps(eps, in_scale, length, where="norm"):
    """``(mant, exp)``: epsilon as the hardware adds it under the square root, ``mant * 2^exp ~=
    L^2 * eps / in_scale^2 * 2^32`` (steps^2 with 32 fraction bits), ``mant`` below 2^16 and
    rounded to nearest -- relative error at most 2^-16, however small the rows' variance."""
    in_scale = _positive(where, "input scale", in_scale)
    if not (np.isfinite(eps) and eps >= 0):
        raise CompileError(where, f"epsilon {eps!r} must be finite and >= 0")
    value = length * length * float(eps) / (in_scale * in_scale) * 2.0 ** (
        2 * chip.SFU_NORM_SQRT_FRAC_BITS)
    mant_bits, exp_max = chip.SFU_NORM_EPS_MANT_BITS, (1 << chip.SFU_NORM_EPS_EXP_BITS) - 1
    for exp in range(exp_max + 1):
        mant = round(math.ldexp(value, -exp))
        if mant < 1 << mant_bits:
            return mant, exp
    raise CompileError(where, f"epsilon {eps:.3g} at input scale {in_scale:.3g} over {length} "
                              f"channels is {value / 2**32:.4g} steps^2, beyond what the eps field "
                              f"holds (2^{exp_max + mant_bits - 32})")


def norm_params(gamma, beta, out_scale, where="norm"):
    """``(gamma_q int32 [L], beta_q int32 [L] or None, shift)``: the largest ``shift`` in 0..63 such
    that ``gamma_q = round(gamma / out_scale * 2^(shift - 16))`` is within int16 (16 bits of
    precision are plenty; the hardware takes any int32) and ``beta_q = round(beta / out_scale *
    2^shift)`` fits int32."""
    out_scale = _positive(where, "output scale", out_scale)
    g = np.asarray(gamma, dtype=np.float64) / out_scale
    b = None if beta is None else np.asarray(beta, dtype=np.float64) / out_scale
    if not np.isfinite(g).all() or (b is not None and not np.isfinite(b).all()):
        raise CompileError(where, "gamma and beta must be finite")
    zfrac = chip.SFU_NORM_Z_FRAC_BITS
    for shift in range(63, -1, -1):
        gq = np.round(np.ldexp(g, shift - zfrac))
        bq = None if b is None else np.round(np.ldexp(b, shift))
        if np.abs(gq).max() <= 2**15 - 1 and (bq is None or np.abs(bq).max() <= 2**31 - 1):
            return gq.astype(np.int32), None if bq is None else bq.astype(np.int32), shift
    raise CompileError(where, f"gamma / output scale up to {np.abs(g).max():.6g} does not fit int16 "
                              f"even with shift 0: use a larger output scale")


def emul_params(a_scale, b_scale, out_scale, where="mul"):
    """``(mult, shift)`` with ``mult * 2^-shift ~= a_scale * b_scale / out_scale``, ``mult`` in
    [2^15, 2^16) (or below when ``shift`` reaches 63)."""
    real = (_positive(where, "a scale", a_scale) * _positive(where, "b scale", b_scale)
            / _positive(where, "output scale", out_scale))
    bits = chip.SFU_EMUL_MULT_BITS
    for shift in range(63, -1, -1):
        mult = round(math.ldexp(real, shift))
        if mult < 1 << bits:
            return mult, shift
    raise CompileError(where, f"scale ratio {real:.6g} (a scale x b scale / output scale) is too "
                              f"large for a {bits}-bit multiplier: use a larger output scale")


def lut_table(fn, in_scale, in_zero_point, out_scale, out_zero_point, where="lut"):
    """int8 ``(256,)``: entry ``k`` is ``clamp(round(fn(in_scale * (k - 128 - in_zp)) / out_scale)
    + out_zp)`` -- the function at every int8 input code, exactly rounded (ties to even)."""
    in_scale = _positive(where, "input scale", in_scale)
    out_scale = _positive(where, "output scale", out_scale)
    codes = np.arange(chip.SFU_LUT_ENTRIES, dtype=np.int64) - 128
    y = np.asarray(fn(in_scale * (codes - in_zero_point).astype(np.float64)), dtype=np.float64)
    if y.shape != codes.shape or not np.isfinite(y).all():
        raise CompileError(where, "the function must map the 256 input values to finite numbers")
    return np.clip(np.round(y / out_scale) + out_zero_point, -128, 127).astype(np.int8)
