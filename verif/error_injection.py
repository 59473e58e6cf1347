"""The error classes of the command queues and how to inject each into a workload: a faulty
descriptor, queue configuration or doorbell on one queue (:func:`inject`), with the
:class:`~verif.dag_workload.Failure` (Q_ERROR code and index) the scoreboard must then see.
:func:`verif.chip_scenarios.error_scenario` runs them.
"""
import numpy as np

from spec.chip import EVENTS, QUEUES
from spec.commands import encode
from spec.descriptors import EVENT_FIELDS, GEMM_FIELDS, ErrorCode, Opcode

from .dag_workload import Failure
from .ring_layout import QueueConfig


#: Error classes :func:`error_scenario` injects, with the ErrorCode each must produce.
ERROR_KINDS = {
    "bad_opcode": ErrorCode.BAD_OPCODE,
    "reserved_flags": ErrorCode.RESERVED_BITS,
    "reserved_payload": ErrorCode.RESERVED_BITS,
    "reserved_event": ErrorCode.RESERVED_BITS,
    "bad_event": ErrorCode.BAD_EVENT,
    "window": ErrorCode.WINDOW,
    "host_range": ErrorCode.HOST_RANGE,
    "bad_shape": ErrorCode.BAD_SHAPE,
    "local_range": ErrorCode.LOCAL_RANGE,
    "bad_shift": ErrorCode.BAD_SHIFT,
    "dma_decerr": ErrorCode.AXI_DECERR,
    "fetch_decerr": ErrorCode.AXI_DECERR,
    "cpl_decerr": ErrorCode.AXI_DECERR,
    "misaligned_ring": ErrorCode.MISALIGNED,
    "misaligned_cpl": ErrorCode.MISALIGNED,
    "bad_ring_size": ErrorCode.MISALIGNED,
    "ring_overflow": ErrorCode.RING_OVERFLOW,
    "producer_backwards": ErrorCode.RING_OVERFLOW,
    "watchdog_gemm": ErrorCode.WATCHDOG,
    "watchdog_vec": ErrorCode.WATCHDOG,
    "dma_timeout": ErrorCode.BUS_TIMEOUT,
    "fetch_timeout": ErrorCode.BUS_TIMEOUT,
    "cpl_timeout": ErrorCode.BUS_TIMEOUT,
}

#: The error classes whose host memory does not answer (the device's black hole).
TIMEOUT_KINDS = ("dma_timeout", "fetch_timeout", "cpl_timeout")
#: BUS_TIMEOUT.CYCLES while a timeout class runs (the reset value is 65536).
BUS_TIMEOUT_CYCLES = 2000
#: Where the error scenarios' host memory misbehaves, past the ``host_bytes`` the scenarios use:
#: from host_bytes it answers DECERR (the golden chip model's memory ends there), from
#: host_bytes + BLACKHOLE_OFFSET (BLACKHOLE_BYTES long) it does not answer at all.
BLACKHOLE_OFFSET = 0x8000
BLACKHOLE_BYTES = 0x8000


def blackhole_window(host_bytes):
    """``(base, limit)`` of the black hole of the error scenarios run with ``host_bytes``; the
    device is set up with it (``ChipModel(blackhole=...)``, ``HostMemory.set_blackhole``)."""
    return host_bytes + BLACKHOLE_OFFSET, host_bytes + BLACKHOLE_OFFSET + BLACKHOLE_BYTES


#: The opcodes "reserved_flags" rotates over by seed (every known one gets an error record).
RESERVED_FLAG_OPS = (Opcode.GEMM, Opcode.NOP, Opcode.BARRIER, Opcode.DMA_STORE, Opcode.DMA_LOAD,
                     Opcode.VECTOR)


def error_queue(seed):
    """The queue an error class lands on: rotated by the seed, so consecutive seeds put every
    class on every queue."""
    return seed % QUEUES


def inject(kind, wl, b, q, pos, decerr_addr, hole_addr):
    """Put the fault of ``kind`` at position ``pos`` of queue ``q`` (a descriptor, or the queue's
    configuration or doorbell); returns the Failure to expect. ``decerr_addr``: host memory that
    answers DECERR; ``hole_addr``: host memory that does not answer."""
    caps, rng = wl.caps, b.rng
    code = ERROR_KINDS[kind]
    cfg = wl.configs[q]
    dma = dict(host_row_stride=4, row_bytes=4, rows=2, planes=1, local_addr=0, local_row_stride=1)
    gemm = dict(a_addr=0, b_addr=8, c_addr=0, m=2, k_tiles=1, n_tiles=1)
    tag = b._next_tag()
    config = lambda **kw: QueueConfig(**{**cfg.__dict__, **kw})

    def put(opcode_or_words, **fields):
        expect = fields.pop("_expect", None)
        words = (encode(opcode_or_words, tag=tag, **fields) if isinstance(opcode_or_words, int)
                 else opcode_or_words)
        wl.insert(q, pos, words, expect=expect)
        return Failure(code, pos)

    if kind == "bad_opcode":
        words = encode(Opcode.NOP, tag=tag)
        words[0] |= int(rng.integers(max(Opcode) + 1, 256))
        return put(words)
    if kind == "reserved_flags":
        # The firmware checks the flag bits of every known opcode before acting on it
        # (firmware/queues.c head_status), so any opcode gets an error record.
        opcode = RESERVED_FLAG_OPS[wl.seed % len(RESERVED_FLAG_OPS)]
        fields = {Opcode.GEMM: gemm, Opcode.DMA_LOAD: dma, Opcode.DMA_STORE: dma}.get(opcode, {})
        words = encode(opcode, tag=tag, **fields)
        words[0] |= 1 << int(rng.integers(9, 16))
        return put(words)
    if kind == "reserved_payload":
        return put(Opcode.GEMM, reserved=1 << int(rng.integers(0, GEMM_FIELDS["reserved"][1])),
                   **gemm)
    if kind == "reserved_event":
        opcode = (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT)[int(rng.integers(2))]
        name = ("reserved0", "reserved")[int(rng.integers(2))]
        return put(opcode, event=0, value=0, **{name: 1 << int(rng.integers(EVENT_FIELDS[name][1]))})
    if kind == "bad_event":
        opcode = (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT)[int(rng.integers(2))]
        return put(opcode, event=int(rng.integers(EVENTS, 256)), value=1)
    if kind == "window":
        # The transfer reaches one byte over either edge of the window.
        host = cfg.window_base - 1 if rng.random() < 0.5 else cfg.window_base + cfg.window_size - 7
        return put((Opcode.DMA_LOAD, Opcode.DMA_STORE)[int(rng.integers(2))], host_addr=host, **dma)
    if kind == "host_range":
        opcode = (Opcode.DMA_LOAD, Opcode.DMA_STORE)[int(rng.integers(2))]
        return put(opcode, host_addr=(1 << caps.addr_bits) - 4, **dma)
    if kind == "bad_shape":
        return put(Opcode.GEMM, **{**gemm, "m": 0})
    if kind == "local_range":
        return put(Opcode.DMA_LOAD, **{**dma, "host_addr": cfg.window_base,
                                       "local_addr": caps.spad_rows - 1})
    if kind == "bad_shift":
        # A vector command whose shift row (loaded just before, outside every job's region)
        # holds 64: the data-dependent check.
        shift = np.zeros(caps.dim, dtype="<i4")
        shift[int(rng.integers(caps.dim))] = 64
        p = b.fresh(shift.nbytes, shift.tobytes())
        wl.configs[q] = widen(cfg, p, shift.nbytes)
        row = caps.acc_rows - 1
        put(Opcode.VECTOR, src_addr=0, dst_addr=0, rows=1, mult_addr=row, shift_addr=row)
        wl.insert(q, pos, encode(Opcode.BARRIER, tag=b._next_tag()))
        wl.insert(q, pos, encode(Opcode.DMA_LOAD, tag=b._next_tag(), host_addr=p, host_row_stride=0,
                                 row_bytes=4 * caps.dim, rows=1, planes=1, local_addr=row, acc=1))
        return Failure(code, pos + 2)
    if kind in ("dma_decerr", "dma_timeout"):
        addr = decerr_addr if kind == "dma_decerr" else hole_addr
        wl.configs[q] = widen(cfg, addr, 8)
        opcode = (Opcode.DMA_LOAD, Opcode.DMA_STORE)[int(rng.integers(2))]
        # the replay on a DeviceModel knows no black hole: a timeout is stated, not replayed
        return put(opcode, host_addr=addr, _expect=code if kind == "dma_timeout" else None, **dma)
    if kind in ("watchdog_gemm", "watchdog_vec"):
        if kind == "watchdog_gemm":
            return put(Opcode.GEMM, _expect=ErrorCode.WATCHDOG, **gemm)
        return put(Opcode.VECTOR, _expect=ErrorCode.WATCHDOG, src_addr=0, dst_addr=0, rows=1,
                   mult_addr=0, shift_addr=0)
    # Configuration faults: the queue halts when it becomes active (or on its first record).
    if kind in ("fetch_decerr", "fetch_timeout"):
        wl.configs[q] = config(ring_base=decerr_addr if kind == "fetch_decerr" else hole_addr)
    elif kind in ("cpl_decerr", "cpl_timeout"):
        wl.configs[q] = config(cpl_base=decerr_addr if kind == "cpl_decerr" else hole_addr)
    elif kind == "misaligned_ring":
        wl.configs[q] = config(ring_base=cfg.ring_base + 8 * int(rng.integers(1, 4)))
    elif kind == "misaligned_cpl":
        wl.configs[q] = config(cpl_base=cfg.cpl_base + 4 * int(rng.integers(1, 4)))
    elif kind == "bad_ring_size":
        wl.configs[q] = config(log2=0)       # LOG2 must be 1..15
    elif kind in ("ring_overflow", "producer_backwards"):
        # After `pos` descriptors were submitted, a doorbell beyond the ring (or behind C).
        how = cfg.entries + 1 + int(rng.integers(0, 4)) if kind == "ring_overflow" else 0
        wl.bad_doorbell[q] = (max(1, pos), how)
        return Failure(code, ("value", None))
    else:
        raise ValueError(f"unknown error kind {kind!r}; kinds: {sorted(ERROR_KINDS)}")
    return Failure(code, ("base", 0))


def widen(cfg, addr, n):
    """``cfg`` with its window grown to include ``[addr, addr + n)``."""
    lo = min(cfg.window_base, addr)
    hi = max(cfg.window_base + cfg.window_size, addr + n)
    return QueueConfig(cfg.ring_base, cfg.log2, cfg.cpl_base, lo, hi - lo)
