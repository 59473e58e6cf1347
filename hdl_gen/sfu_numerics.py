"""The special-function unit's numeric constants: the single source of every fixed width, table
and limit of its arithmetic (softmax, LayerNorm/RMSNorm, table lookup, elementwise multiply).

``make rtl`` copies them into ``spec/chip.py`` (``SFU_*``), from where the golden models, the
compiler and the docs read them; ``docs/numerics.md`` states the algorithms that use them. The
exponential's table is given by its defining formula, evaluated here in exact integer arithmetic
(no floating point), so every machine builds the same bits.
"""

#: Fraction bits of the softmax exponent argument ``u = d * mult`` (``d`` = row max - x).
EXP_FRAC_BITS = 16
#: ``2^-r`` for ``r`` in [0, 1) is interpolated between 2^EXP2_SEG_BITS + 1 table points.
EXP2_SEG_BITS = 6
#: Scale of the exponential's values: ``2^0`` is ``2^EXP2_ONE_BITS``.
EXP2_ONE_BITS = 15
#: Bits of the argument's fraction below the table index (the interpolation weight).
EXP2_LERP_BITS = EXP_FRAC_BITS - EXP2_SEG_BITS
#: Scale of a softmax element's exponential ``e``: the row max gives ``e = 2^EXP_SCALE_BITS``. The
#: bits below the table's keep the row sum exact enough over 65535 tiny elements.
EXP_SCALE_BITS = 25
#: Width of the softmax ``mult`` field: ``mult = round(scale * log2(e) * 2^EXP_FRAC_BITS)``.
SOFTMAX_MULT_BITS = 16
#: A softmax probability ``p`` is the int8 code ``round(p * SOFTMAX_ONE)`` (scale 1/127, zero point 0).
SOFTMAX_ONE = 127
#: Fraction bits of the softmax row reciprocal ``floor(SOFTMAX_ONE * 2^SOFTMAX_RECIP_BITS / sum)``
#: (``sum >= 2^EXP_SCALE_BITS``, so the reciprocal stays below 2^16).
SOFTMAX_RECIP_BITS = 34
#: Fraction bits kept by the normalization's square root: ``Q = isqrt(D * 4^NORM_SQRT_FRAC_BITS)``.
NORM_SQRT_FRAC_BITS = 16
#: Epsilon is ``eps_mant * 2^eps_exp`` in units of 2^-(2 * NORM_SQRT_FRAC_BITS) steps^2: widths.
NORM_EPS_MANT_BITS = 16
NORM_EPS_EXP_BITS = 6
#: Bits of the normalization's reciprocal mantissa: ``R = floor(2^(bitlen(Q) + NORM_RECIP_BITS) / Q)``.
NORM_RECIP_BITS = 23
#: Fraction bits of the normalized value ``z = (x - mean) / std`` before gamma and beta.
NORM_Z_FRAC_BITS = 16
#: Longest LayerNorm/RMSNorm row (channels): keeps the statistics and products within their widths.
NORM_MAX_LEN = 4096
#: Longest row of any special-function command (the ``length`` field is 16 bits).
MAX_LEN = 0xFFFF
#: Entries of a lookup table (one per int8 code, -128 first).
LUT_ENTRIES = 256
#: Width of the elementwise multiply's ``mult`` field.
EMUL_MULT_BITS = 16


def _round_pow2_fraction(num_exp, root):
    """``round(2^(num_exp / root))`` for ``num_exp >= 0`` in exact integers: the ``t`` with
    ``(t - 1/2)^root <= 2^num_exp < (t + 1/2)^root``, i.e. ``(2t-1)^root <= 2^(num_exp+root) <
    (2t+1)^root`` (a value exactly halfway cannot occur: 2^(k/root) is irrational or an integer)."""
    target = 1 << (num_exp + root)
    lo, hi = 0, 1 << (num_exp // root + 2)
    while lo < hi:                      # largest t with (2t - 1)^root <= target
        mid = (lo + hi + 1) // 2
        if (2 * mid - 1) ** root <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def exp2_table():
    """``T[j] = round(2^EXP2_ONE_BITS * 2^(-j / 2^EXP2_SEG_BITS))`` for ``j = 0 .. 2^EXP2_SEG_BITS``
    (so ``T[0] = 2^15`` and ``T[64] = 2^14``)."""
    seg = 1 << EXP2_SEG_BITS
    return tuple(_round_pow2_fraction(EXP2_ONE_BITS * seg - j, seg) for j in range(seg + 1))


#: The exponential's table (see :func:`exp2_table`).
EXP2_TABLE = exp2_table()

#: Everything ``make rtl`` copies into spec/chip.py, in order.
CONSTANTS = ("EXP_FRAC_BITS", "EXP2_SEG_BITS", "EXP2_ONE_BITS", "EXP2_LERP_BITS", "EXP2_TABLE",
             "EXP_SCALE_BITS",
             "SOFTMAX_MULT_BITS", "SOFTMAX_ONE", "SOFTMAX_RECIP_BITS", "NORM_SQRT_FRAC_BITS",
             "NORM_EPS_MANT_BITS", "NORM_EPS_EXP_BITS",
             "NORM_RECIP_BITS", "NORM_Z_FRAC_BITS", "NORM_MAX_LEN", "MAX_LEN", "LUT_ENTRIES",
             "EMUL_MULT_BITS")
