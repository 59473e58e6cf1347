"""Queue controller: fetches descriptors from host command rings and writes completion records.

This is the hardware half of ``docs/queues.md`` (sections "Indices", "Host programming sequence",
"Completion area", "Queue controller"). Per queue it keeps the free-running 32-bit indices P
(producer, from the doorbell), F (fetch) and C (consumer), a prefetch FIFO of descriptors, and the
halt/reset state; one AXI4 manager port serves every queue:

* **Fetch** (``fetch_fsm``): among the queues that are active, have descriptors to fetch and have
  room in their prefetch FIFO, round-robin starting after the queue served last, one read at a
  time: descriptor F is one INCR burst of ``256 / data_bits`` full-width beats from
  ``ring_base + 32 * (F mod 2**ring_log2)``. It is pushed into the queue's FIFO and F advances
  when all beats are OKAY; a SLVERR/DECERR beat halts the queue (``AXI_SLVERR``/``AXI_DECERR``,
  error index F), drops the descriptor and leaves F. A read in flight when its queue is reset is
  discarded on return (no push, no error). A well-formed ``EXEC_LIST`` is expanded in its place
  (docs/queues.md "Command lists"): argument table, then per entry the entry and its patch
  block (``SHIFT``/``APPLY`` per patch, ``PUSH``); a looped list (``loops_m1``) also loads its
  strides and, after each pass, adds them to the arguments (``STEP``, one row per cycle).
* **Completion writer** (``cpl_fsm``): requests (``cpl_valid`` + payload) wait in a FIFO of
  ``cpl_depth`` and are served in order. For a request of queue q with consumer index C it writes
  the 16-byte :class:`~hdl_gen.descriptor.CompletionRecord` of descriptor C to
  ``cpl_base + 16 + 16 * (C mod 2**ring_log2)`` (one INCR burst, all strobes), waits for its B,
  then writes C + 1 to the 4 bytes at ``cpl_base`` (one beat, strobes on those 4 bytes) and waits
  for its B — unless the request asks for no interrupt and no halt, its record write succeeded
  and the next request in the FIFO is of the same queue: that one's consumer write then covers
  both (a stream of records costs one write each, the index lagging by at most the FIFO). Then C += 1, ``retired`` pulses, a halt request or a failed write halts the queue,
  and ``cpl_irq``/``error_irq`` pulse (both writes have completed by then).
* **Reset** (``reset`` pulse): the queue stops fetching and its head is no longer offered
  (``ready`` 0), a read in flight for it is discarded; ``qreset_req`` asks the firmware. Once
  acknowledged (``qreset_ack``, or at once while ``fw_running`` is 0), ``drained`` (the issue unit
  owes the queue no completion request) and no completion request of the queue is left in the
  writer, the FIFO is emptied, P, F, C, the halt state and the error clear, ``cleared`` pulses and
  ``resetting`` drops. (A ``pop`` while resetting still works: the firmware may pop the head it
  had already read.)

AXI use: full-width beats (``*size`` = log2 of the data bytes), INCR bursts, ``*prot`` 0. At most
one read and one write burst of the controller's own are outstanding at a time (a write's AW and W
are offered together; the next write starts after the previous B). Valid and payload come from
registers and never depend on a ready. A descriptor never crosses 4 KiB (32-byte aligned), nor does
a record (16-byte aligned). Reads and writes each go through a bus guard (hdl_gen/axi_guard.py),
which assigns the IDs (from the low ``axi_id_bits - 1`` bits) and bounds every wait:

* **Bus timeout** (``bus_timeout`` cycles, BUS_TIMEOUT.CYCLES; 0 disables it). A descriptor read
  whose address or data the bus withholds that long is abandoned (its late data is dropped by ID):
  the queue halts with ``BUS_TIMEOUT`` (or the AXI error of a beat already received), error index
  F, and the fetcher moves on to the other queues. A record or consumer write that times out is
  abandoned (its remaining W beats go out without strobes); the consumer write is skipped after a
  record that timed out; the request completes as a failed write (C += 1, the queue halts with
  ``BUS_TIMEOUT`` or the AXI error seen first, ``error_irq``), and the queue's completion area is
  taken as dead: the later requests of the queue complete the same way without touching the bus,
  so they do not each cost a timeout, until the queue is reset.
"""
from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, Axi4Signature, connect_axi
from .axi_guard import AxiReadGuard, AxiWriteGuard
from .config import KakiConfig
from .descriptor import (DESCRIPTOR_BITS, DESCRIPTOR_WORDS, LIST_ARGS, LIST_PATCHES, RECORD_BITS,
                         CompletionRecord, Descriptor, ErrorCode, ListEntryFlags, Opcode, PatchWord)
from .formal import Axi4Manager, Rules, contract_for, fifo_for, implies, past
from .round_robin import round_robin

__all__ = ["QueueController", "QueuePortSignature"]

MAX_LOG2 = 15           #: largest ring size exponent (Q_RING_SIZE.LOG2 is 1..15)
#: A queue's next read: its ring, a list's argument table, a list's entries, the list's end (the
#: EXEC_LIST again).
RING, ARGS, ITEMS, END = range(4)
ARG_ROWS = LIST_ARGS // 8       #: 32-byte rows of argument words per queue
ITEM_BIT, END_BIT = DESCRIPTOR_BITS, DESCRIPTOR_BITS + 1     #: prefetch FIFO entry: list marks


class QueuePortSignature(wiring.Signature):
    """One queue's connection to its registers and the firmware, seen from the controller.

    Inputs (from the host/firmware register blocks):

    * ``ring_base`` [32], ``ring_log2`` [4], ``cpl_base`` [32]: ``Q_RING_BASE``,
      ``Q_RING_SIZE.LOG2``, ``Q_CPL_BASE`` (levels).
    * ``enable`` [1]: ``Q_CTRL.ENABLE`` (level).
    * ``reset`` [1]: one-cycle pulse, ``Q_CTRL.RESET`` written with 1.
    * ``doorbell`` [32], ``doorbell_we`` [1]: the new producer index and its one-cycle write strobe
      (``doorbell`` is sampled in the strobe cycle).
    * ``pop`` [1]: one-cycle pulse, drop the FIFO head (the issue unit's, or the firmware's
      ``Q_POP``).
    * ``qreset_ack`` [1]: one-cycle pulse, ``QRESET_ACK``.
    * ``drained`` [1]: level, the issue unit holds no popped descriptor of the queue without a
      completion request (a reset may complete).

    Outputs:

    * ``producer`` [32], ``fetch`` [32], ``consumer`` [32]: P, F, C.
    * ``active`` [1]: enabled, configuration checked, not halted, not resetting.
    * ``halted`` [1], ``resetting`` [1]: ``Q_STATUS.HALTED``/``RESETTING``.
    * ``prefetched`` [8]: descriptors in the prefetch FIFO.
    * ``error`` [8]: ``ErrorCode`` that halted the queue (0 while not halted); ``error_index`` [32].
    * ``head`` [256]: the FIFO head descriptor (valid while ``prefetched`` != 0);
      ``head_index`` [32]: its index (F − the ring descriptors in the FIFO; a list item's is its
      EXEC_LIST's); ``head_item`` / ``head_end`` [1]: the head is a command-list item / a list's
      end (docs/queues.md "Command lists").
    * ``ready`` [1]: ``active`` and the FIFO is not empty (``WORK.QREADY``).
    * ``qreset_req`` [1]: level, resetting and not yet acknowledged (``WORK.QRESET``).
    * ``cleared`` [1]: one-cycle pulse, the reset completes (indices zeroed at the clock edge).
    * ``cpl_irq`` [1], ``error_irq`` [1]: one-cycle pulses that set ``IRQ_STATUS.QUEUE_CPL`` /
      ``QUEUE_ERROR``; ``retired`` [1]: one-cycle pulse per record written (``PERF_Q_RETIRED``).
    """

    def __init__(self):
        super().__init__({
            "ring_base": In(32), "ring_log2": In(4), "cpl_base": In(32), "enable": In(1),
            "reset": In(1), "doorbell": In(32), "doorbell_we": In(1), "pop": In(1),
            "qreset_ack": In(1), "drained": In(1),
            "producer": Out(32), "fetch": Out(32), "consumer": Out(32), "active": Out(1),
            "halted": Out(1), "resetting": Out(1), "prefetched": Out(8), "error": Out(8),
            "error_index": Out(32), "head": Out(DESCRIPTOR_BITS), "head_index": Out(32),
            "head_item": Out(1), "head_end": Out(1),
            "ready": Out(1), "qreset_req": Out(1), "cpl_irq": Out(1), "error_irq": Out(1),
            "retired": Out(1), "cleared": Out(1),
        })


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, not {value}")


def _low_mask(log2):
    """MAX_LOG2-bit mask with the low ``log2`` bits set (``2**log2 - 1``; 0 for log2 = 0)."""
    return Cat(*[log2 > k for k in range(MAX_LOG2)])


def _resp_error(resp):
    return Mux(resp == 3, ErrorCode.AXI_DECERR, ErrorCode.AXI_SLVERR)


class QueueController(wiring.Component):
    """Host command rings -> prefetch FIFOs, and completion records -> host memory.

    Parameters
    ----------
    config : KakiConfig
        ``axi_addr_bits``, ``axi_data_bits`` (32, 64 or 128) and ``axi_id_bits``. Ring and
        completion bases are 32-bit; with ``axi_addr_bits`` < 32 their upper bits are dropped.
    n_queues : int
        Queues, 1..16.
    prefetch : int
        Descriptors each queue's FIFO holds (``CAP_QUEUES.PREFETCH``), 2..255.
    cpl_depth : int
        Completion requests that can wait (``CPL_STATUS.FREE`` when idle), 2..15.

    Ports (directions seen from the controller; ``qb = max(1, ceil(log2(n_queues)))``; widths at
    the default KakiConfig)
    ---------------------------------------------------------------------------------------------
    axi : Out(Axi4Signature(axi_addr_bits, axi_data_bits, axi_id_bits))
        AXI4 manager, flat members (Verilog ``axi__awaddr`` …): Out ``awid`` [4] ``awaddr`` [32]
        ``awlen`` [8] ``awsize`` [3] ``awburst`` [2] ``awprot`` [3] ``awvalid``, In ``awready``;
        Out ``wdata`` [64] ``wstrb`` [8] ``wlast`` ``wvalid``, In ``wready``; In ``bid`` [4]
        ``bresp`` [2] ``bvalid``, Out ``bready``; Out ``arid`` ``araddr`` ``arlen`` ``arsize``
        ``arburst`` ``arprot`` ``arvalid``, In ``arready``; In ``rid`` ``rdata`` [64] ``rresp``
        [2] ``rlast`` ``rvalid``, Out ``rready``. IDs 0, INCR, full-width beats.
    q : Out(QueuePortSignature()).array(n_queues)
        Per-queue registers and status (Verilog ``q__<i>__ring_base`` …); see
        :class:`QueuePortSignature`.
    cpl_valid : In(1)
        One-cycle strobe: queue a completion request with the payload below.
    cpl_queue : In(qb) [2], cpl_irq : In(1), cpl_halt : In(1), cpl_flags : In(8),
    cpl_status : In(8), cpl_opcode : In(8), cpl_tag : In(16), cpl_timestamp : In(32)
        The request (from the issue unit, with the ``TIMESTAMP`` of the request cycle). ``irq``:
        pulse the queue's ``cpl_irq`` after the writes; ``halt``: halt the queue with
        ``error = status`` and ``error_index`` = the record's index.
    cpl_free : Out(4)
        Requests that can be queued now (``CPL_STATUS.FREE``).
    cpl_overflow : Out(1)
        Sticky: a request arrived while the FIFO was full (or named a queue >= n_queues) and was
        dropped. A firmware fault indicator; cleared only by the controller's reset.
    fw_running : In(1)
        The control core runs; while 0 a queue reset is acknowledged at once.
    bus_timeout : In(32)
        BUS_TIMEOUT.CYCLES (module docstring, "Bus timeout").

    Behaviour details (resolutions of points docs/queues.md leaves open)
    --------------------------------------------------------------------
    * Activation check: when ``enable & ~halted & ~resetting`` rises (so again after a disable
      or a reset), the configuration is checked in that cycle: ``ring_base & 31``,
      ``cpl_base & 15`` or ``ring_log2`` outside 1..15 halt the queue with ``MISALIGNED``
      (``error_index`` = C); otherwise ``active`` rises in the next cycle. Later changes of the
      configuration while active are not rechecked; address arithmetic ignores the low 5
      (ring) / 4 (completion) address bits, so nothing unaligned ever reaches the bus.
    * Doorbell: ``(doorbell − C') mod 2**32 > 2**ring_log2`` halts with ``RING_OVERFLOW``,
      ``error_index`` = the value, P unchanged; otherwise P = value. C' is C + 1 while the
      queue's consumer write is in progress, else C: the host can read C + 1 from memory before
      the write's B response arrives here, and may then rightly fill the ring up to C + 1 + size.
      This applies whether or not the queue is enabled or halted; a doorbell while resetting is
      ignored (the reset zeroes P).
    * Fetching happens while ``(F − C) < (P − C) <= 2**ring_log2 + 1`` (mod 2**32), which is
      ``F ≠ P`` for a producer that never moves back; a producer moved back behind F (but not
      behind C, which would be an overflow) simply stops fetching until a doorbell puts P past F
      again, also once the consumer passes it (then ``P − C`` wraps; the bound, the largest
      ``P − C`` a doorbell can leave, is what keeps the slots the host never wrote unread: found
      by the formal proof, docs/formal.md).
    * Halting keeps the first code and index; two halt causes of one queue in the same cycle are
      ranked MISALIGNED, RING_OVERFLOW, fetch error, completion. ``error_irq`` pulses for every
      halt cause, also when the queue was already halted (each failed record raises
      ``QUEUE_ERROR``, as docs/queues.md asks). A completion whose write failed halts with the AXI
      code even when it also asked for a halt (the host may not be able to read the record).
      ``cpl_irq`` follows the request's ``irq`` bit whether or not the writes failed.
    * A halted queue keeps its FIFO (``prefetched`` unchanged, ``ready`` 0); ``pop`` works whenever
      the FIFO is non-empty, so a firmware that saw a head just before a halt stays consistent.
    * A reset pulse while already resetting has no further effect. Completion requests of a
      resetting queue are still written (with its current C) before the reset completes.
    """

    def __init__(self, config=KakiConfig(), n_queues=4, prefetch=4, cpl_depth=4):
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {type(config).__name__}")
        _check_int("n_queues", n_queues, 1, 16)
        # (depth 1 would give lib.fifo zero-width pointers, which lint rejects)
        _check_int("prefetch", prefetch, 2, 255)
        _check_int("cpl_depth", cpl_depth, 2, 15)
        db = config.axi_data_bits
        if db not in (32, 64, 128):
            raise ValueError(f"axi_data_bits must be 32, 64 or 128, not {db}")
        if config.axi_id_bits < 2:
            raise ValueError(f"axi_id_bits must be at least 2 (the top ID bit is the chip arbiter's), "
                             f"not {config.axi_id_bits}")
        self.config = config
        self.n_queues = n_queues
        self.prefetch = prefetch
        self.cpl_depth = cpl_depth
        self.data_bytes = db // 8
        self.beat_bits = (self.data_bytes - 1).bit_length()        # AxSIZE
        self.desc_beats = DESCRIPTOR_BITS // db
        self.rec_beats = RECORD_BITS // db
        self.qbits = max(1, (n_queues - 1).bit_length())
        super().__init__({
            "axi": Out(Axi4Signature(config.axi_addr_bits, db, config.axi_id_bits)),
            "q": Out(QueuePortSignature()).array(n_queues),
            "cpl_valid": In(1), "cpl_queue": In(self.qbits), "cpl_irq": In(1), "cpl_halt": In(1),
            "cpl_flags": In(8), "cpl_status": In(8), "cpl_opcode": In(8), "cpl_tag": In(16),
            "cpl_item": In(16),
            "cpl_timestamp": In(32),
            "cpl_free": Out(4), "cpl_overflow": Out(1),
            "fw_running": In(1), "bus_timeout": In(32),
        })

    # ---------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        n = self.n_queues
        db, bb = self.data_bytes, self.beat_bits
        cfg = self.config
        args = (cfg.axi_addr_bits, db * 8, cfg.axi_id_bits - 1, 1)
        m.submodules.fetch_guard = rg = AxiReadGuard(*args)
        m.submodules.cpl_guard = wg = AxiWriteGuard(*args)
        fetch_abort = Signal(name="fetch_abort")           # the descriptor read timed out
        cpl_abort = Signal(name="cpl_abort")               # a completion write timed out
        for guard, abort in ((rg, fetch_abort), (wg, cpl_abort)):
            connect_axi(m, guard.down, self.axi)
            m.d.comb += [guard.limit.eq(self.bus_timeout), guard.abandon.eq(abort)]
        # The guards' manager sides, read and write, under the port's member names.
        axi = SimpleNamespace(**{name: getattr(g.up, name) for g in (rg, wg)
                                 for name in g.up.signature.members})

        # ---- per-queue state --------------------------------------------------------------------
        P = [Signal(32, name=f"q{i}_p") for i in range(n)]
        F = [Signal(32, name=f"q{i}_f") for i in range(n)]
        C = [Signal(32, name=f"q{i}_c") for i in range(n)]
        halted = [Signal(name=f"q{i}_halted") for i in range(n)]
        err = [Signal(8, name=f"q{i}_err") for i in range(n)]
        err_index = [Signal(32, name=f"q{i}_err_index") for i in range(n)]
        resetting = [Signal(name=f"q{i}_resetting") for i in range(n)]
        acked = [Signal(name=f"q{i}_acked") for i in range(n)]
        checked = [Signal(name=f"q{i}_checked") for i in range(n)]      # config passed since want rose
        want = [Signal(name=f"q{i}_want") for i in range(n)]
        active = [Signal(name=f"q{i}_active") for i in range(n)]
        pending = [Signal(range(self.cpl_depth + 2), name=f"q{i}_cpl_pending") for i in range(n)]
        reset_done = [Signal(name=f"q{i}_reset_done") for i in range(n)]
        size = [Signal(MAX_LOG2 + 2, name=f"q{i}_ring_size") for i in range(n)]
        cpl_dead = [Signal(name=f"q{i}_cpl_dead") for i in range(n)]    # its writes timed out
        items = [Signal(range(self.prefetch + 1), name=f"q{i}_items") for i in range(n)]  # list items in the FIFO
        fifos = []
        for i in range(n):
            qp = self.q[i]
            # a descriptor, and whether it is a list item / a list's end
            f = fifo_for(platform, self, fifo.SyncFIFO, width=DESCRIPTOR_BITS + 2,
                         depth=self.prefetch)
            fifos.append(f)
            # Emptied when the reset completes, not when it starts: the firmware may be between
            # reading a head and forwarding it when the reset begins, and must forward a real
            # descriptor (which it then retires before acknowledging).
            m.submodules[f"q{i}_fifo"] = ResetInserter({"sync": reset_done[i]})(f)
            m.d.comb += [
                want[i].eq(qp.enable & ~halted[i] & ~resetting[i]),
                active[i].eq(want[i] & checked[i]),
                qp.producer.eq(P[i]), qp.fetch.eq(F[i]), qp.consumer.eq(C[i]),
                qp.active.eq(active[i]), qp.halted.eq(halted[i]), qp.resetting.eq(resetting[i]),
                qp.prefetched.eq(f.level), qp.error.eq(err[i]), qp.error_index.eq(err_index[i]),
                qp.head.eq(f.r_data[:DESCRIPTOR_BITS]), qp.head_item.eq(f.r_data[ITEM_BIT]),
                qp.head_end.eq(f.r_data[END_BIT]),
                qp.head_index.eq(F[i] - (f.level - items[i])),
                qp.ready.eq(active[i] & f.r_rdy),
                qp.qreset_req.eq(resetting[i] & ~acked[i]),
                qp.cleared.eq(reset_done[i]),
                f.r_en.eq(qp.pop),
                size[i].eq(Const(1, 1) << qp.ring_log2),
            ]

        # ---- fetch: ring descriptors, and the argument tables and entries of command lists ------
        lmode = [Signal(2, name=f"q{i}_list_mode") for i in range(n)]      # what the next read is
        lnext = [Signal(32, name=f"q{i}_list_next") for i in range(n)]     # the next entry
        lleft = [Signal(16, name=f"q{i}_list_left") for i in range(n)]    # entries not pushed
        anext = [Signal(32, name=f"q{i}_args_next") for i in range(n)]     # next argument burst
        aleft = [Signal(6, name=f"q{i}_args_left") for i in range(n)]      # words not loaded
        arow = [Signal(range(ARG_ROWS), name=f"q{i}_args_row") for i in range(n)]
        nargs = [Signal(6, name=f"q{i}_args") for i in range(n)]           # the list's args
        # a looped list: its first entry and size (each pass restarts there), the passes after
        # this one, and whether the argument bursts now load the strides
        lbase = [Signal(32, name=f"q{i}_list_base") for i in range(n)]
        lsize = [Signal(16, name=f"q{i}_list_entries") for i in range(n)]
        loops = [Signal(16, name=f"q{i}_list_loops") for i in range(n)]
        sphase = [Signal(name=f"q{i}_args_strides") for i in range(n)]
        m.submodules.list_args = args_mem = Memory(shape=DESCRIPTOR_BITS, depth=n * ARG_ROWS,
                                                   init=[])
        args_w = args_mem.write_port()
        args_r = args_mem.read_port(domain="comb")
        # a second read port for the pass step: no multiplexer in front of the patch's read, the
        # block's critical path (45.9 MHz routed with a shared port)
        args_step_r = args_mem.read_port(domain="comb")
        m.submodules.list_strides = strides_mem = Memory(shape=DESCRIPTOR_BITS,
                                                         depth=n * ARG_ROWS, init=[])
        strides_w = strides_mem.write_port()
        strides_r = strides_mem.read_port(domain="comb")
        elig = []
        addr = []
        for i in range(n):
            qp = self.q[i]
            e = Signal(name=f"q{i}_fetch_elig")
            ahead = (P[i] - C[i])[:32]
            ring_ok = ((F[i] - C[i])[:32] < ahead) & (ahead <= size[i] + 1)
            on_ring = (lmode[i] == RING) | (lmode[i] == END)
            m.d.comb += e.eq(active[i] & (fifos[i].level < self.prefetch) & (ring_ok | ~on_ring))
            elig.append(e)
            a = Signal(32, name=f"q{i}_fetch_addr")
            slot = F[i][:MAX_LOG2] & _low_mask(qp.ring_log2)
            m.d.comb += a.eq(Mux(on_ring, (qp.ring_base & ~Const(31, 32)) + (slot << 5),
                                 Mux(lmode[i] == ARGS, anext[i], lnext[i])))
            addr.append(a)
        rr_last = Signal(self.qbits, name="fetch_rr_last", init=n - 1)
        rr_any, rr_sel = round_robin(m, elig, rr_last, "fetch_rr")

        fq = Signal(self.qbits, name="fetch_q")             # queue of the read in flight
        kind = Signal(2, name="fetch_kind")                 # its list mode when the read began
        patch_rd = Signal(name="fetch_patch_rd")            # the read is a list entry's patch block
        ar_valid = Signal(name="fetch_ar_valid")
        ar_addr = Signal(32, name="fetch_ar_addr")
        r_beat = Signal(range(self.desc_beats), name="fetch_r_beat")
        r_buf = Signal(DESCRIPTOR_BITS - db * 8, name="fetch_r_buf")   # every beat but the last
        r_err = Signal(name="fetch_r_err")                 # an earlier beat of the burst failed
        r_code = Signal(8, name="fetch_r_code")
        discard = Signal(name="fetch_discard")             # the queue was reset: drop the data
        busy = Signal(name="fetch_busy")
        fq_reset = Signal(name="fetch_q_reset")
        m.d.comb += [
            axi.araddr.eq(ar_addr), axi.arlen.eq(self.desc_beats - 1),
            axi.arsize.eq(bb), axi.arburst.eq(BURST_INCR), axi.arprot.eq(0),
            axi.arvalid.eq(ar_valid),
            fq_reset.eq(Array(self.q[i].reset for i in range(n))[fq]),
        ]
        with m.If(busy & fq_reset):
            m.d.sync += discard.eq(1)

        r_hs = Signal(name="fetch_r_hs")
        r_done = Signal(name="fetch_r_done")               # last beat accepted this cycle
        beat_bad = Signal(name="fetch_beat_bad")
        data_in = Signal(DESCRIPTOR_BITS, name="fetch_data")   # the burst, in its last beat
        m.d.comb += [r_hs.eq(axi.rvalid & axi.rready), r_done.eq(r_hs & axi.rlast),
                     beat_bad.eq(axi.rresp[1]), data_in.eq(Cat(r_buf, axi.rdata))]
        keep = Signal(name="fetch_keep")                   # the burst ends and its queue wants it
        bad = Signal(name="fetch_bad")
        good = Signal(name="fetch_good")                   # ... and all its beats were OKAY
        m.d.comb += [keep.eq(r_done & ~discard & ~fq_reset), bad.eq(r_err | beat_bad),
                     good.eq(keep & ~bad)]

        # a ring descriptor that starts a list (a malformed EXEC_LIST is pushed for the firmware)
        in_desc = Descriptor(data_in)
        lcmd = in_desc.payload.exec_list
        starts = Signal(name="fetch_list_start")
        m.d.comb += starts.eq((in_desc.opcode == Opcode.EXEC_LIST) & (in_desc.flags.reserved == 0)
                              & (lcmd.reserved == 0) & (lcmd.entries != 0)
                              & (lcmd.args <= LIST_ARGS) & (lcmd.list_addr[:5] == 0)
                              & (lcmd.args_addr[:5] == 0))
        entry_flags = data.View(ListEntryFlags, in_desc.flags.as_value())

        # a looped list's pass ended: every argument row += its stride row, one row a cycle
        step = Signal(name="fetch_step")
        step_row = Signal(range(ARG_ROWS), name="fetch_step_row")
        stepped = Signal(DESCRIPTOR_BITS, name="fetch_step_sum")
        m.d.comb += stepped.eq(Cat(*((args_step_r.data.word_select(k, 32)
                                      + strides_r.data.word_select(k, 32))[:32] for k in range(8))))

        # the list entry being patched, its patch words, and the patch applied this cycle
        ldesc = Signal(DESCRIPTOR_BITS, name="list_desc")
        pwords = Signal(32 * LIST_PATCHES, name="list_patches")
        npatch = Signal(3, name="list_npatch")
        pj = Signal(3, name="list_pj")
        pw = data.View(PatchWord, pwords.word_select(pj, 32))
        width = Signal(7, name="patch_width")
        pos_lo = Signal(5, name="patch_shift")
        pos_w = Signal(3, name="patch_word")
        patch_bad = Signal(name="patch_bad")
        arg_val = Signal(32, name="patch_arg")
        # a patch takes two cycles (SHIFT, APPLY): the argument read, shifted into place and its
        # field mask go through registers before the 64-bit add into the descriptor words, so
        # the argument table's read and the adder are not one path (it limited the block to
        # ~41 MHz on ECP5)
        addend = Signal(64, name="patch_addend")
        mask = Signal(64, name="patch_mask")
        at_w = Signal(3, name="patch_at_word")
        window = Signal(64, name="patch_window")
        patched = Signal(64, name="patch_result")
        ext = Cat(ldesc, Const(0, 32))
        cur_args = Array(nargs)[fq]
        m.d.comb += [
            width.eq(pw.width_m1 + 1), pos_lo.eq(pw.pos[:5]), pos_w.eq(pw.pos[5:]),
            patch_bad.eq((pw.pos < 32) | (pw.pos + width > DESCRIPTOR_BITS) | (pos_lo + width > 64)
                         | (pw.arg >= cur_args) | (pw.reserved0 != 0) | (pw.reserved != 0)),
            args_r.addr.eq(fq * ARG_ROWS + pw.arg[3:]),
            args_step_r.addr.eq(fq * ARG_ROWS + step_row),
            strides_r.addr.eq(fq * ARG_ROWS + step_row),
            arg_val.eq(args_r.data.word_select(pw.arg[:3], 32)),
            window.eq(Cat(ext.word_select(at_w, 32), ext.word_select(at_w + 1, 32))),
            patched.eq((window & ~mask) | ((window + addend)[:64] & mask)),
        ]

        list_fail = Signal(name="fetch_list_fail")         # BAD_LIST for the queue of the read
        item_push = Signal(name="fetch_item_push")         # the patched entry enters the FIFO
        with m.FSM(init="IDLE", name="fetch_fsm") as fetch_fsm:
            with m.State("IDLE"):
                with m.If(rr_any):
                    m.d.sync += [
                        fq.eq(rr_sel), rr_last.eq(rr_sel), ar_valid.eq(1), kind.eq(Array(lmode)[rr_sel]),
                        patch_rd.eq(0), ar_addr.eq(Array(addr)[rr_sel]), r_beat.eq(0), r_err.eq(0),
                        discard.eq(Array(self.q[i].reset for i in range(n))[rr_sel]),
                    ]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += busy.eq(1)
                with m.If(axi.arready):
                    m.d.sync += ar_valid.eq(0)
                    m.next = "R"
                with m.Elif(rg.timeout):               # the guard keeps offering the address
                    m.d.comb += fetch_abort.eq(1)
                    m.d.sync += ar_valid.eq(0)
                    m.next = "IDLE"
            with m.State("R"):
                m.d.comb += [busy.eq(1), axi.rready.eq(1)]
                with m.If(r_hs):
                    with m.If(r_beat != self.desc_beats - 1):
                        m.d.sync += [r_buf.word_select(r_beat, db * 8).eq(axi.rdata),
                                     r_beat.eq(r_beat + 1)]
                    with m.If(beat_bad & ~r_err):
                        m.d.sync += [r_err.eq(1), r_code.eq(_resp_error(axi.rresp))]
                with m.If(r_done):
                    m.next = "IDLE"
                    with m.If(good & (kind == ITEMS) & patch_rd):
                        m.d.sync += [pwords.eq(data_in[:len(pwords)]), pj.eq(0)]
                        m.next = "SHIFT"
                    with m.Elif(good & (kind == ITEMS) & (in_desc.opcode == Opcode.EXEC_LIST)):
                        m.d.comb += list_fail.eq(1)            # lists do not nest
                    with m.Elif(good & (kind == ITEMS)):
                        m.d.sync += [ldesc.eq(Cat(data_in[:9], Const(0, 3), data_in[12:])),
                                     npatch.eq(entry_flags.patches)]
                        with m.If(entry_flags.patches != 0):
                            m.d.sync += [ar_valid.eq(1), ar_addr.eq(ar_addr + 32), r_beat.eq(0),
                                         patch_rd.eq(1)]
                            m.next = "AR"
                        with m.Else():
                            m.next = "PUSH"
                with m.Elif(rg.timeout):               # the guard drops the rest of the burst
                    m.d.comb += fetch_abort.eq(1)
                    m.next = "IDLE"
            with m.State("SHIFT"):                     # patch pj: check it, place its argument
                m.d.comb += busy.eq(1)
                with m.If(discard | fq_reset):
                    m.next = "IDLE"
                with m.Elif(patch_bad):
                    m.d.comb += list_fail.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [addend.eq(arg_val << pos_lo), at_w.eq(pos_w),
                                 mask.eq(((Const(2**64 - 1, 64) >> (64 - width)[:6]) << pos_lo)[:64])]
                    m.next = "APPLY"
            with m.State("APPLY"):                     # ... and add it into its field
                m.d.comb += busy.eq(1)
                with m.If(discard | fq_reset):
                    m.next = "IDLE"
                with m.Else():
                    for k in range(DESCRIPTOR_WORDS):
                        with m.If(at_w == k):
                            m.d.sync += ldesc.word_select(k, 32).eq(patched[:32])
                            if k + 1 < DESCRIPTOR_WORDS:
                                m.d.sync += ldesc.word_select(k + 1, 32).eq(patched[32:])
                    m.d.sync += pj.eq(pj + 1)
                    m.next = "SHIFT"
                    with m.If(pj + 1 == npatch):
                        m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += [busy.eq(1), item_push.eq(~discard & ~fq_reset)]
                m.next = "IDLE"
                with m.If((Array(lleft)[fq] == 1) & (Array(loops)[fq] != 0) & (cur_args != 0)):
                    m.d.sync += step_row.eq(0)
                    m.next = "STEP"
            with m.State("STEP"):                      # the next pass's arguments
                m.d.comb += [busy.eq(1), step.eq(~discard & ~fq_reset)]
                m.d.sync += step_row.eq(step_row + 1)
                with m.If(discard | fq_reset | (step_row == (cur_args - 1)[3:])):
                    m.next = "IDLE"

        fetch_causes = []                                  # per queue: (cond, code, index)
        fail = Signal(name="fetch_fail")                   # the queue of the read halts
        fail_code = Signal(8, name="fetch_fail_code")
        m.d.comb += [fail.eq((keep & bad) | (fetch_abort & ~discard & ~fq_reset) | list_fail),
                     fail_code.eq(Mux(list_fail, ErrorCode.BAD_LIST,
                                      Mux(r_err, r_code, Mux(fetch_abort, ErrorCode.BUS_TIMEOUT,
                                                             _resp_error(axi.rresp)))))]
        loading = good & (kind == ARGS)
        m.d.comb += [args_w.addr.eq(fq * ARG_ROWS + Mux(step, step_row, Array(arow)[fq])),
                     args_w.data.eq(Mux(step, stepped, data_in)),
                     args_w.en.eq((loading & ~Array(sphase)[fq]) | step),
                     strides_w.addr.eq(fq * ARG_ROWS + Array(arow)[fq]), strides_w.data.eq(data_in),
                     strides_w.en.eq(loading & Array(sphase)[fq])]
        for i in range(n):
            mine = good & (fq == i)
            ring_push = Signal(name=f"q{i}_fetch_push")
            push_item = Signal(name=f"q{i}_item_push")
            qp = self.q[i]
            m.d.comb += [
                ring_push.eq(mine & ((kind == END) | ((kind == RING) & ~starts))),
                push_item.eq(item_push & (fq == i)),
                fifos[i].w_en.eq(ring_push | push_item),
                fifos[i].w_data.eq(Mux(push_item, Cat(ldesc, Const(1, 1), Const(0, 1)),
                                       Cat(data_in, Const(0, 1), kind == END))),
            ]
            popped_item = qp.pop & fifos[i].r_rdy & fifos[i].r_data[ITEM_BIT]
            m.d.sync += items[i].eq(items[i] + push_item - popped_item)
            with m.If(ring_push):
                m.d.sync += F[i].eq(F[i] + 1)
            with m.If(mine & (kind == END)):
                m.d.sync += lmode[i].eq(RING)
            with m.If(mine & (kind == RING) & starts):
                m.d.sync += [lmode[i].eq(Mux(lcmd.args != 0, ARGS, ITEMS)),
                             lnext[i].eq(lcmd.list_addr), lleft[i].eq(lcmd.entries),
                             lbase[i].eq(lcmd.list_addr), lsize[i].eq(lcmd.entries),
                             loops[i].eq(lcmd.loops_m1), sphase[i].eq(0),
                             anext[i].eq(lcmd.args_addr), aleft[i].eq(lcmd.args),
                             nargs[i].eq(lcmd.args), arow[i].eq(0)]
            with m.If(mine & (kind == ARGS)):
                m.d.sync += [anext[i].eq(anext[i] + 32), arow[i].eq(arow[i] + 1),
                             aleft[i].eq(Mux(aleft[i] > 8, aleft[i] - 8, 0))]
                with m.If(aleft[i] <= 8):
                    with m.If(~sphase[i] & (loops[i] != 0)):      # a looped list: its strides next
                        m.d.sync += [sphase[i].eq(1), aleft[i].eq(nargs[i]), arow[i].eq(0)]
                    with m.Else():
                        m.d.sync += lmode[i].eq(ITEMS)
            with m.If(push_item):
                m.d.sync += [lnext[i].eq(lnext[i] + Mux(npatch != 0, 64, 32)),
                             lleft[i].eq(lleft[i] - 1)]
                with m.If((lleft[i] == 1) & (loops[i] != 0)):      # the next pass
                    m.d.sync += [lnext[i].eq(lbase[i]), lleft[i].eq(lsize[i]),
                                 loops[i].eq(loops[i] - 1)]
                with m.Elif(lleft[i] == 1):
                    m.d.sync += lmode[i].eq(END)
            with m.If(reset_done[i]):                    # after the rest: a reset abandons a list
                m.d.sync += [lmode[i].eq(RING), items[i].eq(0)]
            fetch_causes.append((fail & (fq == i), fail_code, F[i]))

        # ---- completion requests ----------------------------------------------------------------
        req_layout = data.StructLayout({
            "queue": self.qbits, "irq": 1, "halt": 1, "flags": 8, "status": 8, "opcode": 8,
            "tag": 16, "item": 16, "timestamp": 32})
        m.submodules.cpl_fifo = cf = fifo_for(platform, self, fifo.SyncFIFO,
                                              width=req_layout.size, depth=self.cpl_depth)
        wreq = data.View(req_layout, cf.w_data)
        push_ok = Signal(name="cpl_push_ok")
        m.d.comb += [
            wreq.queue.eq(self.cpl_queue), wreq.irq.eq(self.cpl_irq), wreq.halt.eq(self.cpl_halt),
            wreq.flags.eq(self.cpl_flags), wreq.status.eq(self.cpl_status),
            wreq.opcode.eq(self.cpl_opcode), wreq.tag.eq(self.cpl_tag), wreq.item.eq(self.cpl_item),
            wreq.timestamp.eq(self.cpl_timestamp),
            push_ok.eq(self.cpl_valid & cf.w_rdy & (self.cpl_queue < n)),
            cf.w_en.eq(push_ok),
            self.cpl_free.eq(self.cpl_depth - cf.level),
        ]
        with m.If(self.cpl_valid & ~push_ok):
            m.d.sync += self.cpl_overflow.eq(1)

        # ---- completion writer ------------------------------------------------------------------
        req = Signal(req_layout, name="cpl_req")
        rec = Signal(CompletionRecord, name="cpl_rec")     # comb: the record of the request
        rec_index = Signal(32, name="cpl_rec_index")
        cons_addr = Signal(32, name="cpl_cons_addr")
        aw_valid = Signal(name="cpl_aw_valid")
        aw_addr = Signal(32, name="cpl_aw_addr")
        aw_len = Signal(8, name="cpl_aw_len")
        w_valid = Signal(name="cpl_w_valid")
        w_buf = Signal(RECORD_BITS, name="cpl_w_buf")
        w_strb = Signal(db, name="cpl_w_strb")
        w_beat = Signal(range(max(2, self.rec_beats)), name="cpl_w_beat")
        w_nbeats = Signal(range(self.rec_beats + 1), name="cpl_w_nbeats")
        w_last = Signal(name="cpl_w_last")
        wr_err = Signal(name="cpl_wr_err")                 # the record write failed
        wr_code = Signal(8, name="cpl_wr_code")
        m.d.comb += [
            w_last.eq(w_beat == w_nbeats - 1),
            axi.awaddr.eq(aw_addr), axi.awlen.eq(aw_len), axi.awsize.eq(bb),
            axi.awburst.eq(BURST_INCR), axi.awprot.eq(0), axi.awvalid.eq(aw_valid),
            axi.wdata.eq(w_buf.word_select(w_beat, db * 8)), axi.wstrb.eq(w_strb),
            axi.wlast.eq(w_last), axi.wvalid.eq(w_valid),
        ]
        aw_hs = Signal(name="cpl_aw_hs")
        w_hs = Signal(name="cpl_w_hs")
        sent = Signal(name="cpl_sent")        # AW and the last W beat accepted by the end of this cycle
        m.d.comb += [
            aw_hs.eq(aw_valid & axi.awready), w_hs.eq(w_valid & axi.wready),
            sent.eq((~aw_valid | axi.awready) & (~w_valid | (axi.wready & w_last))),
        ]
        # AW and W of a burst are offered together and retire independently.
        with m.If(aw_hs):
            m.d.sync += aw_valid.eq(0)
        with m.If(w_hs):
            with m.If(w_last):
                m.d.sync += w_valid.eq(0)
            with m.Else():
                m.d.sync += w_beat.eq(w_beat + 1)

        b_hs = Signal(name="cpl_b_hs")
        b_bad = Signal(name="cpl_b_bad")
        m.d.comb += [b_hs.eq(axi.bvalid & axi.bready), b_bad.eq(axi.bresp[1])]
        finish = Signal(name="cpl_finish")    # the consumer write was answered: retire now
        cons_busy = Signal(name="cpl_cons_busy")   # C + 1 may already be in host memory
        idx_sent = Signal(name="cpl_idx_sent")     # this request's consumer write was issued
        wq = req.queue
        sel_cpl_base = Signal(32, name="cpl_sel_base")
        sel_log2 = Signal(4, name="cpl_sel_log2")
        sel_c = Signal(32, name="cpl_sel_c")
        m.d.comb += [
            sel_cpl_base.eq(Array(self.q[i].cpl_base for i in range(n))[wq] & ~Const(15, 32)),
            sel_log2.eq(Array(self.q[i].ring_log2 for i in range(n))[wq]),
            sel_c.eq(Array(C)[wq]),
            rec.index.eq(sel_c), rec.opcode.eq(req.opcode), rec.status.eq(req.status),
            rec.queue.eq(wq), rec.flags.eq(req.flags), rec.tag.eq(req.tag), rec.item.eq(req.item),
            rec.timestamp.eq(req.timestamp),
        ]
        # A record that asks for no interrupt and halts nothing, written OK, with the next
        # request already waiting for the same queue, leaves its consumer write to that one.
        coalesce = Signal(name="cpl_coalesce")
        m.d.comb += coalesce.eq(~req.irq & ~req.halt & ~wr_err & ~b_bad & cf.r_rdy
                                & (data.View(req_layout, cf.r_data).queue == wq))
        with m.FSM(init="IDLE", name="cpl_fsm") as cpl_fsm:
            with m.State("IDLE"):
                m.d.comb += cf.r_en.eq(1)
                with m.If(cf.r_rdy):
                    m.d.sync += req.eq(cf.r_data)
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.sync += idx_sent.eq(0)
                # Addresses and data are registered, so a host rewriting Q_CPL_BASE or
                # Q_RING_SIZE cannot change a payload while its valid is up. C of the queue
                # cannot change meanwhile: only this writer advances it, and a reset of the
                # queue waits for its requests.
                slot = sel_c[:MAX_LOG2] & _low_mask(sel_log2)
                m.d.sync += [
                    rec_index.eq(sel_c), cons_addr.eq(sel_cpl_base),
                    aw_addr.eq(sel_cpl_base + 16 + (slot << 4)),
                    aw_len.eq(self.rec_beats - 1),
                    w_buf.eq(rec.as_value()), w_strb.eq((1 << db) - 1), w_beat.eq(0),
                    w_nbeats.eq(self.rec_beats),
                ]
                with m.If(Array(cpl_dead)[wq]):
                    m.d.sync += [wr_err.eq(1), wr_code.eq(ErrorCode.BUS_TIMEOUT)]
                    m.next = "SKIP"
                with m.Else():
                    m.d.sync += [aw_valid.eq(1), w_valid.eq(1), wr_err.eq(0)]
                    m.next = "REC"
            with m.State("REC"):
                with m.If(sent):
                    m.next = "REC_B"
                with m.Elif(wg.timeout):
                    m.d.comb += cpl_abort.eq(1)
                    m.next = "SKIP"
            with m.State("REC_B"):
                m.d.comb += axi.bready.eq(1)
                with m.If(b_hs & coalesce):
                    # the next request's consumer write covers this record too
                    m.d.comb += finish.eq(1)
                    m.next = "IDLE"
                with m.Elif(b_hs):
                    with m.If(b_bad):
                        m.d.sync += [wr_err.eq(1), wr_code.eq(_resp_error(axi.bresp))]
                    # the consumer index C + 1: one beat, the 4 bytes at cpl_base (16-byte
                    # aligned, so byte lanes 0..3 of its beat)
                    m.d.sync += [
                        aw_addr.eq(cons_addr), aw_len.eq(0), aw_valid.eq(1),
                        w_buf.eq(rec_index + 1), w_strb.eq(0xF), w_beat.eq(0), w_nbeats.eq(1),
                        w_valid.eq(1), idx_sent.eq(1),
                    ]
                    m.next = "IDX"
                with m.Elif(wg.timeout):
                    m.d.comb += cpl_abort.eq(1)
                    m.next = "SKIP"
            with m.State("IDX"):
                m.d.comb += cons_busy.eq(1)
                with m.If(sent):
                    m.next = "IDX_B"
                with m.Elif(wg.timeout):
                    m.d.comb += cpl_abort.eq(1)
                    m.next = "SKIP"
            with m.State("IDX_B"):
                m.d.comb += [axi.bready.eq(1), cons_busy.eq(1)]
                with m.If(b_hs):
                    m.d.comb += finish.eq(1)
                    m.next = "IDLE"
                with m.Elif(wg.timeout):
                    m.d.comb += cpl_abort.eq(1)
                    m.next = "SKIP"
            with m.State("SKIP"):
                # A write timed out or the queue's completion area is dead: complete as failed.
                # A consumer write that timed out may still land (the guard sends what was
                # offered): the host may see C + 1 until C becomes C + 1 here.
                m.d.comb += [finish.eq(1), cons_busy.eq(idx_sent)]
                m.next = "IDLE"
        with m.If(cpl_abort):                   # the guard finishes what was offered
            m.d.sync += [aw_valid.eq(0), w_valid.eq(0), wr_err.eq(1),
                         wr_code.eq(Mux(wr_err, wr_code, ErrorCode.BUS_TIMEOUT))]

        fin_bad = Signal(name="cpl_fin_bad")
        fin_code = Signal(8, name="cpl_fin_code")
        m.d.comb += [fin_bad.eq(wr_err | b_bad),
                     fin_code.eq(Mux(wr_err, wr_code, _resp_error(axi.bresp)))]

        # ---- per-queue control: activation check, doorbell, halt, reset -------------------------
        for i in range(n):
            qp = self.q[i]
            done = Signal(name=f"q{i}_cpl_done")
            m.d.comb += done.eq(finish & (wq == i))
            with m.If(done):
                m.d.sync += C[i].eq(C[i] + 1)
            m.d.sync += [qp.retired.eq(done), qp.cpl_irq.eq(done & req.irq)]
            inc = push_ok & (self.cpl_queue == i)
            m.d.sync += pending[i].eq(pending[i] + inc - done)

            # activation: checked in the cycle want rises; active from the next cycle
            bad_cfg = Signal(name=f"q{i}_bad_cfg")
            m.d.comb += bad_cfg.eq((qp.ring_base[:5] != 0) | (qp.cpl_base[:4] != 0)
                                   | (qp.ring_log2 == 0))      # 4 bits: never above MAX_LOG2
            m.d.sync += checked[i].eq(want[i] & (checked[i] | ~bad_cfg))
            misaligned = want[i] & ~checked[i] & bad_cfg

            # doorbell, checked against the consumer index the host may already see: C + 1 from
            # the moment the consumer write is issued (the memory can show it before its B
            # response reaches us)
            c_seen = Signal(32, name=f"q{i}_c_seen")
            over = Signal(name=f"q{i}_db_overflow")
            db_ev = Signal(name=f"q{i}_db_write")
            m.d.comb += [
                c_seen.eq(C[i] + (cons_busy & (wq == i))),
                over.eq((qp.doorbell - c_seen)[:32] > size[i]),
                db_ev.eq(qp.doorbell_we & ~resetting[i]),
            ]
            with m.If(db_ev & ~over):
                m.d.sync += P[i].eq(qp.doorbell)

            # halt causes, highest priority first
            causes = [
                (misaligned, ErrorCode.MISALIGNED, C[i]),
                (db_ev & over, ErrorCode.RING_OVERFLOW, qp.doorbell),
                fetch_causes[i],
                (done & (req.halt | fin_bad), Mux(fin_bad, fin_code, req.status), rec_index),
            ]
            h_any = Signal(name=f"q{i}_halt_any")
            h_code = Signal(8, name=f"q{i}_halt_code")
            h_index = Signal(32, name=f"q{i}_halt_index")
            m.d.comb += h_any.eq(Cat(*[c for c, _, _ in causes]).any())
            for cond, code, index in reversed(causes):      # the last assignment wins
                with m.If(cond):
                    m.d.comb += [h_code.eq(code), h_index.eq(index)]
            with m.If(h_any & ~halted[i]):
                m.d.sync += [halted[i].eq(1), err[i].eq(h_code), err_index[i].eq(h_index)]
            m.d.sync += qp.error_irq.eq(h_any)

            # reset: request, acknowledge, complete once no completion of the queue is left
            with m.If(qp.reset & ~resetting[i]):
                m.d.sync += [resetting[i].eq(1), acked[i].eq(0)]
            with m.Elif(resetting[i] & (qp.qreset_ack | ~self.fw_running)):
                m.d.sync += acked[i].eq(1)
            m.d.comb += reset_done[i].eq(resetting[i] & acked[i] & (pending[i] == 0) & qp.drained)
            with m.If(cpl_abort & (wq == i)):
                m.d.sync += cpl_dead[i].eq(1)
            with m.If(reset_done[i]):
                m.d.sync += [P[i].eq(0), F[i].eq(0), C[i].eq(0), halted[i].eq(0), err[i].eq(0),
                             err_index[i].eq(0), resetting[i].eq(0), acked[i].eq(0),
                             cpl_dead[i].eq(0)]
        if contract_for(platform, self):
            self._formal_contract(
                m, platform, axi=axi, guards=(rg, wg), fifos=fifos, cpl_fifo=cf, pending=pending,
                acked=acked,
                reset_done=reset_done, fetch_issue=fetch_fsm.ongoing("IDLE") & rr_any,
                fetch_sel=rr_sel, items=items, ring_read=Array(
                    (lm == RING) | (lm == END) for lm in lmode)[rr_sel],
                fetch_states=[fetch_fsm.ongoing(s)
                              for s in ("IDLE", "AR", "R", "SHIFT", "APPLY", "PUSH")],
                cpl_states=[cpl_fsm.ongoing(s)
                            for s in ("IDLE", "SETUP", "REC", "REC_B", "IDX", "IDX_B", "SKIP")],
                fetch_keep=busy & ~discard, fetch_q=fq, cons_busy=cons_busy, cpl_queue=wq,
                writing=~cf.r_en, rec_index=rec_index, cons_addr=cons_addr, req_layout=req_layout,
                idx_sent=idx_sent,
                record=Cat(*[cpl_fsm.ongoing(s) for s in ("REC", "REC_B", "IDX", "IDX_B")]).any())
        return m

    # ---------------------------------------------------------------------------------------------
    def _formal_contract(self, m, platform, *, axi, guards, fifos, cpl_fifo, pending, acked, reset_done,
                         fetch_issue, fetch_sel, items, ring_read, fetch_states, cpl_states, fetch_keep, fetch_q, cons_busy,
                         cpl_queue, writing, rec_index, cons_addr, record, req_layout, idx_sent):
        """The queue controller's contract (docs/formal.md).

        The contract is stated at the manager sides of the two bus guards (``axi``: the fetcher
        on ``fetch_guard.up``, the completion writer on ``cpl_guard.up``), each restarted when
        its side abandons a transfer after a timeout; the guards' proof (``hdl_gen/axi_guard.py``)
        carries the AXI4 rules to the ``axi`` port. Both sides keep the AXI4 manager rules
        (full-width INCR bursts of one descriptor or one record, one read and one write
        outstanding). Ring arithmetic, per queue, with C' the consumer index the host may
        already see (C + 1 while the consumer write is in flight):

        * ``ring.fetch``: a read of the ring (not of a command list's table or entries) reads
          descriptor F only when C' <= F < P and P - C' <= ring
          size (the host has written it and cannot be rewriting its slot), at
          ``ring_base + 32 * (F mod size)``;
        * ``ring.doorbell``: a doorbell with (value - C') mod 2**32 > size is refused (P kept)
          and halts the queue with RING_OVERFLOW unless it was halted already (or is halted in
          the same cycle for a misaligned configuration); any other takes effect;
        * ``ring.record``: record C goes to ``cpl_base + 16 + 16 * (C mod size)`` and the
          consumer index to ``cpl_base``; ``ring.consumer``: that index is C + 1, in the four
          low byte lanes;
        * ``ring.count``: F - C equals the ring descriptors prefetched (the FIFO's entries but
          the list items, ``list.items``), popped and not yet requested, and requested and not
          yet written; C, F never move otherwise;
        * ``ring.config``: an active queue has a valid configuration (aligned bases, size >= 2);
        * ``fifo.*``: the prefetch FIFO is never written when full; a completion request is
          queued exactly when the request FIFO has room, else it sets ``cpl_overflow``.

        ``ring.inv`` states what the controller keeps between those events, so that the proof
        closes by induction: a read in flight has room in its queue's FIFO; P is at most size
        ahead of C', or (moved back) at most size + 1 behind F; F - C stays within size + 1; each
        queue's pending count is its requests in the request FIFO plus the one being written,
        which once set up carries its queue's C; both FSMs are in exactly one state.

        The environment: the guards keep the AXI4 subordinate rules towards each side (restarted
        at an abandon) and time out at any moment; each queue's configuration (ring base, size,
        completion base) is fixed for the run; the firmware runs (``fw_running``); the issue unit
        requests a completion only for a descriptor it popped and reports ``drained`` only when
        it owes none; nothing pops a queue after its reset was acknowledged (docs/queues.md,
        "Reset").
        """
        n = self.n_queues
        for name, guard, beats in (("fetch", guards[0], self.desc_beats),
                                   ("cpl", guards[1], self.rec_beats)):
            m.submodules[f"formal_{name}_axi"] = ResetInserter({"sync": guard.abandon})(
                Axi4Manager(guard.up, max_len=beats, max_reads=1, max_writes=1,
                            no_cover=("w.early",), name=name))
        rules = Rules(m, platform, "ring")
        started = past(m, Const(1), "formal_started")
        rules.rely("fw.running", self.fw_running)
        accepted = self.cpl_valid & cpl_fifo.w_rdy & (self.cpl_queue < n)
        rules.guarantee("fifo.cpl", cpl_fifo.w_en == accepted, group="fifo")
        rules.guarantee("fifo.cpl", implies(started & ~past(m, self.cpl_overflow, "formal_ovf"),
                                            self.cpl_overflow == past(m, self.cpl_valid & ~accepted,
                                                                      "formal_drop")),
                        group="fifo")
        ring_issue = fetch_issue & ring_read         # a read of a ring slot, not of a list
        issued_to = past(m, Mux(ring_issue, fetch_sel, 0), "formal_fetch_q")
        issued = past(m, ring_issue, "formal_fetch_issued")
        for i in range(n):
            qp, f = self.q[i], fifos[i]
            for cfg in (qp.ring_base, qp.ring_log2, qp.cpl_base):
                rules.rely("q.config", implies(started, cfg == past(m, cfg, f"formal_q{i}_cfg")))
            rules.guarantee("fifo.prefetch", implies(f.w_en, f.w_rdy), group="fifo")
            # descriptors popped by the firmware and not yet requested for completion
            owed = Signal(range(2 ** MAX_LOG2 + 2), name=f"formal_q{i}_owed")
            pop = qp.pop & f.r_rdy & ~qp.head_item         # list items are owed no record
            request = accepted & (self.cpl_queue == i)
            m.d.sync += owed.eq(Mux(reset_done[i], 0, owed + pop - request))
            rules.rely("fw.retire", implies(self.cpl_valid & (self.cpl_queue == i), owed != 0))
            # the issue unit is drained only when it owes nothing; nothing pops an acknowledged
            # resetting queue (its requests may still come, until it is drained)
            rules.rely("issue.drained", implies(qp.drained, owed == 0))
            rules.rely("fw.ack", implies(qp.qreset_ack | (acked[i] & qp.resetting), ~qp.pop))
            P, F, C = qp.producer, qp.fetch, qp.consumer
            rules.guarantee("ring.count", (F - C)[:32] == f.level - items[i] + owed + pending[i])
            marked = [(k < f.level) & e[ITEM_BIT] for k, e in enumerate(f.entries)]
            rules.guarantee("list.items", items[i] == sum(marked))
            size = Signal(MAX_LOG2 + 2, name=f"formal_q{i}_size")
            c_seen = Signal(32, name=f"formal_q{i}_c_seen")
            m.d.comb += [size.eq(Const(1, 1) << qp.ring_log2),
                         c_seen.eq(C + (cons_busy & (cpl_queue == i)))]
            fetching = ring_issue & (fetch_sel == i)
            rules.guarantee("ring.fetch", implies(
                fetching, ((F - c_seen)[:32] < (P - c_seen)[:32]) & ((P - c_seen)[:32] <= size)))
            slot = past(m, ((qp.ring_base & ~Const(31, 32))
                            + ((F[:MAX_LOG2] & (size - 1)[:MAX_LOG2]) << 5))[:len(axi.araddr)],
                        f"formal_q{i}_slot")
            rules.guarantee("ring.fetch", implies(issued & (issued_to == i), axi.araddr == slot))
            # doorbell: refused exactly when it would overflow the ring
            over = (qp.doorbell - c_seen)[:32] > size
            ring = qp.doorbell_we & ~qp.resetting
            took = past(m, ring & ~over, f"formal_q{i}_db_took")
            refused = past(m, ring & over, f"formal_q{i}_db_refused")
            value = past(m, qp.doorbell, f"formal_q{i}_db_value")
            old_p = past(m, P, f"formal_q{i}_old_p")
            rules.guarantee("ring.doorbell", implies(took, P == value))
            rules.guarantee("ring.doorbell", implies(refused, (P == old_p) & qp.halted
                                                     & ((qp.error == ErrorCode.RING_OVERFLOW)
                                                        | past(m, qp.halted, f"formal_q{i}_was")
                                                        | (qp.error == ErrorCode.MISALIGNED))))
            rules.cover("ring.overflow", refused & (qp.error == ErrorCode.RING_OVERFLOW))
            mine = cpl_queue == i
            rules.guarantee("ring.inv", implies(fetch_keep & (fetch_q == i) & ~qp.reset,
                                                (f.level < self.prefetch)
                                                & ((F - C)[:32] <= size)))
            # P is at most size ahead of C', or (moved back) at most size + 1 behind F
            rules.guarantee("ring.inv", ((P - c_seen)[:32] <= size) | ((F - P)[:32] <= size + 1))
            rules.guarantee("ring.inv", ((F - C)[:32] <= size + 1)
                            & (pending[i] <= self.cpl_depth + 1))
            rules.guarantee("ring.config", implies(qp.active, (qp.ring_log2 != 0)
                                                   & (qp.ring_base[:5] == 0)
                                                   & (qp.cpl_base[:4] == 0)))
            rules.guarantee("ring.inv", implies(writing & mine, pending[i] != 0))
            rules.guarantee("ring.inv", implies(record & mine, rec_index == C))
            rules.cover("ring.fetched", past(m, f.w_en, f"formal_q{i}_pushed") & (f.level == 2))
            rules.cover("ring.retired", qp.retired)
        # each queue's pending count is its requests waiting in the FIFO plus the one in writing
        waiting = [(k < cpl_fifo.level) & (data.View(req_layout, e).queue == i)
                   for i in range(n) for k, e in enumerate(cpl_fifo.entries)]
        for i in range(n):
            rules.guarantee("ring.inv", pending[i] == sum(waiting[i * self.cpl_depth:
                                                                  (i + 1) * self.cpl_depth])
                            + (writing & (cpl_queue == i)))
        rules.guarantee("ring.inv", (sum(fetch_states) == 1) & (sum(cpl_states) == 1))
        in_rec, rec_b, in_idx, idx_b = cpl_states[2:6]
        rules.guarantee("ring.inv", implies(in_idx | idx_b, idx_sent))
        rules.guarantee("ring.inv", implies(in_rec | rec_b, ~idx_sent))
        rules.guarantee("ring.inv", implies(axi.awvalid | axi.wvalid, in_rec | in_idx))
        rules.guarantee("ring.inv", implies(axi.arvalid, fetch_states[1]))
        # records and consumer writes of the queue being served
        base = Array(self.q[i].cpl_base for i in range(n))[cpl_queue] & ~Const(15, 32)
        log2 = Array(self.q[i].ring_log2 for i in range(n))[cpl_queue]
        c = Array(self.q[i].consumer for i in range(n))[cpl_queue]
        rslot = c[:MAX_LOG2] & ((Const(1, 1) << log2) - 1)[:MAX_LOG2]
        aab = len(axi.awaddr)
        rules.guarantee("ring.record", implies(axi.awvalid & ~cons_busy,
                                               axi.awaddr == (base + 16 + (rslot << 4))[:aab]))
        rules.guarantee("ring.record", implies(axi.awvalid & cons_busy, axi.awaddr == base[:aab]))
        rules.guarantee("ring.inv", implies(record, cons_addr == base))
        rules.guarantee("ring.consumer", implies(axi.wvalid & cons_busy, (axi.wstrb == 0xF)
                                                 & (axi.wdata[:32] == c + 1)), group="data")
