"""Functional model of a whole Kaki chip: executes descriptors on NumPy memories.

It follows the descriptor contract (hdl_gen/descriptor.py docstrings, docs/numerics.md) with the
arithmetic of :mod:`golden.ops`, not the RTL: commands run one at a time in submission order,
which is the result any legal RTL schedule must reproduce. Errors are reported with the same
:class:`ErrorCode` the hardware uses; a failing command changes nothing.

Check order when several faults hold at once: RESERVED_BITS, BAD_SHAPE, LOCAL_RANGE, HOST_RANGE,
WINDOW (DMA commands forwarded from a queue, docs/queues.md "DMA windows"), then the
data-dependent BAD_SHIFT, BUS_TIMEOUT (the black hole) and AXI errors. An opcode no engine
serves is BAD_OPCODE before any other check; that includes SIGNAL_EVENT, WAIT_EVENT and BARRIER,
which only mean something in a queue (the firmware runs them; the hardware dispatcher behind
``CMD_SUBMIT`` only knows engines).
"""
from dataclasses import dataclass, field

import numpy as np

from spec import chip, commands
from spec.descriptors import COMMANDS, DMA_FIELDS, ErrorCode, Opcode

from . import ops
from . import special_functions as sf


@dataclass
class Retired:
    opcode: object
    tag: int
    error: ErrorCode


class _Fault(Exception):
    def __init__(self, code):
        self.code = code


#: engine opcode -> the name of its method (``_dma_load``, ...)
_HANDLER_NAMES = {op: f"_{op.name.lower()}" for op in Opcode}


def _rows(mem, base, counts, strides):
    """A view of rows ``base + sum(i_j * strides[j])`` of ``mem`` (rows of a 2-D memory) for
    ``i_j`` in ``range(counts[j])``: shape ``(*counts, row length)``. The caller checked that the
    rows are inside ``mem``; a view with overlapping rows is only read."""
    rs, es = mem.strides
    return np.ndarray((*counts, mem.shape[1]), mem.dtype, mem, base * rs,
                      (*(s * rs for s in strides), es))


def _signed32(row):
    return row.astype(np.int64)


@dataclass
class DeviceModel:
    """A chip with capabilities ``caps`` and ``host_bytes`` of host memory at address 0.

    Host accesses beyond ``host_bytes`` answer DECERR (as an AXI interconnect would); addresses
    beyond ``2**caps.addr_bits`` are refused up front with HOST_RANGE. ``blackhole`` (``(base,
    limit)`` or None): host memory that never answers; a DMA command one of whose rows has a bus
    beat (``caps.dma_data_bytes``, aligned) overlapping ``[base, limit)`` fails with BUS_TIMEOUT,
    whatever lies outside (the chip's bus timeout; a test puts whole commands in the hole, since
    the RTL loads the rows before the first one that reaches it).
    """
    caps: object
    host_bytes: int = 1 << 20
    retired: list = field(default_factory=list)
    blackhole: tuple = None
    #: the chip-to-chip link (docs/cluster_hw.md): ``peer`` is the DeviceModel at the other end of
    #: this chip's outgoing link (None: the chip has no link; DMA_PEER fails with LINK_TIMEOUT),
    #: ``chip_id`` this chip's index (its receiver refuses packets for another), ``link_failed``
    #: the sender's sticky failure (a peer timeout; cleared by a retrain).
    peer: object = None
    chip_id: int = 0
    link_failed: bool = False

    def __post_init__(self):
        self._window = None
        c = self.caps
        self.host = np.zeros(self.host_bytes, dtype=np.uint8)
        self.spad = np.zeros((c.spad_rows, c.dim), dtype=np.int8)
        self.acc = np.zeros((c.acc_rows, c.dim), dtype=np.int32)
        #: what the link's receiver did: events set ``(event, value)`` in order, and errors
        #: (:class:`LinkError` values, hdl_gen/chip_link.py) of refused packets
        self.rx_events, self.rx_errors = [], []
        #: called with ``(event, value)`` when a received packet sets an event (a chip model's
        #: event counters), after its rows are written
        self.on_event = None

    # ------------------------------------------------------------------ submission
    def submit(self, words, window=None):
        """Execute one descriptor; return its ErrorCode (also appended to ``retired``).

        ``window`` is ``(base, size)``: the DMA window of the queue the command came from (a DMA
        command touching a host byte outside ``[base, base + size)`` fails with WINDOW); ``None``
        for direct submission, which is not windowed.
        """
        d = commands.decode(words)
        opcode = d["opcode"]
        try:
            self._precheck(d)
            if opcode == Opcode.NOP:
                return ErrorCode.OK
            self._window = window
            self._handler(opcode)(d)
            code = ErrorCode.OK
        except _Fault as f:
            code = f.code
        self.retired.append(Retired(opcode, d["tag"], code))
        return code

    @staticmethod
    def _precheck(d):
        """The checks before an engine sees the command: opcode, reserved flag and payload bits."""
        row = COMMANDS.get(d["opcode"])
        if d["opcode"] != Opcode.NOP and (row is None or row.engine is None):
            raise _Fault(ErrorCode.BAD_OPCODE)
        if d["flags.reserved"] or d.get("reserved") or d.get("ops.reserved"):
            raise _Fault(ErrorCode.RESERVED_BITS)

    def reaches_blackhole(self, words, window=None):
        """``words`` is a DMA command that passes every check and touches the black hole: on the
        chip it waits on the bus (BUS_TIMEOUT once the bus timeout expires, forever if it is off).
        Executes nothing."""
        if self.blackhole is None:
            return False
        d = commands.decode(words)
        if COMMANDS.get(d["opcode"]) is None or COMMANDS[d["opcode"]].fields is not DMA_FIELDS:
            return False
        try:
            self._precheck(d)
            self._window = window
            self._dma_rows(d)
        except _Fault as f:
            return f.code == ErrorCode.BUS_TIMEOUT
        return False

    def in_blackhole(self, addr, n):
        """The bus beats holding host bytes ``[addr, addr + n)`` overlap the black hole."""
        if self.blackhole is None or n <= 0:
            return False
        base, limit = self.blackhole
        db = self.caps.dma_data_bytes
        return addr - addr % db < limit and addr + n + -(addr + n) % db > base

    def _handler(self, opcode):
        """The method executing an engine opcode: ``_<name in lower case>`` (``_dma_load``, ...)."""
        name = _HANDLER_NAMES.get(opcode) or f"_{opcode.name.lower()}"
        handler = getattr(self, name, None)
        if handler is None:
            raise NotImplementedError(f"golden.device_model has no _{opcode.name.lower()} for {opcode.name}")
        return handler

    def run(self, program):
        """Submit every descriptor of ``program`` (a list of word lists); return the error codes."""
        return [self.submit(w) for w in program]

    # ------------------------------------------------------------------ DMA
    def _dma_rows(self, d):
        """Validate a DMA; return (local memory as bytes view, local row indices, row bytes)."""
        view, row_bytes_local = self._dma_check(d)
        p = np.arange(d["planes"])[:, None]
        r = np.arange(d["rows"])[None, :]
        local = (d["local_addr"] + p * d["local_plane_stride"] + r * d["local_row_stride"]).ravel()
        return view, local, row_bytes_local

    def _dma_check(self, d):
        """Validate a DMA; return (local memory as bytes view, row bytes)."""
        acc = bool(d["acc"])
        mem = self.acc if acc else self.spad
        row_bytes_local = self.caps.dim * (4 if acc else 1)
        if d["rows"] == 0 or d["planes"] == 0 or d["row_bytes"] + d["col_offset"] > row_bytes_local:
            raise _Fault(ErrorCode.BAD_SHAPE)
        # Strides are unsigned: the last row of the last plane is the highest. Checked from the
        # fields, not from the row list, which a rejected command may make 65535 x 65535 long.
        if (d["local_addr"] + (d["planes"] - 1) * d["local_plane_stride"]
                + (d["rows"] - 1) * d["local_row_stride"]) >= mem.shape[0]:
            raise _Fault(ErrorCode.LOCAL_RANGE)
        if d["row_bytes"]:
            last = (d["host_addr"] + (d["planes"] - 1) * d["host_plane_stride"]
                    + (d["rows"] - 1) * d["host_row_stride"] + d["row_bytes"] - 1)
            if last >= 1 << self.caps.addr_bits:
                raise _Fault(ErrorCode.HOST_RANGE)
            if self._window is not None:
                base, size = self._window
                if d["host_addr"] < base or last + 1 > base + size:
                    raise _Fault(ErrorCode.WINDOW)
            if self.blackhole is not None and any(self.in_blackhole(a, d["row_bytes"])
                                                  for a in self._host_rows(d)):
                raise _Fault(ErrorCode.BUS_TIMEOUT)
            if last >= self.host_bytes:
                raise _Fault(ErrorCode.AXI_DECERR)
        return mem.view(np.uint8).reshape(mem.shape[0], row_bytes_local), row_bytes_local

    @staticmethod
    def _host_rows(d):
        """The host address of every row of a decoded DMA command, in execution order."""
        p = np.arange(d["planes"], dtype=np.int64)[:, None]
        r = np.arange(d["rows"], dtype=np.int64)[None, :]
        return (d["host_addr"] + p * d["host_plane_stride"] + r * d["host_row_stride"]).ravel().tolist()

    @staticmethod
    def _dma_index(d):
        """Host byte index of every byte a checked DMA command moves (``ops.dma_load``'s and
        ``ops.dma_store``'s, without their argument checks: ``_dma_rows`` made the command valid)."""
        return ops._dma_index(d["host_addr"], d["host_row_stride"], d["host_plane_stride"],
                              d["row_bytes"], d["rows"], d["planes"])

    def _host_view(self, d):
        """The host bytes of a checked DMA command, ``(planes, rows, row_bytes)``, as a view."""
        return np.ndarray((d["planes"], d["rows"], d["row_bytes"]), np.uint8, self.host,
                          d["host_addr"], (d["host_plane_stride"], d["host_row_stride"], 1))

    def _dma_load(self, d):
        rows, planes, lrs, lps = d["rows"], d["planes"], d["local_row_stride"], d["local_plane_stride"]
        if (rows > 1 and not lrs) or (planes > 1 and lps < (rows - 1) * lrs + 1):
            # local rows written more than once: row by row in (plane, row) order, as the
            # reference functions go
            view, local, lrb = self._dma_rows(d)
            if d["row_bytes"] == 0:
                view[local] = 0
                return
            view[local] = ops._dma_gather(self.host, self._dma_index(d), d["col_offset"], lrb)
            return
        view, _ = self._dma_check(d)
        dst = _rows(view, d["local_addr"], (planes, rows), (lps, lrs))    # distinct rows
        rb, c = d["row_bytes"], d["col_offset"]
        if rb == 0:
            dst[...] = 0
            return
        if c:                                          # (an empty slice is left alone)
            dst[..., :c] = 0
        dst[..., c:c + rb] = self._host_view(d)
        if c + rb < dst.shape[-1]:
            dst[..., c + rb:] = 0

    def _dma_store(self, d):
        view, _ = self._dma_check(d)
        rb, c = d["row_bytes"], d["col_offset"]
        if rb == 0:
            return
        rows, planes, hrs, hps = d["rows"], d["planes"], d["host_row_stride"], d["host_plane_stride"]
        src = _rows(view, d["local_addr"], (planes, rows), (d["local_plane_stride"],
                                                            d["local_row_stride"]))[..., c:c + rb]
        disjoint = ((rows == 1 or hrs >= rb) and (planes == 1 or hps >= (rows - 1) * hrs + rb)
                    # or the planes interleaved inside each row's step (a transposing store)
                    or (planes == 1 or hps >= rb) and (rows == 1 or hrs >= (planes - 1) * hps + rb))
        if not disjoint:
            starts = np.sort((np.arange(planes)[:, None] * hps + np.arange(rows) * hrs).ravel())
            disjoint = bool((np.diff(starts) >= rb).all())
        if disjoint:                  # no host byte written twice: in place through a view
            self._host_view(d)[...] = src
        else:                         # ops.dma_store's result (the later row wins), in place
            ops._dma_scatter(self.host, self._dma_index(d), src.reshape(-1, rb))

    # ------------------------------------------------------------------ chip-to-chip link
    def _dma_peer(self, d):
        """DMA_PEER: local rows -> the peer's memory (+ its event). Checks in the RTL's order
        (hdl_gen/peer_engine.py): reserved bits, rows 0, rows outside the memory (local or
        peer: the chips have the same memories), the event, then the link."""
        c = self.caps
        if d["reserved0"]:
            raise _Fault(ErrorCode.RESERVED_BITS)
        n = d["rows"]
        acc = bool(d["acc"])
        if n == 0 or (d["add"] and not acc):
            raise _Fault(ErrorCode.BAD_SHAPE)
        mem = self.acc if acc else self.spad
        if d["local_addr"] + n > mem.shape[0] or d["peer_addr"] + n > mem.shape[0]:
            raise _Fault(ErrorCode.LOCAL_RANGE)
        if d["signal"] and d["event"] >= chip.EVENTS:
            raise _Fault(ErrorCode.BAD_EVENT)
        if self.peer is None or self.link_failed:
            raise _Fault(ErrorCode.LINK_TIMEOUT)
        rows = mem[d["local_addr"]:d["local_addr"] + n].copy()
        self.peer.receive(d["dest"], acc, d["peer_addr"], rows,
                          (d["event"], d["value"]) if d["signal"] else None, add=bool(d["add"]))

    def receive(self, dest, acc, addr, rows, signal=None, add=False):
        """The link's receiver: a well-formed packet of ``rows`` for memory ``acc`` from ``addr``
        (written, or with ``add`` added into the accumulator rows, wrapping int32), then the
        event ``signal`` (``(event, value)`` or None). A packet for another chip is
        refused whole (BAD_DEST: of the receiver's checks, the only one a DMA_PEER that passed
        the sender's can fail; a link without faults corrupts nothing)."""
        if dest != self.chip_id:
            self.rx_errors.append(chip.LINK_ERRORS["BAD_DEST"])
            return
        mem = self.acc if acc else self.spad
        if add:
            np.add(mem[addr:addr + len(rows)], rows, out=mem[addr:addr + len(rows)])  # int32: wraps
        else:
            mem[addr:addr + len(rows)] = rows
        if signal is not None:
            self.rx_events.append(signal)
            if self.on_event is not None:
                self.on_event(*signal)

    # ------------------------------------------------------------------ GEMM
    def _gemm(self, d):
        dim = self.caps.dim
        m, kt, nt, batches = d["m"], d["k_tiles"], d["n_tiles"], d["batches_m1"] + 1
        if m == 0 or kt == 0 or nt == 0:
            raise _Fault(ErrorCode.BAD_SHAPE)
        # B's tiles step by b_nt_stride along n (k along consecutive rows); transposed, along k.
        b_steps, b_lin = (kt, nt) if d["b_transpose"] else (nt, kt)
        if (d["a_addr"] + (batches - 1) * d["a_batch_stride"] + (kt - 1) * d["a_kt_stride"] + m
                > self.caps.spad_rows
                or d["b_addr"] + (batches - 1) * d["b_batch_stride"]
                + (b_steps - 1) * d["b_nt_stride"] + b_lin * dim > self.caps.spad_rows
                or d["c_addr"] + (batches - 1) * d["c_batch_stride"]
                + (nt - 1) * d["c_nt_stride"] + m > self.caps.acc_rows):
            raise _Fault(ErrorCode.LOCAL_RANGE)
        for h in range(batches):
            self._gemm_one(d, d["a_addr"] + h * d["a_batch_stride"],
                           d["b_addr"] + h * d["b_batch_stride"],
                           d["c_addr"] + h * d["c_batch_stride"])

    def _gemm_one(self, d, a_addr, b_addr, c_addr):
        """One batch item: all k-tiles of a C tile in one product, A as (m, K) with K =
        k_tiles*dim (wrapping after each k-tile or only the total is the same mod 2**32); the
        operands are strided views of the memories (``_gemm`` checked their ranges)."""
        dim, m, kt, nt = self.caps.dim, d["m"], d["k_tiles"], d["n_tiles"]
        k = kt * dim
        # K <= ops.F32_EXACT_K (every product the chip's scratchpad holds at dim 8): float32
        # operands made straight from the strided views, the exact int32 product (ops._gemm_f32),
        # C added with int32 wrap-around, which is ops._gemm's wrap32(C + A @ B).
        f32 = k <= ops.F32_EXACT_K
        dt = np.float32 if f32 else np.int8
        a = _rows(self.spad, a_addr, (kt, m), (d["a_kt_stride"], 1)).transpose(1, 0, 2)
        a = a.astype(dt).reshape(m, k)
        if d["b_transpose"]:      # row b_addr + t*stride + n holds B[t*dim:(t+1)*dim, n]
            b = _rows(self.spad, b_addr, (kt, nt * dim), (d["b_nt_stride"], 1))
            b = b.transpose(0, 2, 1).astype(dt).reshape(k, nt * dim)
        else:                     # tile n: rows b_addr + n*stride .. + k
            b = _rows(self.spad, b_addr, (nt, k), (d["b_nt_stride"], 1))
            b = b.transpose(1, 0, 2).astype(dt).reshape(k, nt * dim)

        def product(b, c_init):
            if not f32:
                return ops._gemm(a, b, c_init, serial=True)
            p = ops._gemm_f32(a, b, serial=True)
            if c_init is not None:
                p += c_init                           # int32: wraps modulo 2^32
            return p
        if nt > 1 and d["c_nt_stride"] < m:        # C tiles overlap: one after the other
            for n in range(nt):
                c0 = c_addr + n * d["c_nt_stride"]
                c_init = self.acc[c0:c0 + m] if d["accumulate"] else None
                self.acc[c0:c0 + m] = product(b[:, n * dim:(n + 1) * dim], c_init)
            return
        # Disjoint C tiles: all of them in one product, A times B's tiles side by side.
        c = _rows(self.acc, c_addr, (nt, m), (d["c_nt_stride"], 1))            # (nt, m, dim)
        c_init = c.transpose(1, 0, 2).reshape(m, nt * dim) if d["accumulate"] else None
        c[...] = product(b, c_init).reshape(m, nt, dim).transpose(1, 0, 2)

    # ------------------------------------------------------------------ vector unit
    def _vector(self, d):
        rows = d["rows"]
        if rows == 0:
            raise _Fault(ErrorCode.BAD_SHAPE)
        out_rows = 1 if d["ops.maxred"] else rows
        acc_rows = [d["src_addr"] + rows, d["mult_addr"] + 1, d["shift_addr"] + 1]
        if d["ops.bias"]:
            acc_rows.append(d["bias_addr"] + 1)
        spad_rows = [d["dst_addr"] + out_rows]
        if d["ops.add"]:
            spad_rows.append(d["res_addr"] + rows)
        if max(acc_rows) > self.caps.acc_rows or max(spad_rows) > self.caps.spad_rows:
            raise _Fault(ErrorCode.LOCAL_RANGE)
        zp = d["zero_point"] - 256 if d["zero_point"] & 0x80 else d["zero_point"]
        shift = self.acc[d["shift_addr"]].astype(np.int64)
        s = shift.tolist()                  # a few lanes: Python's min and max are cheaper
        if min(s) < 0 or max(s) > ops.SHIFT_MAX:
            raise _Fault(ErrorCode.BAD_SHIFT)
        residual = None
        if d["ops.add"]:
            residual = self.spad[d["res_addr"]:d["res_addr"] + rows]
        # ops.vector_epilogue without its argument checks (the operands are valid by construction)
        y = ops._vector_epilogue(
            self.acc[d["src_addr"]:d["src_addr"] + rows],
            self.acc[d["bias_addr"]] if d["ops.bias"] else None, self.acc[d["mult_addr"]], shift,
            zp, bool(d["ops.relu"]), residual, bool(d["ops.maxred"]))
        self.spad[d["dst_addr"]:d["dst_addr"] + out_rows] = y

    # ------------------------------------------------------------------ special-function unit
    def _segments(self, base, d):
        """Scratchpad rows ``(rows, segments)`` of a logical-row operand at ``base`` (element
        ``j`` of row ``r`` in lane ``j % dim`` of row ``base + (j // dim) * seg_stride + r``)."""
        segs = -(-d["length"] // self.caps.dim)
        return base + d["seg_stride"] * np.arange(segs)[None, :] + np.arange(d["rows"])[:, None]

    def _sfu_check(self, d, spad_bases, acc_bases=(), max_len=chip.SFU_MAX_LEN):
        if d["rows"] == 0 or d["length"] == 0 or d["length"] > max_len:
            raise _Fault(ErrorCode.BAD_SHAPE)
        segs = -(-d["length"] // self.caps.dim)
        last = (segs - 1) * d["seg_stride"] + d["rows"]
        if any(b + last > self.caps.spad_rows for b in spad_bases) or \
                any(b + segs > self.caps.acc_rows for b in acc_bases):
            raise _Fault(ErrorCode.LOCAL_RANGE)

    def _seg_view(self, base, d):
        """The scratchpad rows of :meth:`_segments` as a strided view ``(rows, segments, dim)``
        (``_sfu_check`` checked the range)."""
        segs = -(-d["length"] // self.caps.dim)
        return _rows(self.spad, base, (d["rows"], segs), (1, d["seg_stride"]))

    def _logical(self, base, d):
        rows = self._seg_view(base, d)                           # (rows, segs, dim)
        return rows.reshape(d["rows"], -1)[:, :d["length"]]

    def _params(self, base, d):
        segs = -(-d["length"] // self.caps.dim)
        return self.acc[base:base + segs].reshape(-1)[:d["length"]].astype(np.int32)

    def _sfu_write(self, d, y):
        """Result rows at ``dst_addr``, lanes past ``length`` written as 0."""
        rows, segs = d["rows"], -(-d["length"] // self.caps.dim)
        out = np.zeros((rows, segs * self.caps.dim), dtype=np.int8)
        out[:, :d["length"]] = y
        out = out.reshape(rows, segs, self.caps.dim)
        if segs == 1 or d["seg_stride"] >= rows:     # distinct rows: in place through a view
            self._seg_view(d["dst_addr"], d)[...] = out
        else:                                         # rows written twice: the later one wins
            self.spad[self._segments(d["dst_addr"], d)] = out

    @staticmethod
    def _i8(v):
        return v - 256 if v & 0x80 else v

    def _softmax(self, d):
        self._sfu_check(d, (d["src_addr"], d["dst_addr"]))
        x = self._logical(d["src_addr"], d)
        if d["mask_offset"] > chip.SFU_MAX_LEN:      # sf.softmax refuses it (ValueError)
            sf.softmax(x, mult=d["mult"], causal=bool(d["causal"]), mask_offset=d["mask_offset"])
        # sf.softmax without its argument checks (the other fields' widths keep them in range)
        self._sfu_write(d, sf._softmax(x, d["mult"], bool(d["causal"]), d["mask_offset"]))

    def _norm(self, d, rms):
        self._sfu_check(d, (d["src_addr"], d["dst_addr"]),
                        (d["gamma_addr"],) + (() if rms else (d["beta_addr"],)),
                        max_len=chip.SFU_NORM_MAX_LEN)
        x, gamma = self._logical(d["src_addr"], d), self._params(d["gamma_addr"], d)
        # sf.layer_norm / sf.rms_norm without their argument checks
        self._sfu_write(d, sf._norm_checked(
            x, gamma, None if rms else self._params(d["beta_addr"], d),
            (d["eps_mant"], d["eps_exp"]), d["shift"], self._i8(d["in_zero_point"]),
            self._i8(d["out_zero_point"]), rms))

    def _layernorm(self, d):
        self._norm(d, rms=False)

    def _rmsnorm(self, d):
        self._norm(d, rms=True)

    def _lut(self, d):
        self._sfu_check(d, (d["src_addr"], d["dst_addr"]))
        rows = chip.SFU_LUT_ENTRIES // self.caps.dim
        if d["table_addr"] + rows > self.caps.spad_rows:
            raise _Fault(ErrorCode.LOCAL_RANGE)
        table = self.spad[d["table_addr"]:d["table_addr"] + rows].reshape(-1)
        self._sfu_write(d, sf.lookup(self._logical(d["src_addr"], d), table))

    def _emul(self, d):
        self._sfu_check(d, (d["a_addr"], d["b_addr"], d["dst_addr"]))
        y = sf.emul(self._logical(d["a_addr"], d), self._logical(d["b_addr"], d), mult=d["mult"],
                    shift=d["shift"], a_zero_point=self._i8(d["a_zero_point"]),
                    b_zero_point=self._i8(d["b_zero_point"]),
                    out_zero_point=self._i8(d["out_zero_point"]))
        self._sfu_write(d, y)
