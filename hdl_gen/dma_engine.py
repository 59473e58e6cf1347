"""DMA engine: strided copies between host memory (AXI4 master) and the scratchpad/accumulator.

Two independent channels share one AXI4 manager port and run concurrently:

* the **load** channel (``DMA_LOAD``, host -> local) owns AR and R,
* the **store** channel (``DMA_STORE``, local -> host) owns AW, W and B.

Command semantics are those of :class:`~hdl_gen.descriptor.DmaCmd`. This module adds the bus-level
behaviour:

* Every host row is fetched/written with INCR bursts of full-width beats (``arsize``/``awsize`` =
  log2 of the data bytes) starting at the row's address rounded down to the beat size. A row is
  split into several bursts when it would exceed ``config.max_burst_beats`` beats or cross a 4 KiB
  boundary; a burst never spans two rows. Unaligned rows are handled by byte extraction (loads)
  and WSTRB (stores): a store never writes a host byte outside its rows.
* Each channel reaches the port through a bus guard (hdl_gen/axi_guard.py) that assigns the AXI
  IDs: a channel's bursts all carry its current ID (so its responses return in order) from the
  low ``axi_id_bits - 1`` bits (the chip's arbiter uses the top bit).
* Loads keep up to ``config.dma_outstanding`` read bursts in flight; stores keep up to
  ``config.dma_outstanding`` write bursts waiting for their B response.
* The DMA is the lowest-priority requester of the local memories: a write or read that is not
  granted is simply retried. A channel requests local memory only while it is busy, and each
  local row of its command until granted once (a store with ``row_bytes`` 0 reads none). A load
  row that waits for its local write stalls the R channel (``rready`` low) only when the next row
  has also been fully received.

Validation (before any transfer; in this priority order, the first that applies is reported):

1. ``reserved`` != 0 -> ``RESERVED_BITS``
2. ``rows`` == 0, ``planes`` == 0 or ``row_bytes + col_offset`` > local row bytes -> ``BAD_SHAPE``
3. last local row ``local_addr + (planes-1)*local_plane_stride + (rows-1)*local_row_stride``
   >= rows of the chosen memory -> ``LOCAL_RANGE`` (also checked when ``row_bytes`` == 0)
4. ``row_bytes`` != 0 and last host byte ``host_addr + (planes-1)*host_plane_stride +
   (rows-1)*host_row_stride + row_bytes - 1`` >= 2**axi_addr_bits -> ``HOST_RANGE``
5. the channel's window (``load_window``/``store_window``, taken with the command) has ``check``
   set, ``row_bytes`` != 0 and the host bytes ``[host_addr, last host byte]`` are not all inside
   ``[base, base + size)`` -> ``WINDOW`` (the queue's DMA window, docs/queues.md)

``row_bytes == 0`` is legal: a load writes all-zero local rows, a store does nothing.

AXI error responses (SLVERR/DECERR, on R or B): the channel stops issuing new bursts, completes
the W data of bursts already issued, drains every outstanding response, and retires with ``done``
and ``AXI_SLVERR``/``AXI_DECERR`` (the first error seen). A load writes every row before the first
failing row into local memory and neither the failing row nor any later one. A store may have
written rows after the failing one that were already in flight; it never writes outside its rows.

Bus timeout (``bus_timeout`` cycles, BUS_TIMEOUT.CYCLES; 0 disables it): a channel that waits that
long for a handshake or a response on the AXI port retires with ``done`` and ``BUS_TIMEOUT`` (or
the AXI error it was draining for) and abandons its transfers to its guard: a load writes no row
whose data had not fully arrived, later R beats of the abandoned bursts are dropped by ID; a
store's remaining W beats go out with no strobes. The next command starts at once, on a fresh ID.

Resets: ``load_reset`` / ``store_reset`` (the firmware's ENGINE_RESET of DMA_LOAD / DMA_STORE)
reset one channel alone, in the middle of a burst too: its command is forgotten (no ``done``) and
its transfers are abandoned to its guard like a timed-out command's; the other channel, the
guards and the port are not reset, so a command of the other channel completes normally.
"""
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, Axi4Signature, connect_axi
from .axi_guard import AxiReadGuard, AxiWriteGuard
from .config import KakiConfig
from .descriptor import DmaCmd, ErrorCode
from .engine import EngineSignature
from .formal import Axi4Manager, Rules, contract_for, implies, past
from .mem_port import ReadPortSignature, WritePortSignature

__all__ = ["DmaEngine", "DmaWindow"]


class DmaWindow(data.Struct):
    """The host address range a command may touch; ignored unless ``check`` is set."""
    base: 32
    size: 32
    check: 1


def _min(a, b):
    return Mux(a < b, a, b)


class _RowIter:
    """Walks the ``planes`` x ``rows`` row sequence of a command, keeping running sums.

    ``accs`` is a list of ``(width, start, row_stride, plane_stride)``; for each one the iterator
    holds the current row value (``row[i]``) and plane start, and exposes the next row's value
    combinationally (``nxt[i]``). Sums wrap at ``width`` bits (validation guarantees that every
    value actually used fits).
    """

    def __init__(self, m, name, cmd, accs):
        self.cmd, self.accs = cmd, accs
        self.r = Signal(16, name=f"{name}_r")          # rows left in this plane, counting the current
        self.p = Signal(16, name=f"{name}_p")          # planes left, counting the current
        self.active = Signal(name=f"{name}_active")    # the current row exists
        self.row, self.plane, self.nxt = [], [], []
        for i, (w, _start, rs, ps) in enumerate(accs):
            row = Signal(w, name=f"{name}_row{i}")
            plane = Signal(w, name=f"{name}_plane{i}")
            nxt = Signal(w, name=f"{name}_nxt{i}")
            m.d.comb += nxt.eq(Mux(self.r > 1, row + rs, plane + ps))
            self.row.append(row)
            self.plane.append(plane)
            self.nxt.append(nxt)
        self.last = Signal(name=f"{name}_last")
        m.d.comb += self.last.eq((self.r == 1) & (self.p == 1))

    def init(self, m):
        """Restart at the first row (use inside the caller's condition)."""
        m.d.sync += [self.r.eq(self.cmd.rows), self.p.eq(self.cmd.planes), self.active.eq(1)]
        for (_w, start, _rs, _ps), row, plane in zip(self.accs, self.row, self.plane):
            m.d.sync += [row.eq(start), plane.eq(start)]

    def advance(self, m):
        """Step to the next row (use inside the caller's condition)."""
        for row, nxt in zip(self.row, self.nxt):
            m.d.sync += row.eq(nxt)
        with m.If(self.r > 1):
            m.d.sync += self.r.eq(self.r - 1)
        with m.Else():
            m.d.sync += [self.r.eq(self.cmd.rows), self.p.eq(self.p - 1)]
            for plane, nxt in zip(self.plane, self.nxt):
                m.d.sync += plane.eq(nxt)
        with m.If(self.last):
            m.d.sync += self.active.eq(0)


class DmaEngine(wiring.Component):
    """Kaki DMA engine: a load channel (host -> local) and a store channel (local -> host).

    Parameters
    ----------
    config : KakiConfig
        ``dim``, local memory sizes, AXI widths, ``max_burst_beats`` and ``dma_outstanding``.

    Ports (directions seen from the engine; [widths at the default KakiConfig: dim 8, 4x4096
    scratchpad rows, 2x4096 accumulator rows, 32-bit address / 64-bit data / 4-bit ID AXI])
    ---------------------------------------------------------------------------------------------
    load : Out(EngineSignature(DmaCmd))
        ``load.cmd.valid`` In(1), ``load.cmd.ready`` Out(1) (high only when idle),
        ``load.cmd.payload`` In(DmaCmd) [224], ``load.done`` Out(1) one-cycle pulse,
        ``load.error`` Out(ErrorCode) [8] valid with done, ``load.busy`` Out(1) (high from the
        accepting cycle's successor through the done cycle). Executes DMA_LOAD: host -> local.
    store : Out(EngineSignature(DmaCmd))
        Same members for DMA_STORE: local -> host.
    axi : Out(Axi4Signature(axi_addr_bits, axi_data_bits, axi_id_bits))
        AXI4 manager, flat members: Out ``awid`` [4] ``awaddr`` [32] ``awlen`` [8] ``awsize`` [3]
        ``awburst`` [2] ``awprot`` [3] ``awvalid``, In ``awready``; Out ``wdata`` [64] ``wstrb`` [8]
        ``wlast`` ``wvalid``, In ``wready``; In ``bid`` [4] ``bresp`` [2] ``bvalid``, Out ``bready``;
        Out ``arid`` ``araddr`` ``arlen`` ``arsize`` ``arburst`` ``arprot`` ``arvalid``, In ``arready``;
        In ``rid`` ``rdata`` [64] ``rresp`` [2] ``rlast`` ``rvalid``, Out ``rready``. AR/R belong to
        the load channel, AW/W/B to the store channel. IDs are the guards' (below ``2**(axi_id_bits
        - 1)``), bursts INCR with full-width beats, ``*prot`` 0.
    spad_wr : Out(WritePortSignature(spad_addr_bits, dim*8))
        Scratchpad write requester for loads with ``acc`` = 0: Out ``addr`` [14], ``en``,
        ``data`` [64]; In ``gnt``. ``en`` stays up (same addr/data) until ``gnt``.
    acc_wr : Out(WritePortSignature(acc_addr_bits, dim*32))
        Accumulator write requester for loads with ``acc`` = 1: Out ``addr`` [13], ``en``,
        ``data`` [256]; In ``gnt``.
    spad_rd : Out(ReadPortSignature(spad_addr_bits, dim*8))
        Scratchpad read requester for stores with ``acc`` = 0: Out ``addr`` [14], ``en``;
        In ``gnt``, ``data`` [64] (valid the cycle after a granted request).
    acc_rd : Out(ReadPortSignature(acc_addr_bits, dim*32))
        Accumulator read requester for stores with ``acc`` = 1: Out ``addr`` [13], ``en``;
        In ``gnt``, ``data`` [256].
    load_bytes : Out(8)
        Host bytes delivered into local memory this cycle (``row_bytes`` in the cycle a load
        row's local write is granted, else 0): a performance-counter increment.
    store_bytes : Out(8)
        Host bytes accepted by the AXI W channel this cycle (set WSTRB bits of a W handshake).
    load_window, store_window : In(DmaWindow)
        ``base`` [32], ``size`` [32], ``check`` [1]: the host range the channel's next command may
        touch, sampled with the command (validation step 5). Tie to 0 for no window.
    load_reset, store_reset : In(1)
        Synchronous reset of one channel (its bus guard and the port are not reset).
    bus_timeout : In(32)
        BUS_TIMEOUT.CYCLES: the longest wait for the AXI port before a command fails (0: no limit).

    Design notes
    ------------
    * Validation takes three cycles (CHECK: the stride products; CHECK2: sums in 40/52-bit
      arithmetic and compares into a registered error code; CHECK3: start or refuse), so a
      command costs 5 cycles of overhead (accept, CHECK, CHECK2, CHECK3, DONE) plus its
      transfer.
    * Load: the AR issuer walks the rows (running sums, no multipliers) and keeps up to
      ``dma_outstanding`` bursts in flight. The R side collects a row's beats into a buffer of
      ``row_beats_max`` beats; a complete row is extracted (shift by the host misalignment, mask
      to ``row_bytes``, shift to ``col_offset``) into a write-back register while the next row's
      beats already arrive. ``rready`` drops only when a second row completes before the first
      one's local write is granted.
    * Store: the AW issuer runs ahead independently (``dma_outstanding`` bursts awaiting B). Local
      rows are read (retrying until granted) into a two-entry buffer; the W side shifts a row to its
      host alignment, builds WSTRB, and sends beats only for bursts whose AW has been issued, with
      WLAST placed by the same split rule as AW (row end, 4 KiB, ``max_burst_beats``).
    """

    def __init__(self, config):
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {type(config).__name__}")
        if not 1 <= config.dma_outstanding <= 255:
            raise ValueError(f"dma_outstanding must be in 1..255, not {config.dma_outstanding!r}")
        if config.axi_id_bits < 2:
            raise ValueError(f"axi_id_bits must be at least 2 (the top ID bit is the chip arbiter's), "
                             f"not {config.axi_id_bits!r}")
        if config.dim * 4 > 255:
            raise ValueError(f"accumulator rows of {config.dim * 4} bytes do not fit row_bytes (8 bits)")
        self.config = config
        self.data_bytes = config.axi_data_bits // 8
        self.beat_bits = (self.data_bytes - 1).bit_length()       # log2(data bytes) = AxSIZE
        self.max_row_bytes = 4 * config.dim                       # an accumulator row
        # Beats a row of at most max_row_bytes can touch at any alignment.
        self.row_beats_max = (self.data_bytes - 1 + self.max_row_bytes + self.data_bytes - 1) // self.data_bytes
        self.local_bits = max(config.spad_addr_bits, config.acc_addr_bits)
        super().__init__({
            "load": Out(EngineSignature(DmaCmd)),
            "store": Out(EngineSignature(DmaCmd)),
            "axi": Out(Axi4Signature(config.axi_addr_bits, config.axi_data_bits, config.axi_id_bits)),
            "spad_wr": Out(WritePortSignature(config.spad_addr_bits, config.dim * 8)),
            "acc_wr": Out(WritePortSignature(config.acc_addr_bits, config.dim * 32)),
            "spad_rd": Out(ReadPortSignature(config.spad_addr_bits, config.dim * 8)),
            "acc_rd": Out(ReadPortSignature(config.acc_addr_bits, config.dim * 32)),
            "load_bytes": Out(8),
            "store_bytes": Out(8),
            "load_window": In(DmaWindow),
            "store_window": In(DmaWindow),
            "load_reset": In(1),
            "store_reset": In(1),
            "bus_timeout": In(32),
        })

    # ---------------------------------------------------------------------------------------------
    # Shared pieces

    def _beats(self, lo, rb):
        """Beats touched by a row of ``rb`` > 0 bytes starting at byte ``lo`` of a beat."""
        return (lo + rb + (self.data_bytes - 1)) >> self.beat_bits

    def _byte_mask(self, m, name, rb):
        """``max_row_bytes`` bits, bit i set when i < rb."""
        mask = Signal(self.max_row_bytes, name=name)
        m.d.comb += mask.eq(Cat(*[rb > i for i in range(self.max_row_bytes)]))
        return mask

    @staticmethod
    def _expand(mask, width_bytes):
        """Byte mask -> bit mask (each bit repeated 8 times)."""
        return Cat(*[mask[i].replicate(8) for i in range(width_bytes)])

    def _validate(self, m, name, cmd, window, fsm_check2_err):
        """Command check in registered steps.

        Returns the statements of the first cycle (the stride products, for ``m.d.sync``); drives
        ``fsm_check2_err`` combinationally from their registered results in the second cycle (the
        sums and compares), which the channel registers before it acts on the result in a third.
        Products, sums and the transfer start in one cycle were the chip's longest path through
        the DMA (a 16x32 multiply and three 52-bit adds, 21 ns on ECP5); products in one cycle and
        sums plus the start in the next still were (21.4 ns routed).
        """
        cfg = self.config
        aab = cfg.axi_addr_bits
        rows_m1 = Signal(16, name=f"{name}_rows_m1")
        planes_m1 = Signal(16, name=f"{name}_planes_m1")
        m.d.comb += [rows_m1.eq(cmd.rows - 1), planes_m1.eq(cmd.planes - 1)]
        last_local = Signal(40, name=f"{name}_last_local")
        host_end = Signal(52, name=f"{name}_host_end")    # one past the last host byte
        stage1, products = [], {}
        for count, field in ((planes_m1, "local_plane_stride"), (rows_m1, "local_row_stride"),
                             (planes_m1, "host_plane_stride"), (rows_m1, "host_row_stride")):
            stride = getattr(cmd, field)
            products[field] = p = Signal(len(count) + len(stride), name=f"{name}_{field}_x")
            stage1.append(p.eq(count * stride))
        m.d.comb += [
            last_local.eq(cmd.local_addr + products["local_plane_stride"]
                          + products["local_row_stride"]),
            host_end.eq(cmd.host_addr + products["host_plane_stride"] + products["host_row_stride"]
                        + cmd.row_bytes),
        ]
        lrb = Mux(cmd.acc, cfg.acc_row_bytes, cfg.spad_row_bytes)
        mem_rows = Mux(cmd.acc, cfg.acc_rows, cfg.spad_rows)
        with m.If(cmd.reserved != 0):
            m.d.comb += fsm_check2_err.eq(ErrorCode.RESERVED_BITS)
        with m.Elif((cmd.rows == 0) | (cmd.planes == 0) | (cmd.row_bytes + cmd.col_offset > lrb)):
            m.d.comb += fsm_check2_err.eq(ErrorCode.BAD_SHAPE)
        with m.Elif(last_local >= mem_rows):
            m.d.comb += fsm_check2_err.eq(ErrorCode.LOCAL_RANGE)
        with m.Elif((cmd.row_bytes != 0) & (host_end > (1 << aab))):
            m.d.comb += fsm_check2_err.eq(ErrorCode.HOST_RANGE)
        with m.Elif(window.check & (cmd.row_bytes != 0)
                    & ((cmd.host_addr < window.base) | (host_end > window.base + window.size))):
            m.d.comb += fsm_check2_err.eq(ErrorCode.WINDOW)
        with m.Else():
            m.d.comb += fsm_check2_err.eq(ErrorCode.OK)
        return stage1

    def _issuer(self, m, name, cmd, enable, ready):
        """Address-channel burst generator for one channel (AR or AW).

        Walks the command's host rows, splitting each into INCR bursts (max length, 4 KiB). The
        address-channel payload sits in registers (``valid`` is held until ``ready``). ``enable``
        allows loading a new burst; ``issue`` pulses when one is loaded. Returns a namespace with
        the row iterator, the AX payload registers and ``start()`` (initialisation statements).
        """
        cfg = self.config
        aab, bb, db = cfg.axi_addr_bits, self.beat_bits, self.data_bytes
        it = _RowIter(m, f"{name}_it", cmd,
                      [(aab, cmd.host_addr[:aab], cmd.host_row_stride, cmd.host_plane_stride)])
        beat_addr = Signal(aab, name=f"{name}_beat_addr")
        beats_left = Signal(range(self.row_beats_max + 1), name=f"{name}_beats_left")
        valid = Signal(name=f"{name}_valid")
        addr = Signal(aab, name=f"{name}_addr")
        len_m1 = Signal(8, name=f"{name}_len_m1")
        to4k = Signal(13 - bb, name=f"{name}_to4k")
        blen = Signal(range(max(cfg.max_burst_beats, self.row_beats_max) + 1), name=f"{name}_blen")
        issue = Signal(name=f"{name}_issue")
        m.d.comb += [
            to4k.eq((4096 - beat_addr[:12]) >> bb),
            blen.eq(_min(_min(beats_left, cfg.max_burst_beats), to4k)),
            issue.eq(enable & it.active & (~valid | ready)),
        ]
        align = ~Const(db - 1, aab)
        with m.If(issue):
            m.d.sync += [addr.eq(beat_addr), len_m1.eq(blen - 1), valid.eq(1)]
            with m.If(beats_left == blen):
                it.advance(m)
                m.d.sync += [beat_addr.eq(it.nxt[0] & align),
                             beats_left.eq(self._beats(it.nxt[0][:bb], cmd.row_bytes))]
            with m.Else():
                m.d.sync += [beat_addr.eq(beat_addr + (blen << bb)),
                             beats_left.eq(beats_left - blen)]
        with m.Elif(ready):
            m.d.sync += valid.eq(0)

        def start():
            it.init(m)
            start_addr = cmd.host_addr[:aab]
            m.d.sync += [it.active.eq(cmd.row_bytes != 0), valid.eq(0),
                         beat_addr.eq(start_addr & align),
                         beats_left.eq(self._beats(start_addr[:bb], cmd.row_bytes))]

        return SimpleNamespace(it=it, valid=valid, addr=addr, len_m1=len_m1, issue=issue,
                               start=start)

    @staticmethod
    def _resp_error(resp):
        return Mux(resp == 3, ErrorCode.AXI_DECERR, ErrorCode.AXI_SLVERR)

    # ---------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        args = (cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits - 1, cfg.dma_outstanding)
        m.submodules.load_guard = rg = AxiReadGuard(*args)
        m.submodules.store_guard = wg = AxiWriteGuard(*args)
        # Each channel is a module of its own so that it can be reset alone; its guard is not.
        for name, guard, elab, reset in (("load", rg, self._elab_load, self.load_reset),
                                         ("store", wg, self._elab_store, self.store_reset)):
            chan = Module()
            abort = elab(chan, guard)
            m.submodules[f"{name}_channel"] = ResetInserter({"sync": reset})(chan)
            connect_axi(m, guard.down, self.axi)
            m.d.comb += [guard.limit.eq(self.bus_timeout), guard.abandon.eq(reset | abort)]
        if contract_for(platform, self):
            self._formal_contract(m, platform, rg, wg)
        return m

    @staticmethod
    def _abort(m, guard, abort, err, drain, clear):
        """In the RUN state, after ``If(finished)``: on a timeout, retire with BUS_TIMEOUT (an AXI
        error being drained for keeps its code) after forgetting every transfer in flight
        (``clear``, overriding whatever this cycle started); ``abort`` hands them to the guard,
        handshakes of this cycle included."""
        with m.Elif(guard.timeout):
            m.d.comb += abort.eq(1)
            m.d.sync += [err.eq(Mux(drain, err, ErrorCode.BUS_TIMEOUT)), *clear]
            m.next = "DONE"

    def _elab_load(self, m, guard):
        """The load channel in module ``m`` on ``guard``'s manager side; returns its abort strobe."""
        cfg = self.config
        axi, eng = guard.up, self.load
        db, bb = self.data_bytes, self.beat_bits
        lw = self.local_bits
        mrb = self.max_row_bytes

        cmd = Signal(DmaCmd, name="ld_cmd")
        err = Signal(ErrorCode, name="ld_err")
        chk_err = Signal(ErrorCode, name="ld_chk_err")
        window = Signal(DmaWindow, name="ld_window")
        stage1 = self._validate(m, "ld", cmd, window, chk_err)
        run = Signal(name="ld_run")
        abort = Signal(name="ld_abort")
        drain = Signal(name="ld_drain")          # an error response was seen: drain, write nothing new
        outstanding = Signal(range(cfg.dma_outstanding + 1), name="ld_outstanding")

        # --- AR: burst issuer --------------------------------------------------------------------
        ar = self._issuer(m, "ld_ar", cmd, run & ~drain & (outstanding < cfg.dma_outstanding),
                          axi.arready)
        m.d.comb += [
            axi.arvalid.eq(ar.valid), axi.araddr.eq(ar.addr), axi.arlen.eq(ar.len_m1),
            axi.arsize.eq(bb), axi.arburst.eq(BURST_INCR), axi.arprot.eq(0),
        ]

        # --- R: row assembly ---------------------------------------------------------------------
        rx = _RowIter(m, "ld_rx", cmd, [
            (bb, cmd.host_addr[:bb], cmd.host_row_stride[:bb], cmd.host_plane_stride[:bb]),
            (lw, cmd.local_addr, cmd.local_row_stride, cmd.local_plane_stride)])
        rx_lo, rx_laddr = rx.row
        rx_beats = Signal(range(self.row_beats_max + 1), name="ld_rx_beats")
        m.d.comb += rx_beats.eq(Mux(cmd.row_bytes == 0, 0, self._beats(rx_lo, cmd.row_bytes)))
        rx_beat = Signal(range(self.row_beats_max), name="ld_rx_beat")
        buf = Signal(self.row_beats_max * db * 8, name="ld_buf")
        full = Signal(name="ld_full")                    # buf holds a complete row
        ext_off = Signal(max(bb, 1), name="ld_ext_off")  # its first byte within beat 0
        ext_laddr = Signal(lw, name="ld_ext_laddr")      # its local row
        wb_valid = Signal(name="ld_wb_valid")            # a finished local row waits for its write
        wb_data = Signal(mrb * 8, name="ld_wb_data")
        wb_addr = Signal(lw, name="ld_wb_addr")
        rb_mask = self._byte_mask(m, "ld_rb_mask", cmd.row_bytes)

        wr_gnt = Mux(cmd.acc, self.acc_wr.gnt, self.spad_wr.gnt)
        wb_done = Signal(name="ld_wb_done")
        wb_load = Signal(name="ld_wb_load")
        can_accept = Signal(name="ld_can_accept")
        m.d.comb += [
            wb_done.eq(wb_valid & wr_gnt),
            wb_load.eq(full & (~wb_valid | wb_done)),
            can_accept.eq(~full | wb_load),
            axi.rready.eq(drain | (run & rx.active & can_accept)),
        ]
        for port, width in ((self.spad_wr, cfg.dim * 8), (self.acc_wr, cfg.dim * 32)):
            m.d.comb += [port.addr.eq(wb_addr), port.data.eq(wb_data[:width])]
        m.d.comb += [self.spad_wr.en.eq(wb_valid & ~cmd.acc), self.acc_wr.en.eq(wb_valid & cmd.acc)]
        m.d.comb += self.load_bytes.eq(Mux(wb_done, cmd.row_bytes, 0))

        # Extraction: row_bytes bytes from byte ext_off of buf, placed at byte col_offset.
        extracted = Signal(mrb * 8, name="ld_extracted")
        raw = Signal(mrb * 8, name="ld_raw")
        col = cmd.col_offset[:(mrb).bit_length()]
        place = Signal(range(mrb + 1), name="ld_place")     # mrb - col_offset (col <= mrb)
        m.d.comb += [
            raw.eq(buf.bit_select(ext_off * 8, mrb * 8) & self._expand(rb_mask, mrb)),
            # raw << col*8, written as a fixed-width right shift (a variable left shift widens
            # its result by 2**width(col*8) bits, which slows conversion at large dim)
            place.eq(mrb - col),
            extracted.eq((Cat(Const(0, mrb * 8), raw) >> (place * 8))[:mrb * 8]),
        ]

        rhs = axi.rvalid & axi.rready
        row_done = Signal(name="ld_row_done")
        with m.If(run & ~drain & rx.active):
            with m.If(rx_beats == 0):
                m.d.comb += row_done.eq(can_accept)
            with m.Elif(rhs & ~axi.rresp[1]):
                m.d.sync += buf.word_select(rx_beat, db * 8).eq(axi.rdata)
                with m.If(rx_beat == rx_beats - 1):
                    m.d.comb += row_done.eq(1)
                with m.Else():
                    m.d.sync += rx_beat.eq(rx_beat + 1)
            with m.If(rhs & axi.rresp[1]):
                m.d.sync += [drain.eq(1), err.eq(self._resp_error(axi.rresp))]
        with m.If(rhs & axi.rlast):
            m.d.sync += outstanding.eq(outstanding + ar.issue - 1)
        with m.Else():
            m.d.sync += outstanding.eq(outstanding + ar.issue)

        with m.If(wb_load):
            m.d.sync += [wb_data.eq(extracted), wb_addr.eq(ext_laddr), wb_valid.eq(1), full.eq(0)]
        with m.Elif(wb_done):
            m.d.sync += wb_valid.eq(0)
        with m.If(row_done):
            m.d.sync += [full.eq(1), ext_off.eq(rx_lo), ext_laddr.eq(rx_laddr), rx_beat.eq(0)]
            rx.advance(m)

        finished = Signal(name="ld_finished")
        m.d.comb += finished.eq((outstanding == 0) & ~ar.valid & ~full & ~wb_valid
                                & (drain | ~rx.active))

        # --- control -----------------------------------------------------------------------------
        m.d.comb += [eng.error.eq(err)]
        with m.FSM(init="IDLE", name="dma_load_fsm"):
            with m.State("IDLE"):
                m.d.comb += eng.cmd.ready.eq(1)
                with m.If(eng.cmd.valid):
                    m.d.sync += [cmd.eq(eng.cmd.payload), window.eq(self.load_window)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += eng.busy.eq(1)
                m.d.sync += stage1
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += eng.busy.eq(1)
                m.d.sync += err.eq(chk_err)
                m.next = "CHECK3"
            with m.State("CHECK3"):
                m.d.comb += eng.busy.eq(1)
                m.d.sync += [drain.eq(0), full.eq(0), wb_valid.eq(0), rx_beat.eq(0)]
                with m.If(err == ErrorCode.OK):
                    ar.start()
                    rx.init(m)
                    m.next = "RUN"
                with m.Else():
                    m.next = "DONE"
            with m.State("RUN"):
                m.d.comb += [eng.busy.eq(1), run.eq(1)]
                with m.If(finished):
                    m.next = "DONE"
                # Rows whose data had not fully arrived are not written.
                self._abort(m, guard, abort, err, drain,
                            [ar.valid.eq(0), outstanding.eq(0), full.eq(0), wb_valid.eq(0)])
            with m.State("DONE"):
                m.d.comb += [eng.busy.eq(1), eng.done.eq(1)]
                m.next = "IDLE"
        return abort

    def _elab_store(self, m, guard):
        """The store channel in module ``m`` on ``guard``'s manager side; returns its abort strobe."""
        cfg = self.config
        axi, eng = guard.up, self.store
        db, bb = self.data_bytes, self.beat_bits
        lw = self.local_bits
        mrb = self.max_row_bytes
        nb = self.row_beats_max

        cmd = Signal(DmaCmd, name="st_cmd")
        err = Signal(ErrorCode, name="st_err")
        chk_err = Signal(ErrorCode, name="st_chk_err")
        window = Signal(DmaWindow, name="st_window")
        stage1 = self._validate(m, "st", cmd, window, chk_err)
        run = Signal(name="st_run")
        abort = Signal(name="st_abort")
        drain = Signal(name="st_drain")
        b_out = Signal(range(cfg.dma_outstanding + 1), name="st_b_out")      # AW issued, no B yet
        w_credit = Signal(range(cfg.dma_outstanding + 2), name="st_w_credit")  # AW issued, W not all sent

        # --- AW ----------------------------------------------------------------------------------
        aw = self._issuer(m, "st_aw", cmd, run & ~drain & (b_out < cfg.dma_outstanding),
                          axi.awready)
        m.d.comb += [
            axi.awvalid.eq(aw.valid), axi.awaddr.eq(aw.addr), axi.awlen.eq(aw.len_m1),
            axi.awsize.eq(bb), axi.awburst.eq(BURST_INCR), axi.awprot.eq(0),
        ]

        # --- local reads -------------------------------------------------------------------------
        rd = _RowIter(m, "st_rd", cmd,
                      [(lw, cmd.local_addr, cmd.local_row_stride, cmd.local_plane_stride)])
        # Rows read from local memory wait in a FIFO of mem_read_latency + 1 entries (rq0 = head)
        # so that the reads in flight fit beside a row the W side holds: one row per cycle when
        # the W side keeps up.
        lat = cfg.mem_read_latency
        inflight = [Signal(name=f"st_rd_inflight{k}") for k in range(1, lat + 1)]  # granted k ago
        arrive = inflight[-1]                                   # its data is on the port now
        rq = [Signal(mrb * 8, name=f"st_rq{i}") for i in range(lat + 1)]
        rq_n = Signal(range(lat + 2), name="st_rq_n")
        rbuf, rbuf_valid = rq[0], Signal(name="st_rbuf_valid")
        w_take = Signal(name="st_w_take")
        rd_en = Signal(name="st_rd_en")
        m.d.comb += [
            rbuf_valid.eq(rq_n != 0),
            rd_en.eq(run & rd.active & (rq_n + sum(inflight) - w_take < len(rq))),
        ]
        for port in (self.spad_rd, self.acc_rd):
            m.d.comb += port.addr.eq(rd.row[0])
        m.d.comb += [self.spad_rd.en.eq(rd_en & ~cmd.acc), self.acc_rd.en.eq(rd_en & cmd.acc)]
        rd_gnt = Mux(cmd.acc, self.acc_rd.gnt, self.spad_rd.gnt)
        rd_data = Mux(cmd.acc, self.acc_rd.data, self.spad_rd.data)
        m.d.sync += [inflight[0].eq(rd_en & rd_gnt), rq_n.eq(rq_n + arrive - w_take)]
        m.d.sync += [inflight[k].eq(inflight[k - 1]) for k in range(1, lat)]
        with m.If(rd_en & rd_gnt):
            rd.advance(m)
        for i, entry in enumerate(rq):
            if i + 1 < len(rq):
                with m.If(w_take):
                    m.d.sync += entry.eq(rq[i + 1])
            with m.If(arrive & (rq_n - w_take == i)):
                m.d.sync += entry.eq(rd_data)

        # --- W -----------------------------------------------------------------------------------
        wi = _RowIter(m, "st_w", cmd, [
            (12, cmd.host_addr[:12], cmd.host_row_stride[:12], cmd.host_plane_stride[:12])])
        w_lo = wi.row[0][:bb]
        w_row_valid = Signal(name="st_w_row_valid")
        wbuf = Signal(nb * db * 8, name="st_wbuf")
        wstrb_buf = Signal(nb * db, name="st_wstrb_buf")
        w_beat = Signal(range(nb), name="st_w_beat")
        w_nbeats = Signal(range(nb + 1), name="st_w_nbeats")
        w_addr12 = Signal(12, name="st_w_addr12")
        w_bib = Signal(range(max(cfg.max_burst_beats, 2)), name="st_w_bib")   # beat index in burst
        rb_mask = self._byte_mask(m, "st_rb_mask", cmd.row_bytes)

        wvalid = Signal(name="st_wvalid")
        wlast = Signal(name="st_wlast")
        whs = Signal(name="st_whs")
        row_end = Signal(name="st_w_row_end")
        m.d.comb += [
            wvalid.eq(run & w_row_valid & (w_credit != 0)),
            row_end.eq(w_beat == w_nbeats - 1),
            wlast.eq(row_end | (w_addr12 == 4096 - db) | (w_bib == cfg.max_burst_beats - 1)),
            whs.eq(wvalid & axi.wready),
            w_take.eq(run & wi.active & rbuf_valid & (~w_row_valid | (whs & row_end))),
            axi.wvalid.eq(wvalid), axi.wlast.eq(wlast),
            axi.wdata.eq(wbuf.word_select(w_beat, db * 8)),
            axi.wstrb.eq(wstrb_buf.word_select(w_beat, db)),
            self.store_bytes.eq(Mux(whs, sum(axi.wstrb[i] for i in range(db)), 0)),
        ]
        col = cmd.col_offset[:(mrb).bit_length()]
        shifted = Signal(mrb * 8, name="st_shifted")
        m.d.comb += shifted.eq((rbuf >> (col * 8)) & self._expand(rb_mask, mrb))
        with m.If(whs):
            m.d.sync += [w_beat.eq(w_beat + 1), w_addr12.eq(w_addr12 + db),
                         w_bib.eq(Mux(wlast, 0, w_bib + 1))]
            with m.If(row_end):
                m.d.sync += w_row_valid.eq(0)
        with m.If(w_take):
            m.d.sync += [
                wbuf.eq(shifted << (w_lo * 8)),
                wstrb_buf.eq(rb_mask << w_lo),
                w_nbeats.eq(self._beats(w_lo, cmd.row_bytes)),
                w_beat.eq(0),
                w_addr12.eq(wi.row[0] & ~Const(db - 1, 12)),
                w_row_valid.eq(1),
            ]
            wi.advance(m)
        m.d.sync += w_credit.eq(w_credit + aw.issue - (whs & wlast))

        # --- B -----------------------------------------------------------------------------------
        m.d.comb += axi.bready.eq(1)
        bhs = axi.bvalid & axi.bready
        m.d.sync += b_out.eq(b_out + aw.issue - bhs)
        with m.If(run & bhs & axi.bresp[1] & ~drain):
            m.d.sync += [drain.eq(1), err.eq(self._resp_error(axi.bresp))]

        finished = Signal(name="st_finished")
        m.d.comb += finished.eq(~aw.valid & (w_credit == 0) & (b_out == 0)
                                & (drain | (~aw.it.active & ~wi.active & ~w_row_valid)))

        # --- control -----------------------------------------------------------------------------
        m.d.comb += eng.error.eq(err)
        with m.FSM(init="IDLE", name="dma_store_fsm"):
            with m.State("IDLE"):
                m.d.comb += eng.cmd.ready.eq(1)
                with m.If(eng.cmd.valid):
                    m.d.sync += [cmd.eq(eng.cmd.payload), window.eq(self.store_window)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += eng.busy.eq(1)
                m.d.sync += stage1
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += eng.busy.eq(1)
                m.d.sync += err.eq(chk_err)
                m.next = "CHECK3"
            with m.State("CHECK3"):
                m.d.comb += eng.busy.eq(1)
                m.d.sync += [drain.eq(0), rq_n.eq(0), w_row_valid.eq(0), w_bib.eq(0)]
                with m.If((err == ErrorCode.OK) & (cmd.row_bytes != 0)):
                    aw.start()
                    rd.init(m)
                    wi.init(m)
                    m.next = "RUN"
                with m.Else():
                    m.next = "DONE"
            with m.State("RUN"):
                m.d.comb += [eng.busy.eq(1), run.eq(1)]
                with m.If(finished):
                    m.next = "DONE"
                self._abort(m, guard, abort, err, drain,
                            [aw.valid.eq(0), b_out.eq(0), w_credit.eq(0), w_row_valid.eq(0)])
            with m.State("DONE"):
                m.d.comb += [eng.busy.eq(1), eng.done.eq(1)]
                m.next = "IDLE"
        return abort

    # ---------------------------------------------------------------------------------------------
    # Formal contract (docs/formal.md): on the channels' side of the bus guards, whose own proof
    # carries the rules to the ``axi`` port.

    def _formal_contract(self, m, platform, load_guard, store_guard):
        """The DMA engine's contract, at the manager sides of its bus guards (``load_guard.up``,
        ``store_guard.up``), each restarted when its channel abandons its transfers (a timeout or
        the channel's reset, ``guard.abandon``): the guards' proof (``hdl_gen/axi_guard.py``)
        shows that the ``axi`` port then keeps the AXI4 manager rules and writes only bytes the
        store channel offered.

        * Each channel keeps the AXI4 manager rules: full-width aligned INCR bursts of at most
          ``max_burst_beats`` beats, never across 4 KiB, at most ``dma_outstanding`` bursts
          outstanding, W only for an accepted AW, WLAST on the last beat.
        * ``rows.host``: every byte a store offers to write (a W beat's strobed lanes, accepted
          or not: a beat offered when the channel abandons is still written by the guard) lies in
          a host row of its command: ``host_addr + p*host_plane_stride + r*host_row_stride`` +
          ``[0, row_bytes)`` for ``p < planes``, ``r < rows``, in wide arithmetic, so an
          address that wrapped the bus is outside; ``rows.order``: the rows' beats come in
          (plane, row) order, each byte exactly once (the beat address and the strobes are those
          of the next bytes of the row).
        * ``rows.local``: every local write of a load is the next row of its command,
          ``local_addr + p*local_plane_stride + r*local_row_stride``, in the memory ``acc``
          names, and there are no more of them than the command has rows.
        * ``mem.hold``: a local write request keeps ``en``, its row and data until ``gnt``, or
          until the load channel abandons its command (a timeout or its reset drops the row).

        The environment: the guards keep the AXI4 subordinate rules towards each channel
        (restarted at an abandon) and time out at any moment; the banked memories grant only a
        requester that asks (their contract). With the proof option ``command_bounds``
        (``rows``, ``planes``, ``bits``), commands have at most that many rows and planes and
        every address and stride field below ``2**bits``: a bounded run sees only a few rows
        anyway, and small fields keep the solver's arithmetic small (docs/formal.md).
        """
        cfg = self.config
        shape = dict(max_len=cfg.max_burst_beats, max_reads=cfg.dma_outstanding,
                     max_writes=cfg.dma_outstanding, no_cover=("w.early",) + (
                         () if cfg.max_burst_beats <= self.row_beats_max
                         else ("ar.longest", "aw.longest")))
        m.submodules.formal_ld_axi = ResetInserter({"sync": load_guard.abandon})(
            Axi4Manager(load_guard.up, name="ld", **shape))
        st_axi = Axi4Manager(store_guard.up, w_addr=True, name="st", **shape)
        m.submodules.formal_st_axi = ResetInserter({"sync": store_guard.abandon})(st_axi)
        rules = Rules(m, platform, "rows")
        for name in ("spad_wr", "acc_wr", "spad_rd", "acc_rd"):
            port = getattr(self, name)
            rules.rely("mem.grant", implies(port.gnt, port.en))
        # a read request may be withdrawn (a store ending on an error response does), a write
        # request may not, but by a load that abandons its command
        for name in ("spad_wr", "acc_wr"):
            port = getattr(self, name)
            waiting = past(m, port.en & ~port.gnt & ~load_guard.abandon, f"formal_{name}_waiting")
            held = Cat(port.addr, port.data)
            rules.guarantee("mem.hold", implies(waiting, port.en & (held == past(
                m, held, f"formal_{name}_held"))), group="mem")
        bounds = platform.options.get("command_bounds")
        if bounds:
            for channel in (self.load, self.store):
                c = channel.cmd.payload
                small = (c.rows <= bounds["rows"]) & (c.planes <= bounds["planes"])
                for f in (c.host_addr, c.host_row_stride, c.host_plane_stride, c.local_addr,
                          c.local_row_stride, c.local_plane_stride):
                    small &= f < (1 << bounds["bits"])
                rules.rely("cmd.bounds", implies(channel.cmd.valid, small))
        self._formal_host_rows(m, rules, store_guard.up, st_axi)
        self._formal_local_rows(m, rules)

    def _formal_walk(self, m, name, cmd, row_stride, plane_stride, step):
        """Rows of ``cmd`` in (plane, row) order as 52-bit running sums (wide enough that no row
        of a command wraps): returns (row start, a row is left, the registers the caller loads
        with the command: row, plane, rows left in the plane, planes left); ``step`` moves on."""
        width = 52
        row = Signal(width, name=f"{name}_row")
        plane = Signal(width, name=f"{name}_plane")
        r = Signal(16, name=f"{name}_r")            # rows left in this plane, current included
        planes = Signal(17, name=f"{name}_planes")  # planes left, current included
        left = Signal(name=f"{name}_left")
        m.d.comb += left.eq((planes != 0) & (r != 0))
        with m.If(step):
            with m.If(r > 1):
                m.d.sync += [row.eq(row + row_stride), r.eq(r - 1)]
            with m.Else():
                m.d.sync += [row.eq(plane + plane_stride), plane.eq(plane + plane_stride),
                             r.eq(cmd.rows), planes.eq(planes - 1)]
        return row, left, (row, plane, r, planes)

    def _formal_host_rows(self, m, rules, axi, rules_axi):
        cmd_port, db = self.store.cmd, self.data_bytes
        cmd = Signal(DmaCmd, name="formal_st_cmd")
        step = Signal(name="formal_st_row_done")
        row, left, regs = self._formal_walk(m, "formal_st", cmd, cmd.host_row_stride,
                                            cmd.host_plane_stride, step)
        cursor = Signal(52, name="formal_st_cursor")     # the next byte to write
        with m.If(cmd_port.valid & cmd_port.ready):
            new = cmd_port.payload
            m.d.sync += [cmd.eq(new), regs[0].eq(new.host_addr), regs[1].eq(new.host_addr),
                         regs[2].eq(new.rows), regs[3].eq(new.planes), cursor.eq(new.host_addr)]
        with m.Elif(step):
            nxt = Mux(regs[2] > 1, row + cmd.host_row_stride, regs[1] + cmd.host_plane_stride)
            m.d.sync += cursor.eq(nxt)
        w_hs = axi.wvalid & axi.wready
        beat = Signal(52, name="formal_st_beat")         # the W beat's first byte
        m.d.comb += beat.eq(rules_axi.w_addr)
        end = row + cmd.row_bytes
        lanes = []
        for j in range(db):
            byte = beat + j
            lanes.append((byte >= cursor) & (byte < end))
            rules.guarantee("rows.host", implies(axi.wvalid & axi.wstrb[j],
                                                 left & (byte >= row) & (byte < end)))
        expect_addr = cursor & ~Const(db - 1, 52)
        rules.guarantee("rows.order", implies(w_hs, left & (beat == expect_addr)
                                              & (axi.wstrb == Cat(*lanes))))
        m.d.comb += step.eq(w_hs & (beat + db >= end))
        with m.If(w_hs & ~step):
            m.d.sync += cursor.eq(beat + db)
        rules.cover("rows.host", step & (regs[3] == 1) & (regs[2] == 1) & (cmd.planes > 1))

    def _formal_local_rows(self, m, rules):
        cmd_port, cfg = self.load.cmd, self.config
        cmd = Signal(DmaCmd, name="formal_ld_cmd")
        step = Signal(name="formal_ld_written")
        row, left, regs = self._formal_walk(m, "formal_ld", cmd, cmd.local_row_stride,
                                            cmd.local_plane_stride, step)
        with m.If(cmd_port.valid & cmd_port.ready):
            new = cmd_port.payload
            m.d.sync += [cmd.eq(new), regs[0].eq(new.local_addr), regs[1].eq(new.local_addr),
                         regs[2].eq(new.rows), regs[3].eq(new.planes)]
        spad = self.spad_wr.en & self.spad_wr.gnt
        acc = self.acc_wr.en & self.acc_wr.gnt
        m.d.comb += step.eq(spad | acc)
        addr = Mux(acc, self.acc_wr.addr, self.spad_wr.addr)
        rules.guarantee("rows.local", implies(step, left & ~(spad & acc) & (acc == cmd.acc)
                                              & (addr == row)))
        rules.cover("rows.local", step & (regs[3] == 1) & (regs[2] == 1) & (cmd.planes > 1))
