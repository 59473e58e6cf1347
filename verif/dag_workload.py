"""Random command-queue workloads, legal by construction: descriptor streams per queue with a
random DAG of SIGNAL_EVENT/WAIT_EVENT edges and BARRIERs (:class:`DagBuilder`, :func:`build_dag`),
and what the scoreboard needs to judge them (:class:`Workload`, :class:`Desc`, :class:`Failure`).

No device I/O here: the host queue driver (verif/queue_host.py) submits a workload, the scoreboard
(verif/queue_scoreboard.py) checks it, verif/chip_scenarios.py puts them together. Every random
choice comes from the ``rng`` (seeded by the caller), so one seed gives the same workload in every
process.
"""
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from spec.chip import EVENTS, QUEUES, SFU_LUT_ENTRIES
from spec.commands import decode, encode
from spec.descriptors import DESCRIPTOR_FIELDS, ENGINE_OPCODES, ErrorCode, Opcode

from .ring_layout import M32, Layout, QueueConfig


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


class HostAlloc:
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
    with accumulate adds to C), ``p_sfu`` (a special-function job: int8 rows of 1 to 2 array
    widths, partial last segments, loaded into segments; SOFTMAX (causal or not), LAYERNORM,
    RMSNORM with random int32 gamma/beta, EMUL, or LUT when the regions have room for a table;
    in place; the segments stored back, zero tails included). Vector epilogues draw bias, ReLU,
    residual add (of the job's A rows) and max-reduce independently, so every subset occurs.
    GEMMs read B as loaded or transposed, sometimes as several batch items on the same rows.
    """

    REGIONS = 4     # local regions per queue
    ACC_REGION = 8  # copy: <= 8 rows; compute: C 4 + mult, shift, bias; SFU: gamma 2 + beta 2

    @classmethod
    def spad_region_rows(cls, caps):
        """Scratchpad rows of one region: copy <= 8 rows; compute A 4 + B dim + out 4; SFU x 4 +
        b 4 and, when every queue's regions still fit, a lookup table (256 / dim rows)."""
        plain = caps.dim + 8
        with_lut = plain + SFU_LUT_ENTRIES // caps.dim
        return with_lut if QUEUES * cls.REGIONS * with_lut <= caps.spad_rows else plain

    def __init__(self, wl, rng, queues, event_base, *, p_dep=0.5, p_compute=0.3, p_extra=0.15,
                 p_overlap=0.15, p_accumulate=0.25, p_sfu=0.2, engines=ENGINE_OPCODES):
        self.wl, self.rng, self.queues = wl, rng, list(queues)
        caps = wl.caps
        self.dim = d = caps.dim
        self.spad_region = self.spad_region_rows(caps)
        self.acc_region = self.ACC_REGION
        self.buf = 64 * d
        need_spad = QUEUES * self.REGIONS * self.spad_region
        need_acc = QUEUES * self.REGIONS * self.acc_region
        if need_spad > caps.spad_rows or need_acc > caps.acc_rows:
            raise ValueError(f"scenario needs {need_spad} scratchpad and {need_acc} accumulator rows")
        self.sfu_ops = [op for op in (Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.RMSNORM, Opcode.EMUL)
                        if op in engines]
        if Opcode.LUT in engines and self.spad_region > d + 8:
            self.sfu_ops.append(Opcode.LUT)
        self.p_sfu = p_sfu if self.sfu_ops else 0.0
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
        self.signal_seqs = {q: [] for q in queues}  # their seqs (ascending), for bisect
        self.alloc = HostAlloc(rng, wl.layout.data_base, wl.layout.host_bytes)
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
        self.signal_seqs[q].append(d.seq)
        return d

    def order_after(self, q, last):
        """Make everything appended to ``q`` from now on run after Desc ``last``."""
        if last.queue == q:
            if self.ordered[q] < last.seq:
                self.barrier(q)
            return
        r = last.queue
        k = bisect_right(self.signal_seqs[r], last.seq)       # the first signal after ``last``
        sig = self.signals[r][k] if k < len(self.signals[r]) else self.signal(r)
        w = self.add(q, Opcode.WAIT_EVENT, event=sig.event[0], value=sig.event[1])
        w.event = sig.event
        self.wl.edges.append((sig, w))
        return sig

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
        draw = rng.random()
        if self.compute and draw < self.p_compute:
            last, out = self._compute_job(q, src, spad0, acc0)
        elif draw < self.p_compute + self.p_sfu:
            last, out = self._sfu_job(q, src, spad0, acc0)
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

    # Where a job's host data lives. Each job takes fresh buffers; a subclass may place them
    # elsewhere (verif/stress.py recycles output buffers, which needs more ordering).
    def input_bytes(self, size):
        """Host address of ``size`` bytes of random input data, written before the run."""
        return self.fresh(size, self.rng.integers(0, 256, size, dtype=np.uint8))

    def param_data(self):
        """Random per-channel parameters of a compute job: three accumulator rows (int32
        multiplier, shift, bias) as bytes."""
        d = self.dim
        return np.stack([self.rng.integers(1, 1 << 20, d), self.rng.integers(0, 24, d),
                         self.rng.integers(-1 << 16, 1 << 16, d)]).astype("<i4").tobytes()

    def param_rows(self):
        """Host address of a compute job's parameter rows (:meth:`param_data`), written before
        the run."""
        data = self.param_data()
        return self.fresh(len(data), data)

    def output(self, q, size):
        """Host address of the ``size``-byte output buffer of a job of queue ``q`` (the job's
        DMA_STORE, appended next, writes it)."""
        return self.fresh(max(size, 1))

    def _source(self, src, size):
        """(addr, bytes available) to read ``size`` bytes from: a dependency's output or fresh data."""
        if src is not None and src[2] >= size:
            return src[1], src[2]
        return self.input_bytes(self.buf), self.buf

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
        out = self.output(q, span2)
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
        b = self.input_bytes(d * d)
        self._dma(q, Opcode.DMA_LOAD, b, d * d, host_row_stride=d, row_bytes=d, rows=d,
                  planes=1, local_addr=b_rows, local_row_stride=1)
        p = self.param_rows()
        self._dma(q, Opcode.DMA_LOAD, p, 3 * 4 * d, host_row_stride=4 * d, row_bytes=4 * d,
                  rows=3, planes=1, local_addr=mult_row, local_row_stride=1, acc=1)
        self.barrier(q)
        # B as loaded, or the same rows read as B transposed; sometimes two batch items on the
        # same rows (each repeats the first, or adds it again with accumulate)
        gemm = dict(a_addr=a_rows, b_addr=b_rows, c_addr=c_rows, m=m, k_tiles=1, n_tiles=1,
                    b_transpose=int(rng.random() < 0.3),
                    batches_m1=int(rng.choice([0] * 7 + [1, 4])))
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
        out = self.output(q, n_out * d)
        last = self._dma(q, Opcode.DMA_STORE, out, n_out * d, host_row_stride=d, row_bytes=d,
                         rows=n_out, planes=1, local_addr=out_rows, local_row_stride=1)
        return last, (out, n_out * d)

    def _load_rows(self, q, src, local, rows, length, segs):
        """DMA-load ``rows`` logical rows of ``length`` bytes into segments at ``local`` (segment
        ``s`` of row ``r`` at ``local + s*rows + r``); lanes past ``length`` hold the next bytes
        of the host buffer, which the SFU must ignore."""
        d = self.dim
        span = (rows - 1) * length + (segs - 1) * d + d
        addr, avail = self._source(src, span)
        host = addr + int(self.rng.integers(0, avail - span + 1))
        self._dma(q, Opcode.DMA_LOAD, host, span, host_row_stride=length, host_plane_stride=d,
                  row_bytes=d, rows=rows, planes=segs, local_addr=local, local_row_stride=1,
                  local_plane_stride=rows)

    def _sfu_job(self, q, src, spad0, acc0):
        """Load int8 rows (and the op's parameters), run one SFU command on them in place, store
        the result's segments (lanes past the row written as 0 by the SFU)."""
        rng, d = self.rng, self.dim
        op = self.sfu_ops[int(rng.integers(len(self.sfu_ops)))]
        r = lambda lo, hi: int(rng.integers(lo, hi + 1))
        length = r(1, 2 * d)
        segs = -(-length // d)
        rows = r(1, 4 // segs)                   # x: at most 4 rows of segments
        self._load_rows(q, src, spad0, rows, length, segs)
        f = dict(rows=rows, length=length, seg_stride=rows, dst_addr=spad0)
        if op == Opcode.EMUL:
            self._load_rows(q, None, spad0 + 4, rows, length, segs)
            f.update(a_addr=spad0, b_addr=spad0 + 4, mult=r(0, 0xFFFF), shift=r(8, 24),
                     a_zero_point=r(0, 255), b_zero_point=r(0, 255), out_zero_point=r(0, 255))
        else:
            f["src_addr"] = spad0
        if op == Opcode.SOFTMAX:
            f.update(mult=r(0, 0xFFFF), causal=r(0, 1), mask_offset=r(0, 2 * d))
        elif op in (Opcode.LAYERNORM, Opcode.RMSNORM):
            params = self.input_bytes(2 * segs * 4 * d)      # gamma, beta: any int32
            self._dma(q, Opcode.DMA_LOAD, params, 2 * segs * 4 * d, host_row_stride=4 * d,
                      row_bytes=4 * d, rows=2 * segs, planes=1, local_addr=acc0,
                      local_row_stride=1, acc=1)
            f.update(gamma_addr=acc0, beta_addr=acc0 + segs, shift=r(10, 30),
                     in_zero_point=r(0, 255), out_zero_point=r(0, 255), eps_mant=r(0, 0xFFFF),
                     eps_exp=r(0, 40))
        elif op == Opcode.LUT:
            table = self.input_bytes(SFU_LUT_ENTRIES)
            self._dma(q, Opcode.DMA_LOAD, table, SFU_LUT_ENTRIES, host_row_stride=d, row_bytes=d,
                      rows=SFU_LUT_ENTRIES // d, planes=1, local_addr=spad0 + 8, local_row_stride=1)
            f["table_addr"] = spad0 + 8
        self.barrier(q)
        self.add(q, op, **f)
        self.barrier(q)
        size = rows * segs * d
        out = self.output(q, size)
        last = self._dma(q, Opcode.DMA_STORE, out, size, host_row_stride=segs * d,
                         host_plane_stride=d, row_bytes=d, rows=rows, planes=segs,
                         local_addr=spad0, local_row_stride=1, local_plane_stride=rows)
        return last, (out, size)

    def windows(self):
        """Each queue's DMA window: the span of the host bytes its DMAs touch (with a margin)."""
        out = {}
        for q in self.queues:
            spans = [(a, a + n) for a, n in self.touched[q] if n]
            lo = min((a for a, _ in spans), default=self.wl.layout.data_base)
            hi = max((b for _, b in spans), default=lo)
            out[q] = (lo, hi - lo)
        return out


def queue_configs(layout, queues, rng, windows):
    return {q: QueueConfig(ring_base=layout.ring_base(q), log2=int(rng.integers(2, 6)),
                           cpl_base=layout.cpl_base(q), window_base=windows[q][0],
                           window_size=windows[q][1]) for q in queues}


def new_workload(name, caps, seed, layout, queues):
    return Workload(name, seed, caps, layout, {}, {q: [] for q in queues})


def build_dag(caps, seed, layout, *, queues=tuple(range(QUEUES)), jobs=40, event_base=None,
              name="dag", engines=ENGINE_OPCODES, rng=None, knobs=None):
    """A random DAG workload (no host I/O): see :class:`DagBuilder` (``knobs``: its ``p_dep``,
    ``p_compute``, ``p_extra``, ``p_overlap``, ``p_accumulate``)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    wl = new_workload(name, caps, seed, layout, queues)
    b = DagBuilder(wl, rng, queues, event_base or {e: 0 for e in range(EVENTS)}, engines=engines,
                   **(knobs or {}))
    for _ in range(jobs):
        b.job()
    wl.configs = queue_configs(layout, queues, rng, b.windows())
    return wl, b
