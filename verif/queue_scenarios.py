"""Command-queue scenarios and their scoreboard, driver-neutral: the same code drives the golden
chip model (tests/test_chip_model.py) and the RTL chip (a cocotb test).

A scenario is a generator of device operations (:class:`Read`, :class:`Write`, :class:`HostRead`,
:class:`HostWrite`, :class:`Wait`); a runner executes them on a device and sends results back:

* :func:`driver.ops.run_sync` for synchronous devices such as :class:`golden.chip_model.ChipModel`;
* :func:`driver.ops.run_async` for a cocotb testbench (``await run_async(scenario, dev)``).

A device offers ``read(reg) -> int``, ``write(reg, value)`` (``spec.registers`` Registers),
``host_read(addr, n) -> bytes``, ``host_write(addr, data)`` and ``wait(cycles)`` (let the chip run
about that many clock cycles); for :func:`run_async` each of them is awaitable.

Scenarios (each returns a :class:`Report` and raises :class:`ScoreboardError` on any mismatch):

* :func:`dag_scenario` — random jobs (DMA copies host→local→host, GEMM + vector epilogues) on all
  queues with a random DAG of SIGNAL_EVENT/WAIT_EVENT edges and BARRIERs, rings that wrap;
* :func:`error_scenario` — one error class (:data:`ERROR_KINDS`) injected on one queue while the
  others run a DAG; checks Q_ERROR, Q_ERROR_INDEX, the error record and QUEUE_ERROR, then resets
  the queue and runs a fresh workload on it from index 0;

The scoreboard checks, per queue: exactly one record per retired descriptor, in order, with the
descriptor's index/opcode/flags/tag and the expected status; the consumer index in host memory and
in Q_CONSUMER; PERF_Q_RETIRED; timestamps strictly increasing within a queue and, along every event
edge, every record before the SIGNAL older than the WAIT's record; QUEUE_CPL/QUEUE_ERROR
interrupts; and the whole host memory: every byte equals the initial image plus the ring writes
plus the results of replaying the retired commands on a fresh :class:`DeviceModel` in generation
order (a legal order: the DAG orders every conflicting pair), except the completion areas' record
slots and consumer words, which the record checks cover.

Every random choice comes from ``seed``; a failure message starts with the scenario and seed.
"""
from dataclasses import dataclass, field

import numpy as np

from spec import registers as R
from spec.commands import decode, encode
from spec.completion import RECORD_BYTES, record_offset, unpack_record
from spec.descriptors import DESCRIPTOR_FIELDS, EVENT_FIELDS, ErrorCode, Opcode
from driver.forensics import hang_report
from driver.ops import HostRead, HostWrite, Read, Wait, Write

from golden.device_model import DeviceModel

QUEUES = sum(1 for n in R.REGISTERS if n.startswith("Q_RING_BASE"))
EVENTS = sum(1 for n in R.REGISTERS if n.startswith("EVENT"))
DESC_BYTES = 32
ENGINE_OPS = (Opcode.DMA_LOAD, Opcode.DMA_STORE, Opcode.GEMM, Opcode.VECTOR)
M32 = 0xFFFF_FFFF


def reg(name, i):
    """The register ``name`` of queue/event ``i`` (``reg("Q_DOORBELL", 2)``)."""
    return R.REGISTERS[f"{name}{i}"]


class ScoreboardError(AssertionError):
    """The device's results differ from the scenario's expectations."""


class ScenarioTimeout(AssertionError):
    """The device did not finish the scenario within its cycle budget."""


# ================================================================================ layout
@dataclass(frozen=True)
class QueueConfig:
    """One queue's host-side configuration (docs/queues.md "Host programming sequence")."""
    ring_base: int
    log2: int
    cpl_base: int
    window_base: int
    window_size: int

    @property
    def entries(self):
        return 1 << self.log2

    def record_addr(self, index):
        return self.cpl_base + record_offset(index, self.log2)

    def cpl_bytes(self):
        return RECORD_BYTES * (1 + self.entries)


RING_AREA = 0x1000       # host bytes reserved per ring (LOG2 <= 7)
CPL_AREA = 0x1000        # host bytes reserved per completion area


@dataclass(frozen=True)
class Layout:
    """Where rings, completion areas and data buffers live in host memory."""
    host_bytes: int
    ring_area: int = 0x1000
    cpl_area: int = 0x1000 + QUEUES * RING_AREA
    data_base: int = 0x1000 + QUEUES * (RING_AREA + CPL_AREA)

    def ring_base(self, q):
        return self.ring_area + q * RING_AREA

    def cpl_base(self, q):
        return self.cpl_area + q * CPL_AREA


# ================================================================================ workloads
@dataclass(eq=False)
class Desc:
    """One descriptor of a workload."""
    queue: int
    words: list
    seq: int                       #: global generation order (a legal execution order)
    job: int = None
    expect: int = None             #: status decided by the firmware or injected (None: engine's)
    event: tuple = None            #: (event, value) of SIGNAL_EVENT / WAIT_EVENT
    index: int = None              #: queue index, set when submitted

    @property
    def opcode(self):
        return self.words[0] & 0xFF

    @property
    def flags(self):
        return (self.words[0] >> 8) & 0xFF

    @property
    def tag(self):
        return self.words[0] >> 16

    def __repr__(self):
        op = Opcode(self.opcode).name if self.opcode in Opcode._value2member_map_ else self.opcode
        return f"<q{self.queue} #{self.index} {op} tag={self.tag:#x} seq={self.seq}>"


def firmware_status(words):
    """The status the firmware decides for a descriptor before any engine sees it (docs/queues.md
    step 4: opcode, flag bits, event payload), or None when it forwards or runs it."""
    w0 = words[0]
    opcode = w0 & 0xFF
    if opcode not in Opcode._value2member_map_:
        return ErrorCode.BAD_OPCODE
    lsb, width = DESCRIPTOR_FIELDS["flags.reserved"]
    if (w0 >> lsb) & ((1 << width) - 1):
        return ErrorCode.RESERVED_BITS
    if opcode in (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT):
        d = decode(words)
        if d["reserved0"] or d["reserved"]:
            return ErrorCode.RESERVED_BITS
        if d["event"] >= EVENTS:
            return ErrorCode.BAD_EVENT
    return None


@dataclass
class Workload:
    """Descriptor streams per queue plus what the scoreboard needs to judge them."""
    name: str
    seed: int
    caps: object
    layout: Layout
    configs: dict                           #: queue -> QueueConfig
    streams: dict                           #: queue -> [Desc]
    edges: list = field(default_factory=list)       #: (SIGNAL Desc, WAIT Desc)
    init: dict = field(default_factory=dict)        #: host address -> bytes written before the run
    failing: dict = field(default_factory=dict)     #: queue -> Failure
    bad_doorbell: dict = field(default_factory=dict)  #: queue -> (after k submitted, producer delta)
    seq: int = 0

    def add(self, q, words, **kw):
        d = Desc(q, list(words), self.seq, **kw)
        if d.expect is None:
            d.expect = firmware_status(d.words)
        self.seq += 1
        self.streams.setdefault(q, []).append(d)
        return d

    def insert(self, q, pos, words, **kw):
        """Insert a descriptor at position ``pos`` of queue ``q``'s stream; it replays between its
        neighbours (``seq`` is only an order)."""
        stream = self.streams[q]
        before = stream[pos - 1].seq if pos else -1
        after = stream[pos].seq if pos < len(stream) else before + 1
        d = Desc(q, list(words), (before + after) / 2, **kw)
        if d.expect is None:
            d.expect = firmware_status(d.words)
        stream.insert(pos, d)
        return d


@dataclass
class Failure:
    """How a queue is expected to halt: its Q_ERROR code and Q_ERROR_INDEX. ``index`` is a position
    in the queue's stream (whose record carries the error), ``("value", v)`` for an absolute value
    (the RING_OVERFLOW producer, filled in when the doorbell is rung) or ``("base", k)`` for the
    queue's first index of the run plus k (configuration, fetch and completion-write faults)."""
    code: int
    index: object


class _Alloc:
    """Bump allocator of host data buffers with random gaps."""

    def __init__(self, rng, base, limit):
        self.rng, self.next, self.limit = rng, base, limit

    def take(self, size, align=1):
        addr = self.next + int(self.rng.integers(0, 64))
        addr = -(-addr // align) * align
        if addr + size > self.limit:
            raise ValueError("scenario data does not fit in host memory; raise host_bytes")
        self.next = addr + size
        return addr


class DagBuilder:
    """Random jobs on some queues with a DAG of event edges and barriers (see :func:`dag_scenario`).

    A job runs in one queue on its own local-memory region (a per-queue pool, reused only after a
    barrier) and writes its own output buffer; it reads fresh input or the output of an earlier
    job, which orders it after that job: a BARRIER in the same queue, else a SIGNAL_EVENT after the
    producer in its queue and a WAIT_EVENT before the job. Each queue owns EVENTS/QUEUES event
    counters, so a counter's values only grow (from a base read at the start, by a random stride).

    Knobs: ``p_dep`` (a job reads an earlier job's output), ``p_compute`` (GEMM + vector job, else
    a copy), ``p_extra`` (an ordering-only edge), ``p_overlap`` (a copy's store has overlapping
    host rows, stride < row bytes: later rows win), ``p_accumulate`` (a second one-k-tile GEMM
    with accumulate adds to C). Vector epilogues draw bias, ReLU, residual add (of the job's A
    rows) and max-reduce independently, so every subset occurs.
    """

    REGIONS = 4     # local regions per queue

    def __init__(self, wl, rng, queues, event_base, *, p_dep=0.5, p_compute=0.3, p_extra=0.15,
                 p_overlap=0.15, p_accumulate=0.25, engines=ENGINE_OPS):
        self.wl, self.rng, self.queues = wl, rng, list(queues)
        caps = wl.caps
        self.dim = d = caps.dim
        self.spad_region = d + 8            # copy: <= 8 rows; compute: A 4 + B dim + out 4
        self.acc_region = 8                 # copy: <= 8 rows; compute: C 4 + mult, shift, bias
        self.buf = 64 * d
        need_spad = QUEUES * self.REGIONS * self.spad_region
        need_acc = QUEUES * self.REGIONS * self.acc_region
        if need_spad > caps.spad_rows or need_acc > caps.acc_rows:
            raise ValueError(f"scenario needs {need_spad} scratchpad and {need_acc} accumulator rows")
        self.p_dep, self.p_compute, self.p_extra = p_dep, p_compute, p_extra
        self.p_overlap, self.p_accumulate = p_overlap, p_accumulate
        self.compute = Opcode.GEMM in engines and Opcode.VECTOR in engines
        self.jobs = []                       # (queue, output addr, output size, last Desc)
        self.ordered = {q: -1 for q in queues}      # seq of the latest barrier/signal per queue
        self.region_next = {q: 0 for q in queues}
        self.region_user = {}                # (q, r) -> seq of the last descriptor using it
        per_q = EVENTS // QUEUES
        self.events = {q: [q + QUEUES * k for k in range(per_q)] for q in queues}
        self.ev_next = {q: 0 for q in queues}
        self.ev_value = dict(event_base)     # event -> last value signalled (or the start value)
        self.ev_stride = {e: int(rng.integers(1, 1 << 20)) for e in range(EVENTS)}
        self.signals = {q: [] for q in queues}      # (Desc) signals appended, in order
        self.alloc = _Alloc(rng, wl.layout.data_base, wl.layout.host_bytes)
        self.tag = int(rng.integers(0, 1 << 16))
        self.touched = {q: [] for q in queues}      # (addr, size) each queue's DMAs touch

    # ------------------------------------------------------------------ helpers
    def _irq(self):
        return bool(self.rng.random() < 0.2)

    def _next_tag(self):
        self.tag = (self.tag + 1) & 0xFFFF
        return self.tag

    def add(self, q, opcode, **fields):
        d = self.wl.add(q, encode(opcode, irq=self._irq(), tag=self._next_tag(), **fields))
        if opcode in (Opcode.BARRIER, Opcode.SIGNAL_EVENT):
            self.ordered[q] = d.seq
        return d

    def barrier(self, q):
        return self.add(q, Opcode.BARRIER)

    def signal(self, q):
        e = self.events[q][self.ev_next[q] % len(self.events[q])]
        self.ev_next[q] += 1
        self.ev_value[e] = (self.ev_value[e] + self.ev_stride[e]) & M32
        d = self.add(q, Opcode.SIGNAL_EVENT, event=e, value=self.ev_value[e])
        d.event = (e, self.ev_value[e])
        self.signals[q].append(d)
        return d

    def order_after(self, q, last):
        """Make everything appended to ``q`` from now on run after Desc ``last``."""
        if last.queue == q:
            if self.ordered[q] < last.seq:
                self.barrier(q)
            return
        sig = next((s for s in self.signals[last.queue] if s.seq > last.seq), None)
        if sig is None:
            sig = self.signal(last.queue)
        w = self.add(q, Opcode.WAIT_EVENT, event=sig.event[0], value=sig.event[1])
        w.event = sig.event
        self.wl.edges.append((sig, w))

    def fresh(self, size, data=None):
        addr = self.alloc.take(size)
        if data is not None:
            self.wl.init[addr] = bytes(data)
        return addr

    def _region(self, q):
        r = self.region_next[q]
        self.region_next[q] = (r + 1) % self.REGIONS
        key = (q, r)
        if key in self.region_user and self.ordered[q] < self.region_user[key]:
            self.barrier(q)
        slot = q * self.REGIONS + r
        return key, slot * self.spad_region, slot * self.acc_region

    def _dma(self, q, opcode, host_addr, touched, **fields):
        self.touched[q].append((host_addr, touched))
        return self.add(q, opcode, host_addr=host_addr, **fields)

    # ------------------------------------------------------------------ jobs
    def job(self, q=None):
        rng = self.rng
        q = self.queues[int(rng.integers(len(self.queues)))] if q is None else q
        src = None
        if self.jobs and rng.random() < self.p_dep:
            src = self.jobs[int(rng.integers(max(0, len(self.jobs) - 8), len(self.jobs)))]
            self.order_after(q, src[3])
        if self.jobs and rng.random() < self.p_extra:       # an ordering-only edge
            self.order_after(q, self.jobs[int(rng.integers(len(self.jobs)))][3])
        key, spad0, acc0 = self._region(q)
        if self.compute and rng.random() < self.p_compute:
            last, out = self._compute_job(q, src, spad0, acc0)
        else:
            last, out = self._copy_job(q, src, spad0, acc0)
        self.region_user[key] = last.seq
        self.jobs.append((q, out[0], out[1], last))
        r = rng.random()
        if r < 0.05:
            self.add(q, Opcode.NOP)
        elif r < 0.10:
            self.barrier(q)
        elif r < 0.25:
            self.signal(q)
        return last

    def _source(self, src, size):
        """(addr, bytes available) to read ``size`` bytes from: a dependency's output or fresh data."""
        if src is not None and src[2] >= size:
            return src[1], src[2]
        return self.fresh(self.buf, self.rng.integers(0, 256, self.buf, dtype=np.uint8)), self.buf

    def _copy_job(self, q, src, spad0, acc0):
        rng, d = self.rng, self.dim
        acc = bool(rng.random() < 0.25)
        lrb = 4 * d if acc else d
        rows, planes = int(rng.integers(1, 5)), int(rng.integers(1, 3))
        rb = int(rng.integers(0, lrb + 1)) if rng.random() < 0.1 else int(rng.integers(1, lrb + 1))
        co = int(rng.integers(0, lrb - rb + 1))
        hs = rb + int(rng.integers(0, 4))
        hp = rows * hs + int(rng.integers(0, 8))
        span = (planes - 1) * hp + (rows - 1) * hs + rb
        addr, avail = self._source(src, max(span, 1))
        host = addr + int(rng.integers(0, avail - span + 1))
        local = acc0 if acc else spad0
        common = dict(local_addr=local, local_row_stride=1, local_plane_stride=rows, rows=rows,
                      planes=planes, acc=int(acc))
        self._dma(q, Opcode.DMA_LOAD, host, span, host_row_stride=hs, host_plane_stride=hp,
                  row_bytes=rb, col_offset=co, **common)
        self.barrier(q)
        rb2 = int(rng.integers(0, lrb + 1))
        co2 = int(rng.integers(0, lrb - rb2 + 1))
        hs2 = rb2 + int(rng.integers(0, 4))
        if rows > 1 and rb2 and rng.random() < self.p_overlap:
            # Overlapping host rows (stride < row bytes): rows are written in (plane, row)
            # order, a later row's bytes win (golden/ops.py dma_store; the DMA writes in order).
            hs2 = int(rng.integers(0, rb2))
        hp2 = rows * hs2 + int(rng.integers(0, 8))
        span2 = (planes - 1) * hp2 + (rows - 1) * hs2 + rb2
        out = self.fresh(max(span2, 1))
        last = self._dma(q, Opcode.DMA_STORE, out, span2, host_row_stride=hs2,
                         host_plane_stride=hp2, row_bytes=rb2, col_offset=co2, **common)
        return last, (out, span2)

    def _compute_job(self, q, src, spad0, acc0):
        rng, d = self.rng, self.dim
        m = int(rng.integers(1, 5))
        a_rows, b_rows, out_rows = spad0, spad0 + 4, spad0 + 4 + d
        c_rows, mult_row, shift_row, bias_row = acc0, acc0 + 4, acc0 + 5, acc0 + 6
        rb = int(rng.integers(1, d + 1))
        addr, avail = self._source(src, m * rb)
        host = addr + int(rng.integers(0, avail - m * rb + 1))
        self._dma(q, Opcode.DMA_LOAD, host, m * rb, host_row_stride=rb, row_bytes=rb, rows=m,
                  planes=1, local_addr=a_rows, local_row_stride=1)
        b = self.fresh(d * d, rng.integers(0, 256, d * d, dtype=np.uint8))
        self._dma(q, Opcode.DMA_LOAD, b, d * d, host_row_stride=d, row_bytes=d, rows=d,
                  planes=1, local_addr=b_rows, local_row_stride=1)
        params = np.stack([rng.integers(1, 1 << 20, d), rng.integers(0, 24, d),
                           rng.integers(-1 << 16, 1 << 16, d)]).astype("<i4")
        p = self.fresh(params.nbytes, params.tobytes())
        self._dma(q, Opcode.DMA_LOAD, p, params.nbytes, host_row_stride=4 * d, row_bytes=4 * d,
                  rows=3, planes=1, local_addr=mult_row, local_row_stride=1, acc=1)
        self.barrier(q)
        gemm = dict(a_addr=a_rows, b_addr=b_rows, c_addr=c_rows, m=m, k_tiles=1, n_tiles=1)
        self.add(q, Opcode.GEMM, **gemm)
        if rng.random() < self.p_accumulate:
            # K-tiling across commands: a second one-k-tile GEMM that adds to C (C = 2 A B).
            # Commands of one engine run in order, so no barrier is needed in between.
            self.add(q, Opcode.GEMM, accumulate=1, **gemm)
        self.barrier(q)
        maxred = bool(rng.random() < 0.15)
        # Every subset of bias / ReLU / residual add; the residual rows are the job's A rows
        # (int8, zero padded by their load).
        self.add(q, Opcode.VECTOR, src_addr=c_rows, dst_addr=out_rows, rows=m, mult_addr=mult_row,
                 shift_addr=shift_row, bias_addr=bias_row, res_addr=a_rows,
                 zero_point=int(rng.integers(0, 256)),
                 **{"ops.bias": int(rng.random() < 0.5), "ops.relu": int(rng.random() < 0.5),
                    "ops.add": int(rng.random() < 0.5), "ops.maxred": int(maxred)})
        self.barrier(q)
        n_out = 1 if maxred else m
        out = self.fresh(n_out * d)
        last = self._dma(q, Opcode.DMA_STORE, out, n_out * d, host_row_stride=d, row_bytes=d,
                         rows=n_out, planes=1, local_addr=out_rows, local_row_stride=1)
        return last, (out, n_out * d)

    def windows(self):
        """Each queue's DMA window: the span of the host bytes its DMAs touch (with a margin)."""
        out = {}
        for q in self.queues:
            spans = [(a, a + n) for a, n in self.touched[q] if n]
            lo = min((a for a, _ in spans), default=self.wl.layout.data_base)
            hi = max((b for _, b in spans), default=lo)
            out[q] = (lo, hi - lo)
        return out


def _configs(layout, queues, rng, windows):
    return {q: QueueConfig(ring_base=layout.ring_base(q), log2=int(rng.integers(2, 6)),
                           cpl_base=layout.cpl_base(q), window_base=windows[q][0],
                           window_size=windows[q][1]) for q in queues}


# ================================================================================ driving
@dataclass
class Report:
    """What a scenario observed; the scoreboard has already checked it."""
    name: str
    seed: int
    records: dict            #: queue -> {index: record dict}
    consumer: dict           #: queue -> final consumer index
    base: dict               #: queue -> first index of the run
    cycles: int              #: cycles waited
    descriptors: int         #: descriptors submitted
    phases: list = field(default_factory=list)   #: reports of later phases


def _inside(layout, addr, n):
    """``[addr, addr + n)`` is ordinary host memory (not the DECERR region the scenario uses)."""
    return 0 <= addr and addr + n <= layout.host_bytes


def _after(a, b):
    """Timestamp ``a`` is later than ``b`` (32-bit wrapping cycle counts)."""
    return 0 < (a - b) & M32 < 0x8000_0000


def configure(q, cfg, enable=True):
    """Program queue ``q`` (ring, completion area, window) and optionally enable it."""
    yield Write(reg("Q_RING_BASE", q), cfg.ring_base)
    yield Write(reg("Q_RING_SIZE", q), R.Q_RING_SIZE0.LOG2.put(cfg.log2 & 0xF))
    yield Write(reg("Q_CPL_BASE", q), cfg.cpl_base)
    yield Write(reg("Q_WINDOW_BASE", q), cfg.window_base)
    yield Write(reg("Q_WINDOW_SIZE", q), cfg.window_size)
    if enable:
        yield Write(reg("Q_CTRL", q), R.Q_CTRL0.ENABLE.put(1))


def reset_queue(q, enable=True, budget=200_000, poll=200):
    """Reset queue ``q`` (ENABLE as given) and wait for RESETTING to drop; check the zeroed state."""
    yield Write(reg("Q_CTRL", q), R.Q_CTRL0.RESET.put(1) | R.Q_CTRL0.ENABLE.put(int(enable)))
    waited = 0
    while R.Q_STATUS0.RESETTING.get((yield Read(reg("Q_STATUS", q)))):
        if waited > budget:
            raise ScenarioTimeout(f"queue {q} still RESETTING after {waited} cycles")
        yield Wait(poll)
        waited += poll
    for name in ("Q_CONSUMER", "Q_FETCH", "Q_ERROR", "Q_ERROR_INDEX"):
        v = yield Read(reg(name, q))
        if v:
            raise ScoreboardError(f"after the reset of queue {q}, {name} = {v:#x}, not 0")
    status = R.Q_STATUS0.decode((yield Read(reg("Q_STATUS", q))))
    if status["HALTED"] or status["PREFETCHED"] or status["ACTIVE"] != int(enable):
        raise ScoreboardError(f"after the reset of queue {q}: Q_STATUS {status}")


def drive(wl, *, poll=400, budget=3_000_000):
    """Submit ``wl`` and collect its records; returns (records, consumer, base, cycles, producer)
    per queue (cycles: total).

    Per queue: descriptors go to ring slots as the consumer index frees them (so rings wrap), the
    doorbell follows each batch; records are read between the consumer index already seen and the
    new one before their slots can be reused. The run ends when every queue retired all its
    descriptors, or (an expected failure) halted with the chip idle and its consumer index still.
    """
    name = f"{wl.name} seed={wl.seed}"
    queues = sorted(wl.streams)
    for addr, data in sorted(wl.init.items()):
        yield HostWrite(addr, data)
    base, prod, seen, records = {}, {}, {}, {q: {} for q in queues}
    cpl_readable = {}
    for q in queues:
        cfg = wl.configs[q]
        c = yield Read(reg("Q_CONSUMER", q))
        base[q] = prod[q] = seen[q] = c
        cpl_readable[q] = _inside(wl.layout, cfg.cpl_base, cfg.cpl_bytes())
        if cpl_readable[q]:
            # The device writes the consumer index only after a retirement: start it at C.
            yield HostWrite(cfg.cpl_base, c.to_bytes(4, "little"))
        for i, dsc in enumerate(wl.streams[q]):
            dsc.index = (c + i) & M32
    bad = dict(wl.bad_doorbell)
    # Some queues ring their first doorbell with one descriptor (occupancy 1), the rest as many
    # as the ring holds; from a stream of its own, so the workload's choices do not change.
    pick = np.random.default_rng([wl.seed, 0x1D00])
    single = {q: bool(pick.random() < 0.5) for q in queues}
    cycles, stable = 0, {q: 0 for q in queues}
    while True:
        finished = True
        for q in queues:
            cfg, stream = wl.configs[q], wl.streams[q]
            if cpl_readable[q] and q not in wl.failing:
                c = int.from_bytes((yield HostRead(cfg.cpl_base, 4)), "little")
            else:
                c = yield Read(reg("Q_CONSUMER", q))
            n = (c - seen[q]) & M32
            if n > (prod[q] - seen[q]) & M32:
                raise ScoreboardError(f"{name}: queue {q} consumer index {c} beyond the producer "
                                      f"{prod[q]} (seen {seen[q]})")
            for i in range(n):
                idx = (seen[q] + i) & M32
                if cpl_readable[q]:
                    records[q][idx] = unpack_record((yield HostRead(cfg.record_addr(idx), RECORD_BYTES)))
            seen[q] = c
            done = (prod[q] - base[q]) & M32
            halted = False
            if q in wl.failing:
                st = R.Q_STATUS0.decode((yield Read(reg("Q_STATUS", q))))
                halted = bool(st["HALTED"])
            # Quiet polls counted only while halted: the consumer was read before Q_STATUS, so the
            # poll that first sees the halt may predate the retirement that halted the queue.
            stable[q] = stable[q] + 1 if n == 0 and halted else 0
            if q in bad and done >= bad[q][0]:
                how = bad.pop(q)[1]
                # Too far ahead of any consumer index, or behind the first one of the run.
                p_bad = (prod[q] + how if how > 0 else base[q] - 1) & M32
                wl.failing[q].index = ("value", p_bad)
                yield Write(reg("Q_DOORBELL", q), p_bad)
            elif not halted and done < len(stream) and (q in bad or q not in wl.bad_doorbell):
                end = min(len(stream), ((c - base[q]) & M32) + cfg.entries)
                if q in bad:
                    end = min(end, bad[q][0])
                if single.pop(q, False):
                    end = min(end, done + 1)
                for i in range(done, end):
                    if _inside(wl.layout, cfg.ring_base, cfg.entries * DESC_BYTES):
                        yield HostWrite(cfg.ring_base + DESC_BYTES * ((base[q] + i) % cfg.entries),
                                        b"".join(w.to_bytes(4, "little") for w in stream[i].words))
                if end > done:
                    prod[q] = (base[q] + end) & M32
                    yield Write(reg("Q_DOORBELL", q), prod[q])
            if q in wl.failing:
                # Halted and quiet; or, wrongly, everything retired (the scoreboard says so).
                finished &= (halted and stable[q] >= 2) or ((c - base[q]) & M32) == len(stream)
            else:
                finished &= ((c - base[q]) & M32) == len(stream)
        if finished:
            idle = R.STATUS.IDLE.get((yield Read(R.STATUS)))
            if idle:
                break
        if cycles > budget:
            progress = "; ".join(f"q{q}: C={seen[q]} P={prod[q]} of {len(wl.streams[q])}"
                                 for q in queues)
            report = yield from hang_report()
            raise ScenarioTimeout(f"{name}: not finished after {cycles} cycles ({progress})\n{report}")
        yield Wait(poll)
        cycles += poll
    return records, seen, base, cycles, prod


# ================================================================================ scoreboard
def _fail(wl, msg):
    raise ScoreboardError(f"{wl.name} seed={wl.seed}: {msg}")


def reference(wl, executed, host_image):
    """Replay the engine commands in ``executed`` (Descs) in generation order on a fresh
    DeviceModel; returns (its host memory, {Desc: ErrorCode})."""
    dev = DeviceModel(wl.caps, host_bytes=wl.layout.host_bytes)
    dev.host[:] = host_image
    codes = {}
    for d in sorted(executed, key=lambda d: d.seq):
        cfg = wl.configs[d.queue]
        codes[d] = dev.submit(d.words, window=(cfg.window_base, cfg.window_size))
    return dev.host, codes


def check(wl, records, consumer, base, host_before, host_after, regs):
    """The scoreboard (see the module docstring). ``regs``: {register name: value} read at the end
    (Q_CONSUMER*, Q_ERROR*, Q_ERROR_INDEX*, Q_STATUS*, PERF_Q_RETIRED* deltas, IRQ_STATUS)."""
    retired = []
    for q, stream in wl.streams.items():
        cfg = wl.configs[q]
        recs = records[q]
        n = (consumer[q] - base[q]) & M32
        if regs[f"Q_CONSUMER{q}"] != consumer[q]:
            _fail(wl, f"queue {q}: Q_CONSUMER {regs[f'Q_CONSUMER{q}']} but consumer index in memory {consumer[q]}")
        if regs[f"PERF_Q_RETIRED{q}"] != n:
            _fail(wl, f"queue {q}: PERF_Q_RETIRED advanced by {regs[f'PERF_Q_RETIRED{q}']}, {n} records")
        failure = wl.failing.get(q)
        cpl_ok = _inside(wl.layout, cfg.cpl_base, cfg.cpl_bytes())
        if failure is None:
            if n != len(stream):
                _fail(wl, f"queue {q}: {n} of {len(stream)} descriptors retired")
            if regs[f"Q_ERROR{q}"] or R.Q_STATUS0.HALTED.get(regs[f"Q_STATUS{q}"]):
                _fail(wl, f"queue {q} halted with error {regs[f'Q_ERROR{q}']} at "
                          f"{regs[f'Q_ERROR_INDEX{q}']}")
        else:
            if not R.Q_STATUS0.HALTED.get(regs[f"Q_STATUS{q}"]):
                _fail(wl, f"queue {q} did not halt (expected {ErrorCode(failure.code).name})")
            if regs[f"Q_ERROR{q}"] != failure.code:
                got = regs[f"Q_ERROR{q}"]
                _fail(wl, f"queue {q}: Q_ERROR {ErrorCode(got).name if got in ErrorCode._value2member_map_ else got}, "
                          f"expected {ErrorCode(failure.code).name}")
            idx = failure.index
            if isinstance(idx, int):
                want = stream[idx].index
            elif idx[0] == "value":
                want = idx[1]
            else:
                want = base[q] + idx[1]
            if regs[f"Q_ERROR_INDEX{q}"] != want:
                _fail(wl, f"queue {q}: Q_ERROR_INDEX {regs[f'Q_ERROR_INDEX{q}']}, expected {want}")
            if not R.IRQ_STATUS.QUEUE_ERROR.get(regs["IRQ_STATUS"]) >> q & 1:
                _fail(wl, f"queue {q} halted but IRQ_STATUS.QUEUE_ERROR[{q}] is clear")
        if not cpl_ok:
            # The records never reached memory, but the commands ran: replay them all the same.
            retired += [(d, None) for d in stream[:n]]
            continue
        last_ts = None
        fail_pos = None
        for pos in range(n):
            d = stream[pos]
            r = recs.get(d.index)
            if r is None:
                _fail(wl, f"queue {q}: no record for {d}")
            want = dict(index=d.index, opcode=d.opcode, queue=q, flags=d.flags, tag=d.tag, reserved=0)
            got = {k: r[k] for k in want}
            if got != want:
                _fail(wl, f"queue {q}: record of {d} is {r}, expected fields {want}")
            if last_ts is not None and not _after(r["timestamp"], last_ts):
                _fail(wl, f"queue {q}: record timestamps not increasing at {d}: {last_ts} then {r['timestamp']}")
            last_ts = r["timestamp"]
            if fail_pos is not None and d.opcode in (Opcode.BARRIER, Opcode.SIGNAL_EVENT):
                _fail(wl, f"queue {q}: {d} got a record after the failure at position {fail_pos}")
            if r["status"] != ErrorCode.OK and fail_pos is None:
                fail_pos = pos
            retired.append((d, r))
        if failure is None and fail_pos is not None:
            _fail(wl, f"queue {q}: {stream[fail_pos]} failed with status {recs[stream[fail_pos].index]['status']}")
        if failure is not None and isinstance(failure.index, int):
            if fail_pos != failure.index:
                _fail(wl, f"queue {q}: first failing record at position {fail_pos}, expected "
                          f"{failure.index} ({stream[failure.index]})")
            bad = stream[fail_pos]
            if bad.expect not in (None, ErrorCode.WATCHDOG) and n != fail_pos + 1:
                # The firmware found the fault at dispatch: it popped nothing after it.
                _fail(wl, f"queue {q}: {n - fail_pos - 1} records after {bad}, which the firmware "
                          f"rejected at dispatch")
    # ---- statuses and results: replay what retired
    executed = [d for d, r in retired if d.opcode in ENGINE_OPS and d.expect is None
                and (r is None or r["status"] != ErrorCode.WATCHDOG)]
    expected_host, codes = reference(wl, executed, host_before)
    for d, r in retired:
        if r is None:
            continue
        want = d.expect if d.expect is not None else codes.get(d, ErrorCode.OK)
        if r["status"] != want:
            name = lambda c: ErrorCode(c).name if c in ErrorCode._value2member_map_ else c
            _fail(wl, f"{d}: record status {name(r['status'])}, expected {name(want)}")
    # ---- interrupts (cleared when the run started)
    for q in wl.streams:
        if bool(R.IRQ_STATUS.QUEUE_ERROR.get(regs["IRQ_STATUS"]) >> q & 1) != (q in wl.failing):
            _fail(wl, f"queue {q}: IRQ_STATUS.QUEUE_ERROR[{q}] is {q not in wl.failing:d}")
        if not _inside(wl.layout, wl.configs[q].cpl_base, wl.configs[q].cpl_bytes()):
            continue            # the records are not readable: nothing to compare with
        wants_cpl = any(r["flags"] & 1 for d, r in retired if d.queue == q and r is not None)
        if bool(R.IRQ_STATUS.QUEUE_CPL.get(regs["IRQ_STATUS"]) >> q & 1) != bool(wants_cpl):
            _fail(wl, f"queue {q}: IRQ_STATUS.QUEUE_CPL[{q}] is {not wants_cpl:d} but "
                      f"{'a' if wants_cpl else 'no'} descriptor with flags.irq retired")
    # ---- ordering along event edges
    by_desc = {id(d): r for d, r in retired if r is not None}
    for sig, wait in wl.edges:
        rw = by_desc.get(id(wait))
        if rw is None:
            continue
        if by_desc.get(id(sig)) is None:
            _fail(wl, f"{wait} retired but the {sig} it waits for did not")
        before = [by_desc[id(d)]["timestamp"] for d in wl.streams[sig.queue][:wl.streams[sig.queue].index(sig)]
                  if id(d) in by_desc]
        if before and not all(_after(rw["timestamp"], t) for t in before):
            _fail(wl, f"event edge {sig} -> {wait}: a record before the signal has timestamp "
                      f"{max(before)} >= the wait's {rw['timestamp']}")
    # ---- host memory
    expected = np.array(expected_host, dtype=np.uint8)
    after = np.frombuffer(bytes(host_after), dtype=np.uint8).copy()
    for q, cfg in wl.configs.items():
        if not _inside(wl.layout, cfg.cpl_base, cfg.cpl_bytes()):
            continue
        for lo, hi in ((cfg.cpl_base, cfg.cpl_base + 4), (cfg.cpl_base + RECORD_BYTES, cfg.cpl_base + cfg.cpl_bytes())):
            expected[lo:hi] = after[lo:hi] = 0
        c = int.from_bytes(bytes(host_after[cfg.cpl_base:cfg.cpl_base + 4]), "little")
        if q in wl.streams and c != consumer[q]:
            _fail(wl, f"queue {q}: consumer index in memory {c}, expected {consumer[q]}")
    diff = np.flatnonzero(expected != after)
    if diff.size:
        a = int(diff[0])
        _fail(wl, f"host memory differs from the reference at {diff.size} bytes, first at {a:#x}: "
                  f"{after[a]:#04x} instead of {expected[a]:#04x}")
    return retired


# ================================================================================ scenarios
def _final_regs(queues, perf_before):
    regs = {}
    for q in queues:
        for name in ("Q_CONSUMER", "Q_ERROR", "Q_ERROR_INDEX", "Q_STATUS", "PERF_Q_RETIRED"):
            regs[f"{name}{q}"] = yield Read(reg(name, q))
        regs[f"PERF_Q_RETIRED{q}"] = (regs[f"PERF_Q_RETIRED{q}"] - perf_before[q]) & M32
    regs["IRQ_STATUS"] = yield Read(R.IRQ_STATUS)
    return regs


def run_workload(wl, *, host_image=None, poll=400, budget=3_000_000):
    """Configure the workload's queues, run it, check it; returns a :class:`Report`.

    ``host_image``: the whole initial host memory (bytes); if None it is read from the device."""
    queues = sorted(wl.streams)
    if host_image is None:
        host_image = yield HostRead(0, wl.layout.host_bytes)
    image = bytearray(host_image)
    for addr, data in wl.init.items():
        image[addr:addr + len(data)] = data
    irq_bits = R.IRQ_STATUS.QUEUE_CPL.mask | R.IRQ_STATUS.QUEUE_ERROR.mask
    yield Write(R.IRQ_STATUS, irq_bits)          # W1C: start from clear queue interrupts
    for q in queues:
        # A queue left enabled by an earlier workload is disabled first: its configuration is
        # checked only when it becomes active (docs/queues.md); its indices carry on.
        if R.Q_CTRL0.ENABLE.get((yield Read(reg("Q_CTRL", q)))):
            yield Write(reg("Q_CTRL", q), 0)
        yield from configure(q, wl.configs[q])
    perf = {}
    for q in queues:
        perf[q] = yield Read(reg("PERF_Q_RETIRED", q))
    records, consumer, base, cycles, producer = yield from drive(wl, poll=poll, budget=budget)
    regs = yield from _final_regs(queues, perf)
    # The rings hold what the host wrote last: part of the expected image.
    for q in queues:
        cfg = wl.configs[q]
        if not _inside(wl.layout, cfg.ring_base, cfg.entries * DESC_BYTES):
            continue
        written = (producer[q] - base[q]) & M32
        for i in range(max(0, written - cfg.entries), written):
            a = cfg.ring_base + DESC_BYTES * ((base[q] + i) % cfg.entries)
            image[a:a + DESC_BYTES] = b"".join(w.to_bytes(4, "little") for w in wl.streams[q][i].words)
    after = yield HostRead(0, wl.layout.host_bytes)
    check(wl, records, consumer, base, np.frombuffer(bytes(image), dtype=np.uint8), after, regs)
    yield Write(R.IRQ_STATUS, regs["IRQ_STATUS"])          # W1C acknowledge what we saw
    return Report(wl.name, wl.seed, records, consumer, base, cycles,
                  sum(len(s) for s in wl.streams.values()))


def _event_bases():
    bases = {}
    for e in range(EVENTS):
        bases[e] = yield Read(reg("EVENT", e))
    return bases


def _new_workload(name, caps, seed, layout, queues):
    return Workload(name, seed, caps, layout, {}, {q: [] for q in queues})


def build_dag(caps, seed, layout, *, queues=tuple(range(QUEUES)), jobs=40, event_base=None,
              name="dag", engines=ENGINE_OPS, rng=None, knobs=None):
    """A random DAG workload (no host I/O): see :class:`DagBuilder` (``knobs``: its ``p_dep``,
    ``p_compute``, ``p_extra``, ``p_overlap``, ``p_accumulate``)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    wl = _new_workload(name, caps, seed, layout, queues)
    b = DagBuilder(wl, rng, queues, event_base or {e: 0 for e in range(EVENTS)}, engines=engines,
                   **(knobs or {}))
    for _ in range(jobs):
        b.job()
    wl.configs = _configs(layout, queues, rng, b.windows())
    return wl, b


def _random_host(seed, host_bytes):
    return np.random.default_rng([seed, 0x4B414B49]).integers(0, 256, host_bytes, dtype=np.uint8).tobytes()


def dag_scenario(caps, seed, *, host_bytes, jobs=40, queues=tuple(range(QUEUES)), poll=400,
                 budget=3_000_000, fill_host=True, knobs=None):
    """Random jobs with a random DAG on ``queues``; every descriptor must complete with OK.

    ``fill_host``: first fill the whole host memory with seeded random bytes, so any stray write
    anywhere is caught. ``knobs``: the DagBuilder's dependency/compute/extra-edge probabilities."""
    layout = Layout(host_bytes)
    image = None
    if fill_host:
        image = _random_host(seed, host_bytes)
        yield HostWrite(0, image)
    bases = yield from _event_bases()
    wl, _ = build_dag(caps, seed, layout, queues=queues, jobs=jobs, event_base=bases, knobs=knobs)
    return (yield from run_workload(wl, host_image=image, poll=poll, budget=budget))


# ------------------------------------------------------------------------------- error classes
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
}


#: The opcodes "reserved_flags" rotates over by seed (every known one gets an error record).
RESERVED_FLAG_OPS = (Opcode.GEMM, Opcode.NOP, Opcode.BARRIER, Opcode.DMA_STORE, Opcode.DMA_LOAD,
                     Opcode.VECTOR)


def error_queue(seed):
    """The queue an error class lands on: rotated by the seed, so consecutive seeds put every
    class on every queue."""
    return seed % QUEUES


def _inject(kind, wl, b, q, pos, decerr_addr):
    """Put the fault of ``kind`` at position ``pos`` of queue ``q`` (a descriptor, or the queue's
    configuration or doorbell); returns the Failure to expect."""
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
        words[0] |= int(rng.integers(8, 256))
        return put(words)
    if kind == "reserved_flags":
        # The firmware checks the flag bits of every known opcode before acting on it
        # (firmware/queues.c read_head), so any opcode gets an error record.
        opcode = RESERVED_FLAG_OPS[wl.seed % len(RESERVED_FLAG_OPS)]
        fields = {Opcode.GEMM: gemm, Opcode.DMA_LOAD: dma, Opcode.DMA_STORE: dma}.get(opcode, {})
        words = encode(opcode, tag=tag, **fields)
        words[0] |= 1 << int(rng.integers(9, 16))
        return put(words)
    if kind == "reserved_payload":
        return put(Opcode.GEMM, reserved=1 << int(rng.integers(0, 15)), **gemm)
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
        wl.configs[q] = _widen(cfg, p, shift.nbytes)
        row = caps.acc_rows - 1
        put(Opcode.VECTOR, src_addr=0, dst_addr=0, rows=1, mult_addr=row, shift_addr=row)
        wl.insert(q, pos, encode(Opcode.BARRIER, tag=b._next_tag()))
        wl.insert(q, pos, encode(Opcode.DMA_LOAD, tag=b._next_tag(), host_addr=p, host_row_stride=0,
                                 row_bytes=4 * caps.dim, rows=1, planes=1, local_addr=row, acc=1))
        return Failure(code, pos + 2)
    if kind == "dma_decerr":
        wl.configs[q] = _widen(cfg, decerr_addr, 8)
        opcode = (Opcode.DMA_LOAD, Opcode.DMA_STORE)[int(rng.integers(2))]
        return put(opcode, host_addr=decerr_addr, **dma)
    if kind in ("watchdog_gemm", "watchdog_vec"):
        if kind == "watchdog_gemm":
            return put(Opcode.GEMM, _expect=ErrorCode.WATCHDOG, **gemm)
        return put(Opcode.VECTOR, _expect=ErrorCode.WATCHDOG, src_addr=0, dst_addr=0, rows=1,
                   mult_addr=0, shift_addr=0)
    # Configuration faults: the queue halts when it becomes active (or on its first record).
    if kind == "fetch_decerr":
        wl.configs[q] = config(ring_base=decerr_addr)
    elif kind == "cpl_decerr":
        wl.configs[q] = config(cpl_base=decerr_addr)
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


def _widen(cfg, addr, n):
    """``cfg`` with its window grown to include ``[addr, addr + n)``."""
    lo = min(cfg.window_base, addr)
    hi = max(cfg.window_base + cfg.window_size, addr + n)
    return QueueConfig(cfg.ring_base, cfg.log2, cfg.cpl_base, lo, hi - lo)


def error_scenario(caps, seed, kind, *, host_bytes, decerr_addr=None, queue=None, jobs=24,
                   poll=400, budget=3_000_000, watchdog=4000):
    """Inject error ``kind`` (a key of :data:`ERROR_KINDS`) on one queue while the others run a
    DAG; check the halt, the error record and QUEUE_ERROR; reset the queue (fixing its
    configuration) and run a fresh workload on it from index 0.

    ``queue``: the failing queue; by default :func:`error_queue` (rotated by the seed).

    ``decerr_addr``: a host address whose accesses the device's memory answers with DECERR (the
    golden model: anything at or beyond ``host_bytes``). ``watchdog``: WATCHDOG.CYCLES for the
    hang kinds (the default watchdog is 10**6 cycles)."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}; kinds: {sorted(ERROR_KINDS)}")
    rng = np.random.default_rng(seed)
    q = error_queue(seed) if queue is None else queue
    if decerr_addr is None:
        decerr_addr = host_bytes
    layout = Layout(host_bytes)
    image = _random_host(seed, host_bytes)
    yield HostWrite(0, image)
    bases = yield from _event_bases()
    hang = kind.startswith("watchdog")
    # The background must not use the engine the hang freezes: the first command it starts after
    # DEBUG_HANG must be the injected one.
    engines = (Opcode.DMA_LOAD, Opcode.DMA_STORE) if hang else ENGINE_OPS
    others = [x for x in range(QUEUES) if x != q]
    wl, b = build_dag(caps, seed, layout, queues=others, jobs=jobs, event_base=bases,
                      name=f"error {kind} on queue {q}", engines=engines, rng=rng)
    # The failing queue: jobs of its own (no event edges to the others), the fault in between.
    own = DagBuilder(wl, rng, [q], bases, p_extra=0.0, engines=engines)
    own.alloc, own.tag = b.alloc, b.tag
    for _ in range(int(rng.integers(1, 4))):
        own.job(q)
    pos = len(wl.streams[q])
    for _ in range(int(rng.integers(0, 3))):
        own.job(q)
    wl.configs.update(_configs(layout, [q], rng, own.windows()))
    wl.failing[q] = _inject(kind, wl, own, q, pos, decerr_addr)
    if hang:
        yield Write(R.WATCHDOG, watchdog)
        yield Write(R.DEBUG_HANG, R.DEBUG_HANG.GEMM.put(1) if kind == "watchdog_gemm" else R.DEBUG_HANG.VEC.put(1))
    report = yield from run_workload(wl, host_image=image, poll=poll, budget=budget)
    if hang:
        yield Write(R.WATCHDOG, R.WATCHDOG.CYCLES.reset)
    # ---- reset the failed queue with a sound configuration and run again from index 0
    yield Write(reg("Q_CTRL", q), 0)
    wl2, _ = build_dag(caps, seed + 1, layout, queues=[q], jobs=max(4, jobs // 4),
                       event_base=(yield from _event_bases()), name=f"after {kind} on queue {q}")
    yield from configure(q, wl2.configs[q], enable=False)
    yield from reset_queue(q, enable=True)
    irq = yield Read(R.IRQ_STATUS)
    if R.IRQ_STATUS.QUEUE_ERROR.get(irq) >> q & 1:
        raise ScoreboardError(f"{wl.name} seed={seed}: QUEUE_ERROR[{q}] still set after W1C")
    report.phases.append((yield from run_workload(wl2, poll=poll, budget=budget)))
    return report
