"""Malformed command descriptors and the precise status each must end with.

:func:`expected_status` is the oracle: the status a descriptor served from a queue ends with,
computed from its words and a :class:`Context` (the queue's DMA window, where host memory ends,
the requantization shift rows a VECTOR may read), in the documented check order:

1. the firmware, before anything reaches an engine (docs/queues.md "Firmware", in the order of
   firmware/queues.c): an opcode nothing serves → BAD_OPCODE; reserved flag bits →
   RESERVED_BITS; SIGNAL_EVENT / WAIT_EVENT: reserved payload bits → RESERVED_BITS, an event
   index ≥ ``EVENTS`` → BAD_EVENT. NOP and BARRIER have no payload: its bits are ignored;
2. the engine (golden/device_model.py docstring, docs/queues.md "DMA windows"): reserved payload
   bits → RESERVED_BITS, then BAD_SHAPE, LOCAL_RANGE, HOST_RANGE, WINDOW, and the data- or
   bus-dependent BAD_SHIFT (a shift outside 0..63 in the shift row) and AXI_DECERR (host bytes
   beyond the memory).

It restates the documents and does not call the golden models (it takes only the shift limit
from golden/ops.py, where docs/numerics.md's constant lives), so the fuzzing that uses it
(verif/fuzz.py) checks the golden chip model as well as the RTL; tests/test_fuzz.py checks it
against ``firmware_status`` + ``DeviceModel`` on random descriptors.

:class:`Malformer` draws malformed descriptors: a valid skeleton of an opcode the fault class
applies to, one fault of the class (boundary values one past the limit more often than not),
sometimes a second fault of another class (so the check order matters), redrawn until the oracle
says it fails. A DMA never straddles the end of host memory (the chip learns of the bus error only
after writing the rows before it; see docs/verification.md).
"""
from dataclasses import dataclass, field

from spec.chip import EVENTS, SFU_LUT_ENTRIES, SFU_NORM_MAX_LEN
from spec.commands import decode, encode
from spec.descriptors import (COMMANDS, DESCRIPTOR_FIELDS, DMA_FIELDS, EVENT_FIELDS, GEMM_FIELDS,
                              VEC_FIELDS, Engine, ErrorCode, Opcode)
from golden.ops import SHIFT_MAX      # the largest requantization shift (docs/numerics.md)

M32 = 0xFFFF_FFFF
#: A DECERR fault's DMA starts up to this many bytes past the end of host memory.
DECERR_SLACK = 64

#: Fault classes and the code each produces when it is the only fault.
FAULTS = {
    "opcode": ErrorCode.BAD_OPCODE,
    "flags": ErrorCode.RESERVED_BITS,
    "payload_reserved": ErrorCode.RESERVED_BITS,
    "event": ErrorCode.BAD_EVENT,
    "shape": ErrorCode.BAD_SHAPE,
    "local": ErrorCode.LOCAL_RANGE,
    "host": ErrorCode.HOST_RANGE,
    "window": ErrorCode.WINDOW,
    "shift": ErrorCode.BAD_SHIFT,
    "decerr": ErrorCode.AXI_DECERR,
}
_DMA = (Opcode.DMA_LOAD, Opcode.DMA_STORE)
_EVENT = (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT)
_SFU = tuple(op for op, c in COMMANDS.items() if c.engine == Engine.SFU)
_NORM = (Opcode.LAYERNORM, Opcode.RMSNORM)
#: The opcodes each fault class applies to.
APPLIES = {
    "opcode": tuple(Opcode), "flags": tuple(Opcode),
    "payload_reserved": (*_DMA, Opcode.GEMM, Opcode.VECTOR, *_EVENT, *_SFU),
    "event": _EVENT, "shape": (*_DMA, Opcode.GEMM, Opcode.VECTOR, *_SFU),
    "local": (*_DMA, Opcode.GEMM, Opcode.VECTOR, *_SFU), "host": _DMA, "window": _DMA,
    "shift": (Opcode.VECTOR,), "decerr": _DMA,
}


@dataclass(frozen=True)
class Context:
    """What decides a descriptor's status besides its words."""
    caps: object
    window: tuple            #: the queue's DMA window (base, size)
    host_bytes: int          #: host memory ends here; beyond, the bus answers DECERR
    shifts: dict = field(default_factory=dict)   #: accumulator row -> its int32 shift values


def reserved_fields(layout):
    """The reserved fields of a payload layout (``reserved``, ``reserved0``, ``ops.reserved``)."""
    return [n for n in layout if n.rsplit(".", 1)[-1].startswith("reserved")]


def _reserved(d, layout):
    return any(d[n] for n in reserved_fields(layout))


def expected_status(words, ctx):
    """The ErrorCode descriptor ``words`` ends with when served from a queue (module doc)."""
    d = decode(list(words))
    op = d["opcode"]
    if not isinstance(op, Opcode):
        return ErrorCode.BAD_OPCODE
    if d["flags.reserved"]:
        return ErrorCode.RESERVED_BITS
    layout = COMMANDS[op].fields
    if COMMANDS[op].engine is None:
        if layout is EVENT_FIELDS:
            if _reserved(d, layout):
                return ErrorCode.RESERVED_BITS
            if d["event"] >= EVENTS:
                return ErrorCode.BAD_EVENT
        return ErrorCode.OK
    if _reserved(d, layout):
        return ErrorCode.RESERVED_BITS
    if layout is DMA_FIELDS:
        return _dma(d, ctx)
    if layout is GEMM_FIELDS:
        return _gemm(d, ctx)
    if layout is VEC_FIELDS:
        return _vector(d, ctx)
    if op in _SFU:
        return _sfu(d, op, ctx)
    raise NotImplementedError(f"no checks known for the {op.name} payload")


def dma_span(d):
    """(first host byte, one past the last) of a decoded DMA with ``row_bytes`` > 0."""
    end = (d["host_addr"] + (d["planes"] - 1) * d["host_plane_stride"]
           + (d["rows"] - 1) * d["host_row_stride"] + d["row_bytes"])
    return d["host_addr"], end


def _dma(d, ctx):
    caps = ctx.caps
    acc = bool(d["acc"])
    row, n_rows = (4 * caps.dim, caps.acc_rows) if acc else (caps.dim, caps.spad_rows)
    if d["rows"] == 0 or d["planes"] == 0 or d["row_bytes"] + d["col_offset"] > row:
        return ErrorCode.BAD_SHAPE
    last_row = (d["local_addr"] + (d["planes"] - 1) * d["local_plane_stride"]
                + (d["rows"] - 1) * d["local_row_stride"])
    if last_row >= n_rows:
        return ErrorCode.LOCAL_RANGE
    if d["row_bytes"] == 0:
        return ErrorCode.OK                      # no host byte is touched, none is checked
    lo, hi = dma_span(d)
    if hi > 1 << caps.addr_bits:
        return ErrorCode.HOST_RANGE
    base, size = ctx.window
    if lo < base or hi > base + size:
        return ErrorCode.WINDOW
    if hi > ctx.host_bytes:
        return ErrorCode.AXI_DECERR
    return ErrorCode.OK


def gemm_ends(d, dim):
    """One past the last A, B (scratchpad) and C (accumulator) row a decoded GEMM touches, over
    all its batch items (B's tiles step by ``b_nt_stride`` along n, or along k when transposed)."""
    m, kt, nt, bm1 = d["m"], d["k_tiles"], d["n_tiles"], d["batches_m1"]
    b_steps, b_lin = (kt, nt) if d["b_transpose"] else (nt, kt)
    return (d["a_addr"] + bm1 * d["a_batch_stride"] + (kt - 1) * d["a_kt_stride"] + m,
            d["b_addr"] + bm1 * d["b_batch_stride"] + (b_steps - 1) * d["b_nt_stride"] + b_lin * dim,
            d["c_addr"] + bm1 * d["c_batch_stride"] + (nt - 1) * d["c_nt_stride"] + m)


def _gemm(d, ctx):
    caps = ctx.caps
    if not (d["m"] and d["k_tiles"] and d["n_tiles"]):
        return ErrorCode.BAD_SHAPE
    a_end, b_end, c_end = gemm_ends(d, caps.dim)
    if a_end > caps.spad_rows or b_end > caps.spad_rows or c_end > caps.acc_rows:
        return ErrorCode.LOCAL_RANGE
    return ErrorCode.OK


def sfu_ends(d, op, dim):
    """(scratchpad ends, accumulator ends) of a decoded SFU command: one past the last row of each
    operand (a row of ``length`` elements is ``ceil(length / dim)`` segments ``seg_stride`` apart;
    the LUT's table is ``256 / dim`` rows; gamma and beta one row per segment)."""
    segs = -(-d["length"] // dim)
    last = (segs - 1) * d["seg_stride"] + d["rows"]
    bases = ("a_addr", "b_addr", "dst_addr") if op == Opcode.EMUL else ("src_addr", "dst_addr")
    spad = [d[b] + last for b in bases]
    if op == Opcode.LUT:
        spad.append(d["table_addr"] + SFU_LUT_ENTRIES // dim)
    acc = [d["gamma_addr"] + segs] if op in _NORM else []
    if op == Opcode.LAYERNORM:
        acc.append(d["beta_addr"] + segs)
    return spad, acc


def _sfu(d, op, ctx):
    caps = ctx.caps
    if not (d["rows"] and d["length"]) or (op in _NORM and d["length"] > SFU_NORM_MAX_LEN):
        return ErrorCode.BAD_SHAPE
    spad, acc = sfu_ends(d, op, caps.dim)
    if max(spad) > caps.spad_rows or any(a > caps.acc_rows for a in acc):
        return ErrorCode.LOCAL_RANGE
    return ErrorCode.OK


def vector_rows(d):
    """(accumulator ends, scratchpad ends) of a decoded VECTOR: one past the last row of each
    operand it reads or writes."""
    rows = d["rows"]
    acc = [d["src_addr"] + rows, d["mult_addr"] + 1, d["shift_addr"] + 1]
    spad = [d["dst_addr"] + (1 if d["ops.maxred"] else rows)]
    if d["ops.bias"]:
        acc.append(d["bias_addr"] + 1)
    if d["ops.add"]:
        spad.append(d["res_addr"] + rows)
    return acc, spad


def _vector(d, ctx):
    caps = ctx.caps
    if d["rows"] == 0:
        return ErrorCode.BAD_SHAPE
    acc, spad = vector_rows(d)
    if max(acc) > caps.acc_rows or max(spad) > caps.spad_rows:
        return ErrorCode.LOCAL_RANGE
    if d["shift_addr"] not in ctx.shifts:
        raise KeyError(f"VECTOR shift row {d['shift_addr']} is not one the context knows")
    if any(not 0 <= s <= SHIFT_MAX for s in ctx.shifts[d["shift_addr"]]):
        return ErrorCode.BAD_SHIFT
    return ErrorCode.OK


# ================================================================================= generator
def _field_max(layout, name):
    return (1 << layout[name][1]) - 1


def dma_extent(caps):
    """The largest host span of a skeleton DMA (:meth:`Malformer.skeleton`): the size of the
    scratch area a Malformer needs, and how far past ``decerr + DECERR_SLACK`` a DECERR fault
    reaches (the window must include it)."""
    row = 4 * caps.dim
    stride = row + 3
    return (4 * stride + 7) + 3 * stride + row


class Malformer:
    """Draws malformed descriptors for one queue (see the module doc).

    ``spad`` / ``acc``: ``(lo, hi)`` local rows the skeletons use (a malformed command that wrongly
    ran would write there: keep them apart from live data and watch them); ``scratch``: host bytes
    inside the queue's window for the skeletons' DMA ranges (:func:`dma_extent` bytes);
    ``good_shift`` / ``bad_shift``: accumulator rows of the context's ``shifts`` (in range and
    out of range);
    ``decerr``: a host address beyond the memory (the context's ``host_bytes``).
    """

    def __init__(self, rng, ctx, *, spad, acc, scratch, good_shift, bad_shift, decerr,
                 p_second=0.35):
        self.rng, self.ctx = rng, ctx
        self.spad, self.acc, self.scratch = spad, acc, scratch
        self.good_shift, self.bad_shift, self.decerr = good_shift, bad_shift, decerr
        self.p_second = p_second

    def _int(self, lo, hi):
        """Uniform in [lo, hi] (inclusive)."""
        return int(self.rng.integers(lo, hi + 1))

    def _pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def _past(self, limit, top):
        """A value > limit: limit + 1 (the boundary) half of the time, else up to ``top``."""
        return limit + 1 if self.rng.random() < 0.5 or limit + 1 >= top else self._int(limit + 1, top)

    # ------------------------------------------------------------------ valid skeletons
    def skeleton(self, op):
        """Payload fields of a valid ``op`` descriptor (in the context's window and rows)."""
        caps, r = self.ctx.caps, self._int
        if op in _DMA:
            acc = bool(self.rng.random() < 0.3)
            lrb = 4 * caps.dim if acc else caps.dim
            lo, hi = self.acc if acc else self.spad
            rows, planes = r(1, 4), r(1, 2)
            rb = r(1, lrb)
            hs = rb + r(0, 3)
            hp = rows * hs + r(0, 7)
            span = (planes - 1) * hp + (rows - 1) * hs + rb
            return dict(host_addr=r(self.scratch[0], self.scratch[1] - span), host_row_stride=hs,
                        host_plane_stride=hp, local_addr=r(lo, hi - rows * planes),
                        local_row_stride=1, local_plane_stride=rows, row_bytes=rb,
                        col_offset=r(0, lrb - rb), rows=rows, planes=planes, acc=int(acc))
        if op == Opcode.GEMM:
            m, kt, nt = r(1, 2 * caps.dim), r(1, 2), r(1, 2)
            (slo, shi), (alo, ahi) = self.spad, self.acc
            tr = r(0, 1)
            a_stride, b_stride, c_stride = m, (nt if tr else kt) * caps.dim, m
            # batch items on the same rows (strides 0) or side by side (stride = one item)
            bm1, side = (r(0, 2), r(0, 1)) if self.rng.random() < 0.4 else (0, 0)
            batch = bm1 + 1 if side else 1
            return dict(a_addr=r(slo, shi - batch * kt * m),
                        b_addr=r(slo, shi - batch * nt * kt * caps.dim),
                        c_addr=r(alo, ahi - batch * nt * m), m=m, k_tiles=kt, n_tiles=nt,
                        a_kt_stride=a_stride, b_nt_stride=b_stride, c_nt_stride=c_stride,
                        accumulate=r(0, 1), b_transpose=tr, batches_m1=bm1,
                        a_batch_stride=side * kt * m, b_batch_stride=side * nt * kt * caps.dim,
                        c_batch_stride=side * nt * m)
        if op == Opcode.VECTOR:
            rows = r(1, 4)
            (slo, shi), (alo, ahi) = self.spad, self.acc
            return dict(src_addr=r(alo, ahi - rows), dst_addr=r(slo, shi - rows),
                        rows=rows, bias_addr=r(alo, ahi - 1), mult_addr=r(alo, ahi - 1),
                        shift_addr=self.good_shift, res_addr=r(slo, shi - rows),
                        zero_point=r(0, 255),
                        **{f"ops.{o}": r(0, 1) for o in ("bias", "relu", "add", "maxred")})
        if op in _EVENT:
            return dict(event=r(0, EVENTS - 1), value=r(0, M32))
        if op in _SFU:
            return self._sfu_skeleton(op)
        return {}

    def _sfu_skeleton(self, op):
        """Every operand on the same rows (in place: the only overlap the SFU supports), gamma
        and beta in the accumulator rows, the LUT's table anywhere."""
        caps, r = self.ctx.caps, self._int
        (slo, shi), (alo, ahi) = self.spad, self.acc
        rows, length = r(1, 3), r(1, 2 * caps.dim)
        stride = rows + r(0, 2)
        segs = -(-length // caps.dim)
        base = r(slo, shi - ((segs - 1) * stride + rows))
        f = dict(rows=rows, length=length, seg_stride=stride, dst_addr=base)
        if op == Opcode.EMUL:
            f.update(a_addr=base, b_addr=base, mult=r(0, 0xFFFF), shift=r(0, 63),
                     a_zero_point=r(0, 255), b_zero_point=r(0, 255), out_zero_point=r(0, 255))
            return f
        f["src_addr"] = base
        if op == Opcode.SOFTMAX:
            f.update(mult=r(0, 0xFFFF), causal=r(0, 1), mask_offset=r(0, 3))
        elif op == Opcode.LUT:
            f["table_addr"] = r(slo, shi - SFU_LUT_ENTRIES // caps.dim)
        else:
            f.update(gamma_addr=r(alo, ahi - segs), beta_addr=r(alo, ahi - segs), shift=r(0, 63),
                     in_zero_point=r(0, 255), out_zero_point=r(0, 255), eps_mant=r(0, 0xFFFF),
                     eps_exp=r(0, 63))
        return f

    # ------------------------------------------------------------------ faults on payload fields
    def _shape(self, op, f):
        if op in _DMA:
            lrb = 4 * self.ctx.caps.dim if f["acc"] else self.ctx.caps.dim
            how = self._pick(("rows", "planes", "bytes"))
            if how == "bytes":
                total = self._past(lrb, 2 * 255)
                f["col_offset"] = self._int(max(0, total - 255), min(255, total))
                f["row_bytes"] = total - f["col_offset"]
            else:
                f[how] = 0
        elif op == Opcode.GEMM:
            f[self._pick(("m", "k_tiles", "n_tiles"))] = 0
        elif op in _SFU:
            how = self._pick(("rows", "length", "long") if op in _NORM else ("rows", "length"))
            if how == "long":
                f["length"] = self._int(SFU_NORM_MAX_LEN + 1, _field_max(COMMANDS[op].fields, "length"))
            else:
                f[how] = 0
        else:
            f["rows"] = 0

    def _local(self, op, f):
        if op == Opcode.GEMM:
            return self._local_gemm(f)
        if op in _SFU:
            return self._local_sfu(op, f)
        if op == Opcode.VECTOR:
            return self._local_vector(f)
        caps = self.ctx.caps
        last = lambda: (f["local_addr"] + (f["planes"] - 1) * f["local_plane_stride"]
                        + (f["rows"] - 1) * f["local_row_stride"])
        self._push(f, "local", last, (caps.acc_rows if f["acc"] else caps.spad_rows) - 1, "host")

    def _push(self, f, prefix, end, limit, other):
        """Move one DMA field so that ``end()`` (of the ``prefix`` side: ``local`` or ``host``)
        passes ``limit``, by one or further: the start address, a stride, or a count (``rows`` /
        ``planes``, up to 65535; sometimes both counts large, up to 65535 x 65535 rows). A count
        raised this way would move the ``other`` side's range too: that side's stride for it
        becomes 0, so only this side's check fails."""
        how = self._pick(("addr", "row_stride", "plane_stride", "rows", "planes"))
        dim = "rows" if how in ("row_stride", "rows") else "planes"
        stride = f"{prefix}_{'row' if dim == 'rows' else 'plane'}_stride"
        if how == "addr":
            key, k, off = f"{prefix}_addr", 1, 0
        elif how.endswith("_stride"):
            f[dim] = max(f[dim], 2)
            key, k, off = stride, f[dim] - 1, 0
        else:
            f[stride] = max(f[stride], 1)
            f[f"{other}_{'row' if dim == 'rows' else 'plane'}_stride"] = 0
            key, k, off = dim, f[stride], 1
            if self.rng.random() < 0.3:     # the other count large too (strides 0: same range)
                second = "planes" if dim == "rows" else "rows"
                f[second] = self._int(1000, _field_max(DMA_FIELDS, second))
                for side in ("local", "host"):
                    f[f"{side}_{'plane' if second == 'planes' else 'row'}_stride"] = 0
        rest = end() - k * (f[key] - off)          # end() = rest + k * (f[key] - off)
        f[key] = off + self._past((limit - rest) // k, _field_max(DMA_FIELDS, key) - off)

    def _local_gemm(self, f):
        """One of A, B, C (its address, its tile stride, its batch stride, or m) one row past
        its memory."""
        spad, acc, dim = self.ctx.caps.spad_rows, self.ctx.caps.acc_rows, self.ctx.caps.dim
        how = self._pick(("a", "a_stride", "b", "b_stride", "c", "c_stride", "m",
                          "a_batch", "b_batch", "c_batch"))
        if how.endswith("_stride"):
            tiles = "k_tiles" if how == "a_stride" or (how == "b_stride" and f["b_transpose"]) \
                else "n_tiles"
            f[tiles] = max(f[tiles], 2)
        if how.endswith("_batch"):
            f["batches_m1"] = max(f["batches_m1"], 1)
        kt, nt = f["k_tiles"], f["n_tiles"]
        side = {"a": 0, "b": 1, "c": 2, "m": 2}[how[0]]      # m moves C's end (A's fits)
        end = lambda: gemm_ends(f, dim)[side]
        name, k = {
            "a": ("a_addr", 1), "a_stride": ("a_kt_stride", kt - 1),
            "b": ("b_addr", 1),
            "b_stride": ("b_nt_stride", (kt if f["b_transpose"] else nt) - 1),
            "c": ("c_addr", 1), "c_stride": ("c_nt_stride", nt - 1), "m": ("m", 1),
            "a_batch": ("a_batch_stride", f["batches_m1"]),
            "b_batch": ("b_batch_stride", f["batches_m1"]),
            "c_batch": ("c_batch_stride", f["batches_m1"])}[how]
        limit = acc if side == 2 else spad
        rest = end() - k * f[name]
        f[name] = self._past((limit - rest) // k, _field_max(GEMM_FIELDS, name))

    def _local_sfu(self, op, f):
        """One operand (its address, the segment stride, or rows) one row past its memory."""
        caps, layout = self.ctx.caps, COMMANDS[op].fields
        spad_names = ["a_addr", "b_addr", "dst_addr"] if op == Opcode.EMUL else ["src_addr", "dst_addr"]
        acc_names = {Opcode.LAYERNORM: ["gamma_addr", "beta_addr"], Opcode.RMSNORM: ["gamma_addr"]}
        table = ["table_addr"] if op == Opcode.LUT else []
        name = self._pick(spad_names + acc_names.get(op, []) + table + ["seg_stride", "rows"])
        if name == "seg_stride":
            f["length"] = max(f["length"], caps.dim + 1)
        segs = -(-f["length"] // caps.dim)
        if name in acc_names.get(op, []):
            end, limit, k = lambda: f[name] + segs, caps.acc_rows, 1
        elif name == "table_addr":
            end, limit, k = lambda: f[name] + SFU_LUT_ENTRIES // caps.dim, caps.spad_rows, 1
        else:
            end = lambda: f["dst_addr"] + (segs - 1) * f["seg_stride"] + f["rows"]
            if name in spad_names:
                end = lambda: f[name] + (segs - 1) * f["seg_stride"] + f["rows"]
            limit, k = caps.spad_rows, segs - 1 if name == "seg_stride" else 1
        rest = end() - k * f[name]
        f[name] = self._past((limit - rest) // k, _field_max(layout, name))

    def _local_vector(self, f):
        """One operand's rows one past its memory (bias and residual: with their op enabled)."""
        caps = self.ctx.caps
        operand = self._pick(("src", "mult", "shift", "bias", "dst", "res"))
        if operand == "bias":
            f["ops.bias"] = 1
        if operand == "res":
            f["ops.add"] = 1
        n = caps.spad_rows if operand in ("dst", "res") else caps.acc_rows
        length = {"src": f["rows"], "res": f["rows"],
                  "dst": 1 if f["ops.maxred"] else f["rows"]}.get(operand, 1)
        f[f"{operand}_addr"] = self._past(n - length, _field_max(VEC_FIELDS, f"{operand}_addr"))

    def _host(self, op, f):
        """The host range ends past the address space (by one byte, or further)."""
        f["row_bytes"] = max(f["row_bytes"], 1)
        self._push(f, "host", lambda: dma_span(f)[1], 1 << self.ctx.caps.addr_bits, "local")

    def _window(self, op, f):
        """The host range starts below the window or ends past it, inside host memory."""
        base, size = self.ctx.window
        f["row_bytes"] = max(f["row_bytes"], 1)
        lo, hi = dma_span(f)
        if base >= 1 and self.rng.random() < 0.5:
            f["host_addr"] = base - (1 if self.rng.random() < 0.5 else self._int(1, base))
        else:
            end = self._past(base + size, max(base + size + 1, self.ctx.host_bytes))
            f["host_addr"] = max(0, end - (hi - lo))

    def _decerr(self, op, f):
        """The host range lies beyond host memory (within the window the caller widened)."""
        f["row_bytes"] = max(f["row_bytes"], 1)
        f["host_addr"] = self.decerr + self._int(0, DECERR_SLACK)

    def _payload_reserved(self, op, words):
        layout = COMMANDS[op].fields
        lsb, width = layout[self._pick(reserved_fields(layout))]
        for _ in range(self._int(1, 3)):
            bit = lsb + self._int(0, width - 1)
            words[bit // 32] |= 1 << (bit % 32)

    # ------------------------------------------------------------------ drawing
    def fault(self, fault):
        """(words, expected status, faults applied) of a malformed descriptor of class ``fault``."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault class {fault!r}; classes: {sorted(FAULTS)}")
        for _ in range(100):
            op = self._pick(APPLIES[fault])
            applied = [fault]
            if self.rng.random() < self.p_second:
                others = [c for c in FAULTS if c != fault and op in APPLIES[c]]
                applied.append(self._pick(others))
            words = self._apply(op, applied)
            if words is None:
                continue
            code = expected_status(words, self.ctx)
            if code != ErrorCode.OK:
                return words, code, tuple(applied)
        raise RuntimeError(f"no failing descriptor of class {fault!r} in 100 draws")

    def _apply(self, op, faults):
        f = self.skeleton(op)
        for c in faults:
            fn = {"shape": self._shape, "local": self._local, "host": self._host,
                  "window": self._window, "decerr": self._decerr}.get(c)
            if fn is not None:
                fn(op, f)
            elif c == "shift":
                f["shift_addr"] = self.bad_shift
            elif c == "event":
                f["event"] = self._int(EVENTS, _field_max(EVENT_FIELDS, "event"))
        try:
            words = encode(op, irq=bool(self.rng.random() < 0.2), tag=self._int(0, 0xFFFF), **f)
        except ValueError:
            return None        # a field pushed past its width: draw again
        if op in _DMA and f["row_bytes"]:
            lo, hi = dma_span(f)
            if lo < self.ctx.host_bytes < hi:
                return None    # straddles the end of host memory (module doc)
        if "payload_reserved" in faults:
            self._payload_reserved(op, words)
        if "flags" in faults:
            lsb, width = DESCRIPTOR_FIELDS["flags.reserved"]
            words[0] |= self._int(1, (1 << width) - 1) << lsb
        if "opcode" in faults:
            words[0] = (words[0] & ~0xFF) | self._int(max(Opcode) + 1, 0xFF)
        return words

    def edge(self):
        """A valid descriptor at the edge of the rules (the oracle says OK): a NOP or BARRIER with
        a random payload (ignored); a DMA with ``row_bytes`` 0 and random host fields (no host
        byte is touched or checked: a load zeroes its local rows, a store writes nothing); or a
        GEMM of up to 256 batch items on the same rows (batch strides 0), B transposed or not.
        The local rows are the skeleton's."""
        kind = self._pick(("benign", "dma", "gemm"))
        if kind == "benign":
            words = encode(self._pick((Opcode.NOP, Opcode.BARRIER)), tag=self._int(0, 0xFFFF))
            return [words[0]] + [self._int(0, M32) for _ in words[1:]]
        if kind == "dma":
            op = self._pick(_DMA)
            f = self.skeleton(op)
            lrb = 4 * self.ctx.caps.dim if f["acc"] else self.ctx.caps.dim
            f.update(row_bytes=0, col_offset=self._int(0, lrb),
                     **{k: self._int(0, _field_max(DMA_FIELDS, k))
                        for k in ("host_addr", "host_row_stride", "host_plane_stride")})
            words = encode(op, tag=self._int(0, 0xFFFF), **f)
        else:
            f = self.skeleton(Opcode.GEMM)
            f.update(batches_m1=self._int(0, 255), a_batch_stride=0, b_batch_stride=0,
                     c_batch_stride=0)
            words = encode(Opcode.GEMM, tag=self._int(0, 0xFFFF), **f)
        if expected_status(words, self.ctx) != ErrorCode.OK:
            raise AssertionError(f"edge descriptor {[hex(w) for w in words]} is not valid")
        return words
