"""Bit-exact NumPy references for Kaki's arithmetic and data movement.

Written from ``docs/numerics.md`` and the ``DmaCmd``/``GemmCmd``/``VecCmd`` docstrings in
``hdl_gen/descriptor.py`` only (never from the RTL generators), so that the RTL and this model are
two independent implementations of one contract.

All functions are vectorized (no per-element Python loops) and strict about their inputs: a wrong
type or dtype raises :class:`TypeError`, a wrong shape or an out-of-range value :class:`ValueError`;
every message names the offending argument and value. Empty operands (a zero size) are rejected,
as the hardware rejects zero size fields with ``BAD_SHAPE`` (except a DMA's ``row_bytes``, which
the DmaCmd docstring allows to be 0).

Exactness notes
---------------
* :func:`gemm` multiplies in float64 through BLAS. Every product of two int8 is an integer of
  magnitude at most 2^14 and every partial sum of at most ``_K_CHUNK`` = 2^38 such products has
  magnitude at most 2^52 < 2^53, so every float64 operation (whatever order or blocking the BLAS
  uses, with or without FMA) acts on integers that float64 represents exactly and is therefore
  exact. Chunk results are converted to int64 and wrapped to int32 (mod 2^32) after each chunk.
* :func:`requantize` forms ``p = x * mult`` in int64: ``|p| <= 2^31 * 2^31 = 2^62`` fits. The spec's
  ``floor((p + 2^(s-1)) / 2^s)`` would overflow int64 for ``p`` near 2^62 and ``s = 63``, so it is
  computed as ``(p >> s) + ((p >> (s-1)) & 1)``: writing ``p = q*2^s + t`` with ``0 <= t < 2^s``
  (``q = p >> s``, arithmetic shift = floor), ``floor((p + 2^(s-1)) / 2^s) = q + [t >= 2^(s-1)]``,
  and since ``t < 2^s`` the condition ``t >= 2^(s-1)`` is bit ``s-1`` of ``t``, which equals bit
  ``s-1`` of ``p`` because ``p = t (mod 2^s)``. Neither shift overflows; ``|r| <= 2^62`` so adding
  the int8 zero point cannot overflow before the clamp.
"""
import numpy as np

__all__ = [
    "BadShiftError", "gemm", "bias_add", "requantize", "relu_q", "add_sat", "max_reduce",
    "vector_epilogue", "dma_load", "dma_store", "DMA_FIELD_BITS",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -128, 127
SHIFT_MAX = 63

#: Largest K handled by one float64 BLAS call (see the module docstring): K * 2^14 < 2^53.
_K_CHUNK = 2**38
#: Largest product (M * K * N multiply-adds) an engine hands to BLAS in one call (``_gemm``'s
#: ``serial``).
_BLAS_SERIAL = 2**18
#: Largest K whose int8 products float32 BLAS sums exactly: every partial sum of K products
#: (each at most 2^14 in magnitude) is an integer of magnitude <= K * 2^14 <= 2^24, which float32
#: holds exactly, in any order of summation (``_gemm_f32``).
F32_EXACT_K = 1024

#: Widths of the DMA descriptor fields this model checks (``DmaCmd`` in ``hdl_gen/descriptor.py``).
DMA_FIELD_BITS = {
    "host_addr": 48, "host_row_stride": 32, "host_plane_stride": 32,
    "row_bytes": 8, "col_offset": 8, "rows": 16, "planes": 16,
}


class BadShiftError(ValueError):
    """A requantization shift outside 0..63 (the hardware fails the command with ``BAD_SHIFT``).

    ``channel`` is the first offending channel (None when a scalar shift was given), ``value`` the
    offending shift.
    """

    def __init__(self, channel, value):
        self.channel = channel
        self.value = value
        where = "shift" if channel is None else f"shift[{channel}]"
        super().__init__(f"{where} = {value} is outside 0..{SHIFT_MAX} (BAD_SHIFT)")


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------

def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_arg(name, v, lo, hi):
    """A Python/NumPy integer scalar in lo..hi, returned as a Python int."""
    if not _is_int(v):
        raise TypeError(f"{name} must be an integer, got {v!r} of type {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError(f"{name} = {v} is outside {lo}..{hi}")
    return v


def _array_arg(name, a, dtype, ndims=None):
    """``a`` must be a non-empty ndarray of exactly ``dtype`` with ``a.ndim`` in ``ndims`` (when
    given; else any ``a.ndim >= 1``)."""
    dtype = np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of dtype {dtype.name}, "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype.name}, got {a.dtype}")
    if (a.ndim not in ndims) if ndims is not None else (a.ndim < 1):
        want = " or ".join(f"{n}-D" for n in ndims) if ndims is not None else "at least 1-D"
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return a


def _channel_row(name, v, channels, *, dtype=None, lo=None, hi=None):
    """A per-channel parameter as an int64 vector of length ``channels``.

    Accepts an ndarray of shape ``(C,)`` or ``(1, C)`` (one row) of ``dtype`` (any integer dtype
    when ``dtype`` is None), or an integer scalar broadcast to every channel (range-checked against
    ``lo..hi`` when given).
    """
    if isinstance(v, np.ndarray):
        if dtype is not None and v.dtype != np.dtype(dtype):
            raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {v.dtype}")
        if dtype is None and not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"{name} must have an integer dtype, got {v.dtype}")
        row = v[0] if v.shape == (1, channels) else v
        if row.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},) or (1, {channels}) to match "
                             f"{channels} channels, got {v.shape}")
        return row
    if _is_int(v):
        if lo is not None:
            _int_arg(name, v, lo, hi)
        return np.full(channels, int(v), dtype=np.int64)
    raise TypeError(f"{name} must be a numpy.ndarray or an integer, got {type(v).__name__}")


def _shift_row(shift, channels):
    """Validated per-channel shift as int64; raises :class:`BadShiftError` outside 0..63."""
    if _is_int(shift):
        if not 0 <= int(shift) <= SHIFT_MAX:
            raise BadShiftError(None, int(shift))
    s = _channel_row("shift", shift, channels)
    bad = np.flatnonzero((s < 0) | (s > SHIFT_MAX))
    if bad.size:
        c = int(bad[0])
        raise BadShiftError(c, int(s[c]))
    return s.astype(np.int64)


def _clip8(v):
    """Integer array ``v`` saturated to -128..127, as int8 (``np.clip`` without its argument
    checks, which cost more than the arithmetic at these sizes)."""
    return np.minimum(np.maximum(v, INT8_MIN), INT8_MAX).astype(np.int8)


def _wrap32(v):
    """int64 array -> the int32 congruent to it mod 2^32 (|v| must be < 2^62)."""
    return (v & 0xFFFFFFFF).astype(np.uint32).view(np.int32)   # two's complement of v mod 2^32


# --------------------------------------------------------------------------------------------------
# GEMM
# --------------------------------------------------------------------------------------------------

def gemm(a, b, c_init=None):
    """``C = A @ B`` (+ ``c_init``): int8 x int8 -> int32 accumulate, wrapping modulo 2^32.

    ``a`` is int8 ``(M, K)``, ``b`` int8 ``(K, N)``; ``c_init`` (the accumulator contents when
    ``accumulate = 1``) is int32 ``(M, N)`` and is added with wrapping. Returns int32 ``(M, N)``.
    """
    _array_arg("a", a, np.int8, (2,))
    _array_arg("b", b, np.int8, (2,))
    (m, k), (kb, n) = a.shape, b.shape
    if k != kb:
        raise ValueError(f"inner dimensions differ: a has K = {k} columns, b has {kb} rows")
    if c_init is not None:
        _array_arg("c_init", c_init, np.int32, (2,))
        if c_init.shape != (m, n):
            raise ValueError(f"c_init must have shape {(m, n)}, got {c_init.shape}")
    return _gemm(a, b, c_init)


def _gemm(a, b, c_init=None, serial=False):
    """:func:`gemm` without the argument checks (the device model's engines call it with operands
    their command checks made valid). ``serial``: B's columns in blocks of products of about
    _BLAS_SERIAL multiply-adds (at least 8 columns): OpenBLAS runs larger ones on several threads,
    which at an engine command's sizes cost more than they bring (and wait for a core on a loaded
    machine). Any blocking gives the same exact result (module docstring)."""
    (m, k), n = a.shape, b.shape[1]
    acc = (c_init.astype(np.int64) if c_init is not None
           else np.zeros((m, n), dtype=np.int64))
    cols = max(8, _BLAS_SERIAL // max(1, m * min(k, _K_CHUNK))) if serial else n
    for k0 in range(0, k, _K_CHUNK):
        af = a[:, k0:k0 + _K_CHUNK].astype(np.float64)
        bf = b[k0:k0 + _K_CHUNK].astype(np.float64)
        part = af @ bf if cols >= n else np.concatenate(
            [af @ bf[:, n0:n0 + cols] for n0 in range(0, n, cols)], axis=1)
        if k <= _K_CHUNK:        # one chunk (every product the chip makes): one wrap at the end
            return _wrap32(acc + part.astype(np.int64))
        acc = _wrap32(acc + part.astype(np.int64)).astype(np.int64)
    return _wrap32(acc)


def _gemm_f32(af, bf, serial=False):
    """``af @ bf`` as int32 for float32 operands holding int8 values, ``K <= F32_EXACT_K``:
    exact (see F32_EXACT_K), so equal to :func:`_gemm` of the int8 operands without ``c_init``
    (its magnitude is at most 2^24: no wrap). ``serial`` as :func:`_gemm`'s."""
    (m, k), n = af.shape, bf.shape[1]
    cols = max(8, _BLAS_SERIAL // max(1, m * k)) if serial else n
    part = af @ bf if cols >= n else np.concatenate(
        [af @ bf[:, n0:n0 + cols] for n0 in range(0, n, cols)], axis=1)
    return part.astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Vector epilogue stages
# --------------------------------------------------------------------------------------------------

def bias_add(acc, bias):
    """``wrap32(acc + bias[c])``; ``acc`` int32 ``(..., C)``, ``bias`` int32 ``(C,)``/``(1, C)``
    or an int32-range scalar."""
    _array_arg("acc", acc, np.int32)
    return _bias_add(acc, _channel_row("bias", bias, acc.shape[-1], dtype=np.int32, lo=INT32_MIN,
                                       hi=INT32_MAX))


def _bias_add(acc, b):
    return _wrap32(acc.astype(np.int64) + b.astype(np.int64))


def _round_shift(p, s):
    """``p`` if ``s == 0`` else ``floor((p + 2^(s-1)) / 2^s)``, exactly, for int64 ``p`` and
    ``0 <= s <= 63`` (broadcast), as ``(p >> s) + ((p >> (s-1)) & 1)`` (module docstring)."""
    round_bit = np.where(s > 0, (p >> np.maximum(s - 1, 0)) & 1, 0)
    return (p >> s) + round_bit                              # == p when s == 0


def requantize(x, mult, shift, zero_point):
    """Requantize int32 ``x`` ``(..., C)`` to int8 (docs/numerics.md, epilogue stage 2).

    ``p = x * mult[c]`` (exact), ``r = p`` if ``s == 0`` else ``floor((p + 2^(s-1)) / 2^s)`` (round
    half up), ``y = clamp(r + zero_point, -128, 127)``. ``mult`` is int32 ``(C,)``/``(1, C)`` or a
    scalar; ``shift`` an integer array ``(C,)``/``(1, C)`` or a scalar, every value in 0..63 (else
    :class:`BadShiftError`, a ValueError naming the value and channel); ``zero_point`` an int in
    -128..127. See the module docstring for why the rounding is exact.
    """
    _array_arg("x", x, np.int32)
    channels = x.shape[-1]
    zp = _int_arg("zero_point", zero_point, INT8_MIN, INT8_MAX)
    m = _channel_row("mult", mult, channels, dtype=np.int32, lo=INT32_MIN, hi=INT32_MAX)
    return _requantize(x, m, _shift_row(shift, channels), zp)


def _requantize(x, m, s, zp):
    """:func:`requantize` of checked operands: ``m`` and ``s`` per-channel rows, ``zp`` an int."""
    p = x.astype(np.int64) * m.astype(np.int64)             # |p| <= 2^62: exact
    r = _round_shift(p, s)                                   # |r| <= 2^62: + zp cannot overflow
    return _clip8(r + zp)


def relu_q(y, zero_point):
    """Quantized ReLU: ``max(y, zero_point)`` on int8 ``y``."""
    _array_arg("y", y, np.int8)
    return _relu_q(y, _int_arg("zero_point", zero_point, INT8_MIN, INT8_MAX))


def _relu_q(y, zp):
    return np.maximum(y, np.int8(zp))


def add_sat(a, b):
    """Saturating int8 add: ``clamp(a + b, -128, 127)``; ``a`` and ``b`` int8 of the same shape."""
    _array_arg("a", a, np.int8)
    _array_arg("b", b, np.int8)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    return _add_sat(a, b)


def _add_sat(a, b):
    return _clip8(a.astype(np.int16) + b.astype(np.int16))


def max_reduce(y):
    """Elementwise max over the rows of int8 ``y`` ``(R, C)``, R >= 1 -> one row ``(1, C)``."""
    _array_arg("y", y, np.int8, (2,))
    return y.max(axis=0, keepdims=True)


def vector_epilogue(acc_rows, *, bias=None, mult, shift, zero_point, relu=False, residual=None,
                    maxred=False):
    """The VECTOR command: int32 accumulator rows ``(R, C)`` -> int8 rows.

    Stage order (docs/numerics.md): bias (when ``bias`` is given) -> requantize (always) -> relu
    (when ``relu``) -> saturating residual add (when ``residual``, int8 ``(R, C)``, is given) ->
    max-reduce (when ``maxred``). Returns int8 ``(R, C)``, or ``(1, C)`` with ``maxred``.
    Every argument is validated before any arithmetic; a shift outside 0..63 raises
    :class:`BadShiftError` (the hardware's ``BAD_SHIFT``, nothing written).
    """
    _array_arg("acc_rows", acc_rows, np.int32, (2,))
    rows, channels = acc_rows.shape
    for flag_name, flag in (("relu", relu), ("maxred", maxred)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{flag_name} must be a bool, got {flag!r}")
    zp = _int_arg("zero_point", zero_point, INT8_MIN, INT8_MAX)
    shift = _shift_row(shift, channels)
    mult = _channel_row("mult", mult, channels, dtype=np.int32, lo=INT32_MIN, hi=INT32_MAX)
    if bias is not None:
        bias = _channel_row("bias", bias, channels, dtype=np.int32, lo=INT32_MIN, hi=INT32_MAX)
    if residual is not None:
        _array_arg("residual", residual, np.int8, (2,))
        if residual.shape != (rows, channels):
            raise ValueError(f"residual must have shape {(rows, channels)}, got {residual.shape}")
    return _vector_epilogue(acc_rows, bias, mult, shift, zp, relu, residual, maxred)


def _vector_epilogue(acc_rows, bias, mult, shift, zp, relu, residual, maxred):
    """:func:`vector_epilogue` of checked operands (``bias``, ``mult``, ``shift``: per-channel
    rows, ``shift`` int64 in 0..63; ``zp`` an int; ``residual`` int8 ``(R, C)`` or None)."""
    # int32 + int32 wraps modulo 2^32: _bias_add's wrap32(acc + bias) in one operation
    x = acc_rows + bias.astype(np.int32) if bias is not None else acc_rows
    p = x.astype(np.int64) * mult.astype(np.int64)           # |p| <= 2^62: exact
    s = shift.astype(np.int64)
    if int(s.max()) <= 62:
        # _round_shift as floor((p + 2^(s-1)) / 2^s) (0 added for s = 0): p + 2^61 < 2^63 fits
        r = (p + ((np.int64(1) << s) >> 1)) >> s
    else:
        # with the per-channel terms computed on the row: (p >> s) + ((p >> max(s-1, 0)) & (s > 0))
        r = (p >> s) + ((p >> np.maximum(s - 1, 0)) & (s > 0).astype(np.int64))
    y = _clip8(r + zp)
    if relu:
        y = _relu_q(y, zp)
    if residual is not None:
        y = _add_sat(y, residual)
    if maxred:
        y = y.max(axis=0, keepdims=True)
    return y


# --------------------------------------------------------------------------------------------------
# DMA
# --------------------------------------------------------------------------------------------------

def _host_bytes(name, host):
    """Host memory as a 1-D uint8 array (a read-only view for bytes-like input)."""
    if isinstance(host, np.ndarray):
        if host.dtype != np.uint8:
            raise TypeError(f"{name} must have dtype uint8, got {host.dtype}")
        if host.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {host.shape}")
        return host
    if isinstance(host, (bytes, bytearray, memoryview)):
        return np.frombuffer(host, dtype=np.uint8)
    raise TypeError(f"{name} must be bytes, bytearray, memoryview or a uint8 numpy.ndarray, "
                    f"got {type(host).__name__}")


def _dma_host_index(host_len, *, host_addr, host_row_stride, host_plane_stride, row_bytes,
                    col_offset, rows, planes, local_row_bytes):
    """Validate a DMA's fields; return the host byte index of every copied byte.

    The result is int64 ``(planes*rows, row_bytes)``; row ``p*rows + r`` holds the host addresses
    ``host_addr + p*host_plane_stride + r*host_row_stride + (0..row_bytes-1)``.
    """
    fields = dict(host_addr=host_addr, host_row_stride=host_row_stride,
                  host_plane_stride=host_plane_stride, row_bytes=row_bytes, col_offset=col_offset,
                  rows=rows, planes=planes)
    v = {name: _int_arg(name, val, 0, 2**DMA_FIELD_BITS[name] - 1) for name, val in fields.items()}
    for name in ("rows", "planes"):          # row_bytes == 0 is legal: zero rows / a no-op store
        if v[name] == 0:
            raise ValueError(f"{name} = 0: size fields must be nonzero (BAD_SHAPE)")
    lrb = _int_arg("local_row_bytes", local_row_bytes, 1, 2**63 - 1)
    if v["col_offset"] + v["row_bytes"] > lrb:
        raise ValueError(f"col_offset + row_bytes = {v['col_offset']} + {v['row_bytes']} exceeds "
                         f"the local row of {lrb} bytes (BAD_SHAPE)")
    # All terms are non-negative, so the last byte of the last row is the highest address. With
    # row_bytes == 0 no host byte is accessed, so there is nothing to range-check.
    end = (v["host_addr"] + (v["planes"] - 1) * v["host_plane_stride"]
           + (v["rows"] - 1) * v["host_row_stride"] + v["row_bytes"])
    if v["row_bytes"] and end > host_len:
        raise ValueError(f"host bytes up to address {end - 1} (plane {v['planes'] - 1}, row "
                         f"{v['rows'] - 1}) fall outside the {host_len}-byte host memory "
                         f"(HOST_RANGE)")
    return _dma_index(v["host_addr"], v["host_row_stride"], v["host_plane_stride"], v["row_bytes"],
                      v["rows"], v["planes"])


def _dma_index(host_addr, host_row_stride, host_plane_stride, row_bytes, rows, planes):
    """The host byte index of every copied byte, int64 ``(planes*rows, row_bytes)`` (fields
    checked)."""
    starts = (host_addr
              + np.arange(planes, dtype=np.int64)[:, None] * host_plane_stride
              + np.arange(rows, dtype=np.int64)[None, :] * host_row_stride)
    return starts.reshape(-1, 1) + np.arange(row_bytes, dtype=np.int64)[None, :]


def dma_load(host, *, host_addr, host_row_stride, host_plane_stride, row_bytes, col_offset, rows,
             planes, local_row_bytes):
    """DMA_LOAD reference: the local rows a load writes, in (plane, row) order.

    Returns uint8 ``(planes*rows, local_row_bytes)``: row ``p*rows + r`` (destined for local row
    ``local_addr + p*local_plane_stride + r*local_row_stride``) is ``col_offset`` zero bytes, the
    ``row_bytes`` bytes at host address ``host_addr + p*host_plane_stride + r*host_row_stride``,
    then zeros to the end of the row. ``host`` is the host memory from address 0 (bytes-like or a
    1-D uint8 array); ``local_row_bytes`` is ``dim`` for the scratchpad, ``4*dim`` for the
    accumulator. Fields are checked against their ``DmaCmd`` widths; ``rows == 0``/``planes == 0``,
    ``col_offset + row_bytes > local_row_bytes``, or a host byte outside ``host`` raises ValueError.
    ``row_bytes == 0`` is legal (all-zero padding rows; no host byte is read or range-checked).
    """
    mem = _host_bytes("host", host)
    idx = _dma_host_index(len(mem), host_addr=host_addr, host_row_stride=host_row_stride,
                          host_plane_stride=host_plane_stride, row_bytes=row_bytes,
                          col_offset=col_offset, rows=rows, planes=planes,
                          local_row_bytes=local_row_bytes)
    return _dma_gather(mem, idx, int(col_offset), int(local_row_bytes))


def _dma_gather(mem, idx, col_offset, local_row_bytes):
    """:func:`dma_load` of a checked index (:func:`_dma_index`)."""
    out = np.zeros((idx.shape[0], local_row_bytes), dtype=np.uint8)
    out[:, col_offset:col_offset + idx.shape[1]] = mem[idx]
    return out


def dma_store(host, local_rows, *, host_addr, host_row_stride, host_plane_stride, row_bytes,
              col_offset, rows, planes):
    """DMA_STORE reference: host memory after the store, as a new object (``host`` is untouched).

    ``local_rows`` is uint8 ``(planes*rows, local_row_bytes)`` in (plane, row) order (as
    :func:`dma_load` returns them). For each ``(p, r)``, bytes ``col_offset .. col_offset+row_bytes-1``
    of local row ``p*rows + r`` are written at host address ``host_addr + p*host_plane_stride +
    r*host_row_stride``; every other host byte keeps its value. If rows overlap in host memory the
    later row in (plane, row) order wins (a model choice; the DmaCmd docstring does not say).
    ``row_bytes == 0`` is legal and writes nothing (no host byte is range-checked).
    Returns a uint8 ndarray for ndarray input, ``bytes`` for ``bytes``, else a ``bytearray``.
    """
    mem = _host_bytes("host", host)
    _array_arg("local_rows", local_rows, np.uint8, (2,))
    idx = _dma_host_index(len(mem), host_addr=host_addr, host_row_stride=host_row_stride,
                          host_plane_stride=host_plane_stride, row_bytes=row_bytes,
                          col_offset=col_offset, rows=rows, planes=planes,
                          local_row_bytes=local_rows.shape[1])
    if local_rows.shape[0] != idx.shape[0]:
        raise ValueError(f"local_rows must have planes*rows = {idx.shape[0]} rows, "
                         f"got shape {local_rows.shape}")
    data = local_rows[:, int(col_offset):int(col_offset) + int(row_bytes)]
    out = mem.copy()
    _dma_scatter(out, idx, data)
    if isinstance(host, np.ndarray):
        return out
    if isinstance(host, bytes):
        return out.tobytes()
    return bytearray(out.tobytes())


def _dma_scatter(mem, idx, data):
    """Write ``data`` (``(n, row_bytes)``) at the host byte index ``idx`` (:func:`_dma_index`) of
    ``mem`` in place, the later row winning where rows overlap."""
    if idx.shape[1] == 0:
        return
    starts = np.sort(idx[:, 0])
    if starts.size < 2 or (np.diff(starts) >= idx.shape[1]).all():
        mem[idx] = data              # no byte written twice: any order gives the same result
        return
    # Fancy assignment does not define which of several writes to one index wins: keep the last
    # write of each address explicitly (first occurrence in the reversed order).
    flat_idx, flat_data = idx.ravel()[::-1], data.ravel()[::-1]
    addrs, first = np.unique(flat_idx, return_index=True)
    mem[addrs] = flat_data[first]
