"""The peer channel: DMA_PEER, local rows -> the next chip's memory over the chip-to-chip link.

Served on the DMA store channel (``Engine.DMA_STORE``): the SoC hands a DMA_STORE-channel command
either to the DMA's store channel or to this block by its opcode, one at a time, so the channel
keeps its order. The block reads the rows through its own scratchpad and accumulator read ports
(the DMA store's pattern: a FIFO of ``mem_read_latency + 3`` rows whose room is reserved before
a read is issued, so a denied read or a stalled link loses nothing and a row a cycle goes out
when the link keeps up) and hands them to a :class:`~hdl_gen.chip_link.LinkTx`, which sends one
packet: the header (``WRITE`` or ``WRITE_SIGNAL``), then the rows beat by beat, without a copy.
docs/cluster_hw.md describes the command, the ring and the errors.
"""
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .chip_link import LinkHeader, LinkKind, LinkTx, beat_layout
from .config import KakiConfig
from .descriptor import ErrorCode, PeerCmd
from .engine import EngineSignature
from .mem_port import ReadPortSignature, WritePortSignature

__all__ = ["RxMem", "MEM_WIDTHS", "PeerEngine", "AccAdder"]


class RxMem:
    """A chip's memories as its link receiver numbers them (:attr:`LinkHeader.mem`): the
    scratchpad, the accumulator, and the accumulator again, whose rows are *added* (the SoC puts
    a read-modify-write in front of it): LinkRx itself only writes, so the add needs no new
    packet kind."""
    SPAD, ACC, ACC_ADD = 0, 1, 2


def MEM_WIDTHS(cfg):
    """Row bits of the memories :class:`RxMem` numbers, for LinkTx and LinkRx."""
    return (cfg.dim * 8, cfg.dim * 32, cfg.dim * 32)



class PeerEngine(wiring.Component):
    """Executes DMA_PEER commands (:class:`~hdl_gen.descriptor.PeerCmd`).

    Ports
    -----
    ctl     : EngineSignature(PeerCmd) — the command (checked before any row is read), done/error.
    spad_rd : Out(ReadPortSignature) — scratchpad rows.
    acc_rd  : Out(ReadPortSignature) — accumulator rows.
    link    : Out(stream.Signature(beat_layout(nbytes))) — beats towards the link's sender.
    failed  : In(1) — the link's sender failed (``LinkSender.failed``: sticky, it discards beats).
    active  : Out(1) — a beat leaves this cycle (utilization).

    Errors (each ends the command, nothing is sent for the first four): ``RESERVED_BITS``,
    ``BAD_SHAPE`` (``rows`` 0, ``add`` without ``acc``), ``LOCAL_RANGE`` (local or peer rows outside the memory),
    ``BAD_EVENT`` (``signal`` with an event the chips do not have), ``LINK_TIMEOUT`` (the link
    failed before the command, or while it sent: the rest of its beats were discarded).
    """

    def __init__(self, config=KakiConfig(), nbytes=8):
        self.config, self.nbytes = config, nbytes
        super().__init__({
            "ctl": Out(EngineSignature(PeerCmd)),
            "spad_rd": Out(ReadPortSignature(config.spad_addr_bits, config.dim * 8)),
            "acc_rd": Out(ReadPortSignature(config.acc_addr_bits, config.dim * 32)),
            "link": Out(stream.Signature(beat_layout(nbytes))),
            "failed": In(1),
            "active": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        acc_w = cfg.dim * 32
        m.submodules.tx = tx = LinkTx(self.nbytes, MEM_WIDTHS(cfg))
        wiring.connect(m, tx.link, wiring.flipped(self.link))
        m.d.comb += self.active.eq(self.link.valid & self.link.ready)

        ctl = self.ctl
        cmd = Signal(PeerCmd, name="peer_cmd")
        busy = Signal(name="peer_busy")
        m.d.comb += ctl.busy.eq(busy)

        # ---- checks on the incoming command (combinational, before it is taken)
        c = ctl.cmd.payload
        spad_rows, acc_rows = cfg.spad_rows, cfg.acc_rows
        limit = Mux(c.acc, acc_rows, spad_rows)
        code = Signal(ErrorCode, name="peer_check")
        with m.If((c.reserved0 != 0) | (c.reserved != 0)):
            m.d.comb += code.eq(ErrorCode.RESERVED_BITS)
        with m.Elif((c.rows == 0) | (c.add & ~c.acc)):
            m.d.comb += code.eq(ErrorCode.BAD_SHAPE)
        with m.Elif((c.local_addr + c.rows > limit) | (c.peer_addr + c.rows > limit)):
            m.d.comb += code.eq(ErrorCode.LOCAL_RANGE)
        with m.Elif(c.signal & (c.event >= cfg.events)):
            m.d.comb += code.eq(ErrorCode.BAD_EVENT)
        with m.Elif(self.failed):
            m.d.comb += code.eq(ErrorCode.LINK_TIMEOUT)

        # ---- header
        hdr_valid = Signal(name="peer_hdr_valid")
        h = tx.cmd.payload
        m.d.comb += [
            tx.cmd.valid.eq(hdr_valid),
            h.kind.eq(Mux(cmd.signal, LinkKind.WRITE_SIGNAL.value, LinkKind.WRITE.value)),
            h.dest.eq(cmd.dest), h.mem.eq(Mux(cmd.add, RxMem.ACC_ADD, Mux(cmd.acc, RxMem.ACC, RxMem.SPAD))),
            h.rows.eq(cmd.rows), h.addr.eq(cmd.peer_addr),
            h.event.eq(Mux(cmd.signal, cmd.event, 0)), h.value.eq(Mux(cmd.signal, cmd.value, 0)),
        ]
        with m.If(tx.cmd.valid & tx.cmd.ready):
            m.d.sync += hdr_valid.eq(0)

        # ---- row reads into a FIFO whose room is reserved before a read is issued
        lat = cfg.mem_read_latency
        # lat + 3 entries: the reads in flight, the FIFO's own cycle (buffered output) and the row
        # LinkTx is sending keep one row a cycle going (measured: tests/test_peer_path.py, rate)
        m.submodules.rowq = q = fifo.SyncFIFOBuffered(width=acc_w, depth=lat + 3)
        inflight = [Signal(name=f"peer_rd_inflight{k}") for k in range(1, lat + 1)]
        to_read = Signal(16, name="peer_to_read")
        to_send = Signal(16, name="peer_to_send")
        rd_addr = Signal(20, name="peer_rd_addr")
        rd_en = Signal(name="peer_rd_en")
        room = Signal(range(2 * lat + 5), name="peer_room_used")
        m.d.comb += [room.eq(q.level + sum(inflight)),
                     rd_en.eq(busy & (to_read != 0) & (room < lat + 3))]
        for port in (self.spad_rd, self.acc_rd):
            m.d.comb += port.addr.eq(rd_addr)
        m.d.comb += [self.spad_rd.en.eq(rd_en & ~cmd.acc), self.acc_rd.en.eq(rd_en & cmd.acc)]
        gnt = Mux(cmd.acc, self.acc_rd.gnt, self.spad_rd.gnt)
        rdata = Mux(cmd.acc, self.acc_rd.data, self.spad_rd.data)
        m.d.sync += inflight[0].eq(rd_en & gnt)
        m.d.sync += [inflight[k].eq(inflight[k - 1]) for k in range(1, lat)]
        with m.If(rd_en & gnt):
            m.d.sync += [rd_addr.eq(rd_addr + 1), to_read.eq(to_read - 1)]
        m.d.comb += [q.w_en.eq(inflight[-1]), q.w_data.eq(rdata),
                     tx.rows.valid.eq(q.r_rdy), tx.rows.payload.eq(q.r_data), q.r_en.eq(tx.rows.ready)]
        with m.If(tx.rows.valid & tx.rows.ready):
            m.d.sync += to_send.eq(to_send - 1)

        # ---- start and end
        m.d.comb += ctl.cmd.ready.eq(~busy)
        with m.If(ctl.cmd.valid & ~busy):
            with m.If(code != ErrorCode.OK):
                m.d.sync += [ctl.done.eq(1), ctl.error.eq(code)]
            with m.Else():
                m.d.sync += [busy.eq(1), cmd.eq(c), hdr_valid.eq(1), to_read.eq(c.rows),
                             to_send.eq(c.rows), rd_addr.eq(c.local_addr)]
        # done once every row was handed over, the header went and the last beat left
        finished = busy & ~hdr_valid & (to_send == 0) & ~tx.busy
        m.d.sync += ctl.done.eq(0)
        with m.If(finished):
            m.d.sync += [busy.eq(0), ctl.done.eq(1),
                         ctl.error.eq(Mux(self.failed, ErrorCode.LINK_TIMEOUT, ErrorCode.OK))]
        with m.If(ctl.cmd.valid & ~busy & (code != ErrorCode.OK)):
            m.d.sync += ctl.done.eq(1)
        return m


class AccAdder(wiring.Component):
    """The receiver's add: LinkRx's row writes to :attr:`RxMem.ACC_ADD` become read, add (lane by
    lane, wrapping int32), write of the accumulator row.

    Ports
    -----
    req : In(WritePortSignature) — LinkRx's write port (held until ``gnt``); ``gnt`` is given in
          the cycle the sum's write is granted, so LinkRx's event follows the last row's sum.
    rd  : Out(ReadPortSignature) — the accumulator row read.
    wr  : Out(WritePortSignature) — the sum written back.

    A row costs the read's grant, ``mem_read_latency`` cycles and the write's grant (5 cycles at
    latency 3 without contention). The receiving chip's own engines must leave the rows alone
    while a transfer adds into them (it waits on the transfer's event anyway): a write between
    the read and the write back would be lost.
    """

    def __init__(self, config=KakiConfig()):
        self.config = config
        ab, w = config.acc_addr_bits, config.dim * 32
        super().__init__({"req": In(WritePortSignature(ab, w)),
                          "rd": Out(ReadPortSignature(ab, w)), "wr": Out(WritePortSignature(ab, w))})

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        lat = cfg.mem_read_latency
        req, rd, wr = self.req, self.rd, self.wr
        inflight = [Signal(name=f"add_rd_inflight{k}") for k in range(1, lat + 1)]
        total = Signal(cfg.dim * 32, name="add_sum")
        m.d.comb += [rd.addr.eq(req.addr), wr.addr.eq(req.addr), wr.data.eq(total)]
        m.d.sync += [inflight[0].eq(rd.en & rd.gnt),
                     *[inflight[k].eq(inflight[k - 1]) for k in range(1, lat)]]
        with m.FSM(init="READ", name="acc_add_fsm"):
            with m.State("READ"):
                m.d.comb += rd.en.eq(req.en)
                with m.If(rd.en & rd.gnt):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(inflight[-1]):
                    m.d.sync += total.eq(Cat(*[(rd.data.word_select(i, 32) + req.data.word_select(i, 32))[:32]
                                               for i in range(cfg.dim)]))
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [wr.en.eq(1), req.gnt.eq(wr.gnt)]
                with m.If(wr.gnt):
                    m.next = "READ"
        return m
