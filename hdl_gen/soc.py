"""Kaki SoC top: queues, control core, dispatcher, engines, on-chip memories and their registers."""
from dataclasses import dataclass

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .axi import Axi4LiteSignature, Axi4Signature, connect_axi
from .axi_arbiter import Axi4Arbiter
from .chip_link import LaneSignature, LinkReceiver, LinkRx, LinkSender
from .banked_memory import chip_memory
from .config import KakiConfig
from .control_core import MMIO_ADDR_BITS, MMIO_RDL, ControlSubsystem
from .csr_block import CsrBlock
from .descriptor import Engine, ErrorCode, Opcode
from .dispatcher import ENGINES, Dispatcher, port_name
from .dma_engine import DmaEngine
from .gemm_engine import GemmEngine
from .issue_unit import IssueUnit
from .mem_port import WritePortSignature
from .peer_engine import MEM_WIDTHS, AccAdder, PeerEngine
from .queue_controller import QueueController
from .special_function import SFU_OPCODES, SfuOp, SpecialFunctionUnit
from .vector_unit import VectorUnit


@dataclass(frozen=True)
class SocLink:
    """The chip-to-chip link a cluster chip is built with (:class:`KakiSoc` ``link``): ``nbytes``
    bytes per beat, ``depth`` beats in the receiver's buffer (the sender's credits: one beat a
    cycle when ``depth >= 2 * latency + 1`` of the wire), ``timeout_bits`` of LINK_TIMEOUT."""
    nbytes: int = 8
    depth: int = 8
    timeout_bits: int = 16



def _mmio_field(ident, field, word):
    """Field ``field`` of firmware MMIO register ``ident`` sliced out of a register ``word``."""
    f = regmap.by_ident(MMIO_RDL)[ident].field(field)
    return word[f.lsb:f.lsb + f.width]


def _after_write(m, swmod, name):
    """A CSR ``swmod`` strobe delayed one cycle, so it coincides with the register's new value."""
    strobe = Signal(name=name)
    m.d.sync += strobe.eq(swmod)
    return strobe


class KakiSoc(wiring.Component):
    """One Kaki chip.

    Control: the host loads the RV32IM control core's firmware through CORE_MEM_* and releases it
    with CORE_CTRL.RUN. The host writes descriptors into rings in host memory and rings a queue's
    doorbell; the queue controller prefetches them, the issue unit hands engine commands to the
    dispatcher, runs events and barriers and requests completion records in queue order, which
    the queue controller writes back; the firmware (through the MMIO registers of
    ``kaki_mmio.rdl``) serves the heads the issue unit leaves to it, hung engines and queue resets
    (docs/queues.md). While the core is held in reset the host may instead submit single
    descriptors through CMD/CMD_SUBMIT.

    Data path: host memory --AXI4--> DMA load --> scratchpad / accumulator --> GEMM engine (PE
    array) --> accumulator --> vector unit --> scratchpad --> DMA store --AXI4--> host memory.
    The DMA and the queue controller share the ``mem`` port through a round-robin AXI arbiter
    (the ID's top bit says which: 0 DMA, 1 queue controller; the lower bits are the manager's
    current transaction ID, hdl_gen/axi_guard.py). Every wait on the port is bounded by
    BUS_TIMEOUT.CYCLES (docs/queues.md "Host bus timeouts").

    Memory port priorities (lower wins a bank): scratchpad reads GEMM, vector, DMA; scratchpad
    writes vector, DMA; accumulator reads GEMM, vector, DMA; accumulator writes GEMM, DMA. The GEMM
    engine therefore never waits on memory, and the DMA only waits when software puts its
    transfer in a bank the compute engines are using.

    Ports
    -----
    csr : In(Axi4LiteSignature(addr_bits)) — register port (target), map in docs/registers.md.
    mem : Out(Axi4Signature(axi_addr_bits, axi_data_bits, axi_id_bits)) — master to host memory.
    irq : Out(1) — level interrupt: ``IRQ_STATUS & IRQ_ENABLE`` is non-zero.

    With ``link`` (a :class:`SocLink`; a cluster chip, hdl_gen/cluster.py) also:

    link_out     : Out(LaneSignature(nbytes)) — the outgoing lane, to the next chip (the wire).
    link_in      : In(LaneSignature(nbytes)) — the incoming lane, from the previous chip.
    chip_id      : In(4) — this chip's index (a strap; the receiver refuses packets for others).
    link_retrain : Out(1) — LINK_CTRL.RETRAIN: this chip's sender restarts; the cluster resets
                   the wire and the next chip's receiver with it (``link_retrain_in`` there).
    link_retrain_in : In(1) — the previous chip retrains: this chip's receiver restarts.

    Without it the ports do not exist (the single-chip top is unchanged) and DMA_PEER ends at
    once with LINK_TIMEOUT.
    """

    def __init__(self, config=KakiConfig(), link=None):
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {config!r}")
        if config.axi_id_bits < 2:
            raise ValueError(f"axi_id_bits must be >= 2 (one bit selects DMA or queue "
                             f"controller), not {config.axi_id_bits}")
        if link is not None and not isinstance(link, SocLink):
            raise TypeError(f"link must be a SocLink or None, not {link!r}")
        self.config, self.link = config, link
        members = {
            "csr": In(Axi4LiteSignature(regmap.addr_bits())),
            "mem": Out(Axi4Signature(config.axi_addr_bits, config.axi_data_bits,
                                     config.axi_id_bits)),
            "irq": Out(1),
        }
        if link is not None:
            members.update({"link_out": Out(LaneSignature(link.nbytes)),
                            "link_in": In(LaneSignature(link.nbytes)), "chip_id": In(4),
                            "link_retrain": Out(1), "link_retrain_in": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.csr = csr = CsrBlock()
        held = Signal()
        m.d.comb += held.eq(~csr.core_ctrl_run)
        fw = CsrBlock(regmap.load(MMIO_RDL), bus_kind="simple")
        m.submodules.fw_regs = ResetInserter({"sync": held})(fw)
        m.submodules.control = ctl = ControlSubsystem()
        wiring.connect(m, ctl.mmio, fw.bus)
        wiring.connect(m, wiring.flipped(self.csr), csr.bus)

        m.submodules.dispatcher = disp = Dispatcher(depth=cfg.fifo_depth)
        m.submodules.qc = qc = QueueController(cfg, n_queues=cfg.queues, prefetch=cfg.prefetch,
                                                         cpl_depth=cfg.cpl_depth)
        m.submodules.arb = arb = Axi4Arbiter(2, cfg.axi_addr_bits, cfg.axi_data_bits,
                                              cfg.axi_id_bits - 1)
        dma, gemm, vec, sfu = DmaEngine(cfg), GemmEngine(cfg), VectorUnit(cfg), SpecialFunctionUnit(cfg)
        reset = Signal(len(ENGINES))
        peer = PeerEngine(cfg, self.link.nbytes if self.link else 8)
        frozen = self._engines(m, csr, disp, dma, gemm, vec, sfu, reset, peer)
        rx, adder = self._link(m, csr, peer)
        self._memories(m, dma, gemm, vec, sfu, frozen, peer, rx, adder)
        connect_axi(m, dma.axi, arb.m[0])
        connect_axi(m, qc.axi, arb.m[1])
        wiring.connect(m, arb.s, wiring.flipped(self.mem))

        self._control_core(m, csr, fw, ctl, held)
        # Not reset with the core: commands issued before a hold still retire and get their
        # records (ISSUE.ENABLE, a firmware register, stops new issues); the events restart.
        m.submodules.issue = iu = IssueUnit(cfg)
        if rx is not None:
            m.d.comb += [iu.ext_event.valid.eq(rx.event.valid), iu.ext_event.index.eq(rx.event.index),
                         iu.ext_event.value.eq(rx.event.value)]
        self._submission(m, csr, ctl, disp, qc, dma, iu, held)
        self._queues(m, csr, fw, ctl, qc, iu, held)
        m.d.comb += reset.eq(self._fw_write(m, ctl, "ENGINE_RESET", "ENGINE")[1])
        qready = Cat(*[iu.q[i].fw_ready for i in range(self.config.queues)])
        qreset = Cat(*[qc.q[i].qreset_req for i in range(self.config.queues)])
        timer = Signal(name="fw_timer_due")
        diff = Signal(32, name="fw_timer_diff")
        fw_irq = Signal(name="fw_irq")
        m.d.comb += [
            diff.eq(fw.timestamp_cycles - fw.timer_cycles), timer.eq(~diff[31]),
            fw.work_qready.eq(qready), fw.work_hung.eq(iu.hung), fw.work_qreset.eq(qreset),
            fw.work_timer.eq(timer),
            iu.enable.eq(fw.issue_enable), iu.watchdog.eq(csr.watchdog_cycles),
            iu.engine_reset.eq(reset), iu.hold.eq(held),
            ctl.irq.eq(fw_irq),
        ]
        for e in range(len(ENGINES)):
            r, d = iu.retire[e], disp.retire[e]
            # only queued commands: a direct submission's tag names no window entry
            m.d.comb += [r.done.eq(d.done & d.queued), r.error.eq(d.error), r.tag.eq(d.tag)]
        # Registered: the work flags come from every block (issue unit, queue controller, timer)
        # and would otherwise reach the core's fetch enable (the WFI wake-up) in the same cycle.
        # A stale level after the firmware consumed the work only ends one WFI early.
        m.d.sync += fw_irq.eq((qready & ~fw.work_mask_qready).any() | iu.hung.any() | qreset.any()
                              | (timer & ~fw.work_mask_timer))
        self._status(m, csr, disp, reset)
        self._interrupts(m, csr, fw, disp, qc)
        self._perf_counters(m, csr, fw, disp, qc, iu, dma, gemm, vec, sfu, frozen, peer)
        return m

    def _link(self, m, csr, peer):
        """The link's sender (fed by the peer channel) and, on the incoming lane, its receiver,
        packet receiver (:class:`LinkRx`) and accumulator adder (:class:`AccAdder`); returns the
        last two (None, None without a link)."""
        cfg, lk = self.config, self.link
        m.d.comb += csr.link_status_present.eq(lk is not None)
        if lk is None:
            # no link: DMA_PEER fails at once (its checks see ``failed``), nothing is sent
            m.d.comb += [peer.failed.eq(1), peer.link.ready.eq(1)]
            return None, None
        snd = LinkSender(lk.nbytes, lk.depth, lk.timeout_bits)
        rcv = LinkReceiver(lk.nbytes, lk.depth)
        rx = LinkRx(lk.nbytes, list(zip((cfg.spad_rows, cfg.acc_rows, cfg.acc_rows), MEM_WIDTHS(cfg))),
                    events=cfg.events)
        # RxMem.ACC_ADD: the accumulator through a read-modify-write (hdl_gen/peer_engine.py)
        adder = AccAdder(cfg)
        retrain_in = self.link_retrain_in
        m.submodules.link_sender = ResetInserter({"sync": self.link_retrain})(snd)
        m.submodules.link_receiver = ResetInserter({"sync": retrain_in})(rcv)
        m.submodules.link_rx = ResetInserter({"sync": retrain_in})(rx)
        m.submodules.link_add = ResetInserter({"sync": retrain_in})(adder)
        wiring.connect(m, rx.wr2, adder.req)
        wiring.connect(m, peer.link, snd.tx)
        wiring.connect(m, snd.lane, wiring.flipped(self.link_out))
        wiring.connect(m, wiring.flipped(self.link_in), rcv.lane)
        wiring.connect(m, rcv.rx, rx.link)
        m.d.comb += [self.link_retrain.eq(csr.link_ctrl_retrain), snd.timeout.eq(csr.link_timeout_cycles),
                     peer.failed.eq(snd.failed), rx.chip_id.eq(self.chip_id),
                     csr.link_status_failed.eq(snd.failed), csr.link_status_chip_id.eq(self.chip_id),
                     csr.link_status_credits.eq(snd.credits)]
        rx_error = Signal(4, name="link_rx_error")
        counts = {name: Signal(32, name=f"link_rx_{name}") for name in ("errors", "rows", "events")}
        incs = {"errors": rx.error.valid, "rows": Cat(*[p.en & p.gnt for p in rx.wr]).any(),
                "events": rx.event.valid}
        with m.If(retrain_in):
            m.d.sync += [rx_error.eq(0), *[c.eq(0) for c in counts.values()]]
        with m.Else():
            with m.If(rx.error.valid):
                m.d.sync += rx_error.eq(rx.error.code.as_value())
            m.d.sync += [c.eq(c + incs[name]) for name, c in counts.items()]
        m.d.comb += [csr.link_status_rx_error.eq(rx_error),
                     *[getattr(csr, f"link_rx_{name}_count").eq(c) for name, c in counts.items()]]
        return rx, adder

    # ---------------------------------------------------------------- engines and memories

    def _engines(self, m, csr, disp, dma, gemm, vec, sfu, reset, peer):
        """Engines behind the dispatcher, each resettable by the firmware (the DMA channel by
        channel: the DMA resets one and keeps its bus guards); GEMM and vector can be frozen by
        the DEBUG_HANG fault-injection hook. Returns the per-engine frozen flags."""
        load_reset, store_reset = reset[Engine.DMA_LOAD.value], reset[Engine.DMA_STORE.value]
        m.submodules.dma = dma
        m.d.comb += [dma.load_reset.eq(load_reset), dma.store_reset.eq(store_reset),
                     dma.bus_timeout.eq(csr.bus_timeout_cycles)]
        frozen = {}
        for name, eng, idx in (("gemm", gemm, Engine.GEMM.value), ("vec", vec, Engine.VEC.value)):
            armed, frz = Signal(name=f"{name}_hang_armed"), Signal(name=f"{name}_frozen")
            with m.If(reset[idx]):
                m.d.sync += [armed.eq(0), frz.eq(0)]
            with m.Elif(armed & eng.ctl.busy):
                m.d.sync += [armed.eq(0), frz.eq(1)]
            with m.Elif(getattr(csr, f"debug_hang_{name}")):
                m.d.sync += armed.eq(1)
            # A frozen engine hangs as seen from outside: its done, command handshake and memory
            # requests (_memories) are masked and it reads as busy. Its registers are not stopped:
            # an enable on every flip-flop of the PE array would be a net with thousands of
            # sinks across the die (docs/synthesis.md), and the reset that ends the freeze clears
            # what the engine did meanwhile.
            m.submodules[name] = ResetInserter({"sync": reset[idx]})(eng)
            frozen[name] = frz
        m.submodules.sfu = ResetInserter({"sync": reset[Engine.SFU.value]})(sfu)
        # DMA_PEER shares the store channel: a command goes to the DMA's store side or to the
        # peer channel by its opcode, only while the other is idle (one command at a time, in
        # order, as for any engine); both reset with the channel.
        m.submodules.peer = ResetInserter({"sync": store_reset})(peer)
        st = disp.dma_store
        to_peer = Signal(name="store_to_peer")
        m.d.comb += [to_peer.eq(st.payload.desc.opcode == Opcode.DMA_PEER),
                     peer.ctl.cmd.valid.eq(st.valid & to_peer & ~store_reset & ~dma.store.busy),
                     peer.ctl.cmd.payload.eq(st.payload.desc.payload.peer)]
        payload = lambda kind: lambda desc: getattr(desc.payload, kind)
        engines = {"dma_load": (dma.load, payload("dma"), load_reset),
                   "dma_store": (dma.store, payload("dma"), store_reset),
                   "gemm": (gemm.ctl, payload("gemm"), reset[Engine.GEMM.value]),
                   "vec": (vec.ctl, payload("vec"), reset[Engine.VEC.value]),
                   "sfu": (sfu.ctl, lambda desc: self._sfu_command(m, desc), reset[Engine.SFU.value])}
        for i, name in enumerate(map(port_name, ENGINES)):
            ctl, command, rst = engines[name]
            src = getattr(disp, name)
            frz = frozen.get(name, 0)
            if name == "dma_store":
                m.d.comb += [ctl.cmd.valid.eq(src.valid & ~to_peer & ~rst & ~peer.ctl.busy),
                             src.ready.eq(Mux(to_peer, peer.ctl.cmd.ready & ~dma.store.busy,
                                              ctl.cmd.ready & ~peer.ctl.busy) & ~rst),
                             ctl.cmd.payload.eq(command(src.payload.desc)),
                             disp.dma_store_done.eq(ctl.done | peer.ctl.done),
                             disp.dma_store_error.eq(Mux(peer.ctl.done, peer.ctl.error, ctl.error)),
                             disp.engine_reset[i].eq(rst)]
                continue
            m.d.comb += [ctl.cmd.valid.eq(src.valid & ~(rst | frz)),
                         src.ready.eq(ctl.cmd.ready & ~(rst | frz)),
                         ctl.cmd.payload.eq(command(src.payload.desc)),
                         getattr(disp, f"{name}_done").eq(ctl.done & ~frz),
                         getattr(disp, f"{name}_error").eq(ctl.error),
                         disp.engine_reset[i].eq(rst)]
        return frozen

    @staticmethod
    def _sfu_command(m, desc):
        """The SFU's command from a descriptor: the operation its opcode names, and the payload."""
        op = Signal(SfuOp, name="sfu_cmd_op")
        with m.Switch(desc.opcode):
            for name, sfu_op in SFU_OPCODES.items():
                with m.Case(Opcode[name]):
                    m.d.comb += op.eq(sfu_op)
        return Cat(op, desc.payload.raw)

    def _memories(self, m, dma, gemm, vec, sfu, frozen, peer, rx, adder):
        cfg = self.config
        # Ports registered at the banks (chip_memory); the engines are built for the latency.
        # Priorities: the engines that cannot be denied first (GEMM's A rows, then its B rows; the
        # vector unit's write), then the vector unit, the SFU and the DMA, which retry. The link's
        # receiver writes before the DMA (a receiver denied too long holds the link's credits
        # and would time its sender out); the peer channel reads last.
        spad_rd = [(gemm.spad_rd, frozen["gemm"]), (gemm.spad_rd_b, frozen["gemm"]),
                   (vec.spad_rd, frozen["vec"]), (sfu.spad_rd, 0), (dma.spad_rd, 0), (peer.spad_rd, 0)]
        spad_wr = [(vec.spad_wr, frozen["vec"]), (sfu.spad_wr, 0),
                   *([(rx.wr0, 0)] if rx is not None else []), (dma.spad_wr, 0)]
        acc_rd = [(gemm.acc_rd, frozen["gemm"]), (vec.acc_rd, frozen["vec"]), (sfu.acc_rd, 0),
                  *([(adder.rd, 0)] if rx is not None else []), (dma.acc_rd, 0), (peer.acc_rd, 0)]
        acc_wr = [(gemm.acc_wr, frozen["gemm"]),
                  *([(rx.wr1, 0), (adder.wr, 0)] if rx is not None else []), (dma.acc_wr, 0)]
        m.submodules.spad = spad = chip_memory(
            cfg, banks=cfg.spad_banks, bank_rows=cfg.spad_bank_rows, width=cfg.dim * 8,
            n_read=len(spad_rd), n_write=len(spad_wr))
        m.submodules.acc = acc = chip_memory(
            cfg, banks=cfg.acc_banks, bank_rows=cfg.acc_bank_rows, width=cfg.dim * 32,
            n_read=len(acc_rd), n_write=len(acc_wr))
        pairs = [(mem.rd[i] if kind == "rd" else mem.wr[i], req, gate)
                 for mem, kind, reqs in ((spad, "rd", spad_rd), (spad, "wr", spad_wr),
                                         (acc, "rd", acc_rd), (acc, "wr", acc_wr))
                 for i, (req, gate) in enumerate(reqs)]
        for port, requester, gate in pairs:
            # A frozen engine must not hold a bank: its requests are masked.
            m.d.comb += [port.addr.eq(requester.addr), port.en.eq(requester.en & ~gate),
                         requester.gnt.eq(port.gnt & ~gate)]
            if isinstance(requester.signature, WritePortSignature):
                m.d.comb += port.data.eq(requester.data)
            else:
                m.d.comb += requester.data.eq(port.data)

    # ---------------------------------------------------------------- control core

    def _fw_write(self, m, ctl, ident, field=None):
        """Decode a firmware write to MMIO register ``ident`` from the core's bus.

        Returns the written value of ``field`` (or the whole word) for one cycle, the cycle after
        the write reached the register block (the one it is acknowledged in), else 0, and the
        write strobe. Registered so that the decode does not sit in front of what the write acts
        on (the dispatcher's FIFOs, the queue controller's pops: docs/synthesis.md); the core's
        next MMIO access reaches the bus two cycles after the acknowledge at the earliest, so the
        effect (a pop, a push) is still visible to it.
        """
        bus = ctl.mmio
        reg = regmap.by_ident(MMIO_RDL)[ident]
        strobe = Signal(name=f"fw_write_{ident.lower()}")
        m.d.sync += strobe.eq(bus.en & ~bus.ack & bus.we
                              & (bus.addr[2:MMIO_ADDR_BITS] == reg.addr >> 2))
        word = Signal(32, name=f"fw_write_{ident.lower()}_word")
        m.d.sync += word.eq(bus.wdata)
        if field is None:
            return strobe, word
        value = Signal(reg.field(field).width, name=f"fw_write_{ident.lower()}_{field.lower()}")
        m.d.comb += value.eq(_mmio_field(ident, field, word) & strobe.replicate(len(value)))
        return strobe, value

    def _control_core(self, m, csr, fw, ctl, held):
        m.d.comb += [
            ctl.run.eq(csr.core_ctrl_run),
            ctl.load_addr.eq(csr.core_mem_addr_addr),
            ctl.load_addr_we.eq(csr.core_mem_addr_addr_swmod),
            ctl.load_data.eq(csr.core_mem_data_data),
            ctl.load_data_we.eq(csr.core_mem_data_data_swmod),
            csr.fw_version_version.eq(fw.fw_version_version),
            csr.fw_status_state.eq(fw.fw_status_state),
            csr.fw_status_sleeping.eq(ctl.sleeping),
            csr.core_pc_pc.eq(ctl.pc),
            csr.fw_fault_pc_value.eq(fw.fw_fault_pc_pc),
            csr.fw_fault_cause_value.eq(fw.fw_fault_cause_cause),
            csr.fw_fault_tval_value.eq(fw.fw_fault_tval_tval),
            fw.watchdog_cycles.eq(csr.watchdog_cycles),
        ]
        with m.If(fw.fw_msg_send_go):
            m.d.sync += csr.fw_msg_value.eq(fw.fw_msg_value)


    # ---------------------------------------------------------------- command flow

    def _submission(self, m, csr, ctl, disp, qc, dma, iu, held):
        """Dispatcher input: the issue unit's command, or (core held) CMD_SUBMIT; the heads the
        issue unit pops, and the firmware's Q_POP of the heads it leaves to it."""
        words = [getattr(csr, f"cmd{i}_word") for i in range(8)]
        with m.If(iu.submit):
            m.d.comb += [disp.desc.eq(iu.desc), disp.submit.eq(1), disp.queue.eq(iu.submit_queue),
                         disp.windowed.eq(1)]
        with m.Else():
            m.d.comb += [disp.desc.eq(Cat(*words)), disp.submit.eq(csr.cmd_submit_go & held)]
        write, word = self._fw_write(m, ctl, "Q_POP")
        pops = _mmio_field("Q_POP", "QUEUE", word) & write.replicate(self.config.queues)
        m.d.comb += iu.fw_status.eq(_mmio_field("Q_POP", "STATUS", word))
        for i in range(self.config.queues):
            q = qc.q[i]
            m.d.comb += [q.pop.eq(iu.q[i].pop), iu.q[i].fw_pop.eq(pops[i]),
                         iu.q[i].head.eq(q.head), iu.q[i].valid.eq(q.prefetched != 0),
                         iu.q[i].item.eq(q.head_item), iu.q[i].end.eq(q.head_end),
                         iu.q[i].active.eq(q.active),
                         iu.q[i].cleared.eq(q.cleared), q.drained.eq(iu.q[i].drained)]
        # The DMA window of the queue a command came from travels with it through the FIFO.
        for chan, port in (("dma_load", dma.load_window), ("dma_store", dma.store_window)):
            entry = getattr(disp, chan).payload
            with m.Switch(entry.queue):
                for i in range(self.config.queues):
                    with m.Case(i):
                        m.d.comb += [port.base.eq(getattr(csr, f"q_window_base{i}_addr")),
                                     port.size.eq(getattr(csr, f"q_window_size{i}_bytes"))]
            m.d.comb += port.check.eq(entry.windowed)

    def _queues(self, m, csr, fw, ctl, qc, iu, held):
        timestamp = Signal(32, name="timestamp")
        m.d.sync += timestamp.eq(timestamp + 1)
        m.d.comb += [csr.timestamp_cycles.eq(timestamp), fw.timestamp_cycles.eq(timestamp)]
        acks = self._fw_write(m, ctl, "QRESET_ACK", "QUEUE")[1]
        for i in range(self.config.queues):
            q = qc.q[i]
            reg = lambda name, field: getattr(csr, f"{name}{i}_{field}")
            m.d.comb += [
                q.ring_base.eq(reg("q_ring_base", "addr")), q.ring_log2.eq(reg("q_ring_size", "log2")),
                q.cpl_base.eq(reg("q_cpl_base", "addr")), q.enable.eq(reg("q_ctrl", "enable")),
                q.reset.eq(reg("q_ctrl", "reset")),
                q.doorbell.eq(reg("q_doorbell", "producer")),
                q.doorbell_we.eq(_after_write(m, reg("q_doorbell", "producer_swmod"), f"doorbell{i}_written")),
                q.qreset_ack.eq(acks[i]),
                reg("q_consumer", "index").eq(q.consumer), reg("q_fetch", "index").eq(q.fetch),
                reg("q_status", "active").eq(q.active), reg("q_status", "halted").eq(q.halted),
                reg("q_status", "resetting").eq(q.resetting),
                reg("q_status", "waiting").eq(iu.q[i].waiting),
                reg("q_status", "prefetched").eq(q.prefetched),
                reg("q_error", "code").eq(q.error), reg("q_error_index", "index").eq(q.error_index),
                getattr(fw, f"q_head_index{i}_index").eq(q.head_index),
            ]
            for w in range(8):
                m.d.comb += getattr(fw, f"q_head{8 * i + w}_word").eq(q.head[32 * w:32 * w + 32])
        for e in range(self.config.events):
            m.d.comb += [getattr(csr, f"event{e}_value").eq(iu.events[e]),
                         getattr(fw, f"event{e}_value").eq(iu.events[e])]
        free = qc.cpl_free != 0
        m.d.comb += [
            qc.fw_running.eq(~held), qc.bus_timeout.eq(csr.bus_timeout_cycles),
            iu.cpl_ready.eq(free), qc.cpl_valid.eq(iu.cpl_valid & free),
            qc.cpl_queue.eq(iu.cpl_queue), qc.cpl_irq.eq(iu.cpl_irq), qc.cpl_halt.eq(iu.cpl_halt),
            qc.cpl_flags.eq(iu.cpl_flags), qc.cpl_status.eq(iu.cpl_status),
            qc.cpl_opcode.eq(iu.cpl_opcode), qc.cpl_tag.eq(iu.cpl_tag), qc.cpl_item.eq(iu.cpl_item),
            qc.cpl_timestamp.eq(timestamp),
        ]

    # ---------------------------------------------------------------- status, interrupts, perf

    def _status(self, m, csr, disp, reset):
        cfg = self.config
        m.d.comb += [
            csr.cap_array_rows.eq(cfg.dim), csr.cap_array_cols.eq(cfg.dim),
            csr.cap_spad_banks.eq(cfg.spad_banks), csr.cap_spad_bank_rows.eq(cfg.spad_bank_rows),
            csr.cap_acc_banks.eq(cfg.acc_banks), csr.cap_acc_bank_rows.eq(cfg.acc_bank_rows),
            csr.cap_dma_data_bytes.eq(cfg.axi_data_bits // 8),
            csr.cap_dma_max_burst.eq(cfg.max_burst_beats),
            csr.cap_dma_outstanding.eq(cfg.dma_outstanding),
            csr.cap_dma_addr_bits.eq(cfg.axi_addr_bits),
            csr.cap_queues_queues.eq(cfg.queues), csr.cap_queues_fifo_depth.eq(cfg.fifo_depth),
            csr.cap_queues_prefetch.eq(cfg.prefetch), csr.cap_queues_events.eq(cfg.events),
            *[getattr(csr, f"status_{port_name(e)}_busy").eq(disp.inflight[i])
              for i, e in enumerate(ENGINES)],
            csr.status_idle.eq(disp.idle),
        ]
        for i, name in enumerate(map(port_name, ENGINES)):
            count = Signal(32, name=f"done_count_{name}")
            # Commands the engine completed: not the one an engine reset retires.
            with m.If(disp.retire[i].done & ~reset[i]):
                m.d.sync += count.eq(count + 1)
            m.d.comb += getattr(csr, f"done_{name}_count").eq(count)

    def _interrupts(self, m, csr, fw, disp, qc):
        causes = [f"{port_name(e)}_done" for e in ENGINES]
        for i, cause in enumerate(causes):
            r = disp.retire[i]
            m.d.comb += getattr(csr, f"irq_status_{cause}_set").eq(
                r.done & r.irq & (r.error == ErrorCode.OK) & ~csr.core_ctrl_run)
        # The first failure of a direct submission since IRQ_STATUS.ERROR was cleared is kept in
        # ERROR_INFO; queued commands report through their queue instead.
        direct_busy = Signal()
        m.d.comb += direct_busy.eq(csr.cmd_submit_go & csr.core_ctrl_run)
        failing = Signal()
        code, opcode, tag = Signal(8), Signal(8), Signal(16)
        for ev in reversed([disp.reject, *disp.retire]):   # the earliest event in the list wins
            with m.If(ev.done & (ev.error != ErrorCode.OK) & ~csr.core_ctrl_run):
                m.d.comb += [failing.eq(1), code.eq(ev.error), opcode.eq(ev.opcode),
                             tag.eq(ev.tag)]
        words0 = csr.cmd0_word
        with m.If(direct_busy):
            m.d.comb += [failing.eq(1), code.eq(ErrorCode.DIRECT_SUBMIT), opcode.eq(words0[:8]),
                         tag.eq(words0[16:32])]
        info = [csr.error_info_code, csr.error_info_opcode, csr.error_info_tag]
        with m.If(failing & ~csr.irq_status_error):
            m.d.sync += [dst.eq(src) for dst, src in zip(info, (code, opcode, tag))]
        m.d.comb += [
            csr.irq_status_error_set.eq(failing),
            csr.irq_status_queue_cpl_set.eq(Cat(*[qc.q[i].cpl_irq for i in range(self.config.queues)])),
            csr.irq_status_queue_error_set.eq(Cat(*[qc.q[i].error_irq for i in range(self.config.queues)])),
            csr.irq_status_fw_msg_set.eq(fw.fw_msg_send_go),
        ]
        pending = Signal()
        status = [*causes, "error", "queue_cpl", "queue_error", "fw_msg"]
        m.d.comb += pending.eq(Cat(*[(getattr(csr, f"irq_status_{n}") & getattr(csr, f"irq_enable_{n}")).any()
                                     for n in status]).any())
        m.d.sync += self.irq.eq(pending)

    def _perf_counters(self, m, csr, fw, disp, qc, iu, dma, gemm, vec, sfu, frozen, peer):
        # A frozen engine (DEBUG_HANG) counts as busy and stalled.
        gemm_frz, vec_frz = frozen["gemm"], frozen["vec"]
        vec_busy, vec_active = vec.ctl.busy | vec_frz, vec.active & ~vec_frz
        events = {
            "cycles": 1, "gemm_busy": gemm.ctl.busy | gemm_frz, "gemm_active": gemm.active & ~gemm_frz,
            "gemm_stall": gemm.stall | gemm_frz, "vec_busy": vec_busy, "vec_active": vec_active,
            "dma_load_busy": dma.load.busy, "dma_store_busy": dma.store.busy | peer.ctl.busy,
            "dma_load_bytes": dma.load_bytes, "dma_store_bytes": dma.store_bytes,
            "dma_load_stall": dma.load.busy & ~(dma.axi.rvalid & dma.axi.rready),
            "dma_store_stall": dma.store.busy & ~(dma.axi.wvalid & dma.axi.wready),
            "vec_stall": vec_busy & ~vec_active,
            "sfu_busy": sfu.ctl.busy, "sfu_active": sfu.active, "sfu_stall": sfu.ctl.busy & ~sfu.active,
        }
        for i, name in enumerate(map(port_name, ENGINES)):
            events[f"{name}_full"] = disp.full[i]
        for i in range(self.config.queues):
            events[f"q_retired{i}"] = qc.q[i].retired
            events[f"q_event_stall{i}"] = iu.q[i].waiting
        regs = regmap.by_ident()
        by_addr = {}
        for name, inc in events.items():
            counter = Signal(32, name=f"perf_{name}")
            with m.If(csr.perf_ctrl_clear):
                m.d.sync += counter.eq(0)
            with m.Elif(~csr.perf_ctrl_freeze):
                m.d.sync += counter.eq(counter + inc)
            m.d.comb += getattr(csr, f"perf_{name}_count").eq(counter)
            by_addr[regs[f"PERF_{name.upper()}"].addr] = counter
        # The firmware reads the same counters by their host CSR address.
        with m.Switch(fw.perf_sel_addr):
            for addr, counter in by_addr.items():
                with m.Case(addr):
                    m.d.comb += fw.perf_value_value.eq(counter)
