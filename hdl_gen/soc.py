"""Kaki SoC top: CSR block, dispatcher, DMA, GEMM engine, vector unit and the on-chip memories."""
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .axi import Axi4LiteSignature, Axi4Signature
from .banked_memory import BankedMemory
from .config import KakiConfig
from .control_core import ControlSubsystem
from .csr_block import CsrBlock
from .descriptor import ErrorCode
from .dispatcher import ENGINES, Dispatcher
from .dma_engine import DmaEngine
from .gemm_engine import GemmEngine
from .vector_unit import VectorUnit

FIFO_DEPTH = 4


class KakiSoc(wiring.Component):
    """One Kaki chip.

    Control: the host loads the RV32IM control core's firmware through CORE_MEM_* and releases it
    with CORE_CTRL.RUN; the firmware reports through its MMIO registers, mirrored in FW_*.

    Data path: host memory --AXI4--> DMA load --> scratchpad / accumulator --> GEMM engine (PE
    array) --> accumulator --> vector unit --> scratchpad --> DMA store --AXI4--> host memory.

    Memory port priorities (lower wins a bank): scratchpad reads GEMM, vector, DMA; scratchpad
    writes vector, DMA; accumulator reads GEMM, vector, DMA; accumulator writes GEMM, DMA. The GEMM
    engine therefore never waits on memory, and the DMA only waits when software puts its
    transfer in a bank the compute engines are using.

    Ports
    -----
    csr : In(Axi4LiteSignature(12)) — register port (target), map in docs/registers.md.
    mem : Out(Axi4Signature(axi_addr_bits, axi_data_bits, axi_id_bits)) — DMA master to host memory.
    irq : Out(1) — level interrupt: ``IRQ_STATUS & IRQ_ENABLE`` is non-zero.
    """

    def __init__(self, config=KakiConfig()):
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {config!r}")
        self.config = config
        super().__init__({
            "csr": In(Axi4LiteSignature(regmap.addr_bits())),
            "mem": Out(Axi4Signature(config.axi_addr_bits, config.axi_data_bits,
                                     config.axi_id_bits)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.csr = csr = CsrBlock()
        m.submodules.dispatcher = disp = Dispatcher(depth=FIFO_DEPTH)
        m.submodules.dma = dma = DmaEngine(cfg)
        m.submodules.gemm = gemm = GemmEngine(cfg)
        m.submodules.vec = vec = VectorUnit(cfg)
        m.submodules.spad = spad = BankedMemory(
            banks=cfg.spad_banks, bank_rows=cfg.spad_bank_rows, width=cfg.dim * 8,
            n_read=3, n_write=2)
        m.submodules.acc = acc = BankedMemory(
            banks=cfg.acc_banks, bank_rows=cfg.acc_bank_rows, width=cfg.dim * 32,
            n_read=3, n_write=2)

        wiring.connect(m, wiring.flipped(self.csr), csr.bus)
        wiring.connect(m, wiring.flipped(self.mem), dma.axi)
        for port, requester in ((spad.rd[0], gemm.spad_rd), (spad.rd[1], vec.spad_rd),
                                (spad.rd[2], dma.spad_rd), (spad.wr[0], vec.spad_wr),
                                (spad.wr[1], dma.spad_wr), (acc.rd[0], gemm.acc_rd),
                                (acc.rd[1], vec.acc_rd), (acc.rd[2], dma.acc_rd),
                                (acc.wr[0], gemm.acc_wr), (acc.wr[1], dma.acc_wr)):
            wiring.connect(m, port, requester)

        # Descriptor submission: the CMD staging words and the doorbell feed the dispatcher.
        words = [getattr(csr, f"cmd{i}_word") for i in range(8)]
        m.d.comb += [disp.desc.eq(sum((w << (32 * i) for i, w in enumerate(words)))),
                     disp.submit.eq(csr.cmd_submit_go)]
        engines = {"dma_load": (dma.load, "dma"), "dma_store": (dma.store, "dma"),
                   "gemm": (gemm.ctl, "gemm"), "vec": (vec.ctl, "vec")}
        for name, _ in ENGINES:
            ctl, kind = engines[name]
            src = getattr(disp, name)
            m.d.comb += [ctl.cmd.valid.eq(src.valid), src.ready.eq(ctl.cmd.ready),
                         ctl.cmd.payload.eq(getattr(src.payload.payload, kind)),
                         getattr(disp, f"{name}_done").eq(ctl.done),
                         getattr(disp, f"{name}_error").eq(ctl.error)]

        m.submodules.control = ctl = ControlSubsystem()
        self._control_core(m, csr, ctl)
        self._status(m, csr, disp, engines)
        self._interrupts(m, csr, disp)
        self._perf_counters(m, csr, dma, gemm, vec)
        return m

    def _control_core(self, m, csr, ctl):
        m.d.comb += [
            ctl.run.eq(csr.core_ctrl_run),
            ctl.load_addr.eq(csr.core_mem_addr_addr),
            ctl.load_addr_we.eq(csr.core_mem_addr_addr_swmod),
            ctl.load_data.eq(csr.core_mem_data_data),
            ctl.load_data_we.eq(csr.core_mem_data_data_swmod),
            ctl.irq.eq(0),   # no interrupt source is routed to the core yet
            csr.fw_version_version.eq(ctl.fw_version),
            csr.fw_status_state.eq(ctl.fw_state),
            csr.fw_status_sleeping.eq(ctl.sleeping),
            csr.fw_fault_pc_value.eq(ctl.fault_pc),
            csr.fw_fault_cause_value.eq(ctl.fault_cause),
            csr.fw_fault_tval_value.eq(ctl.fault_tval),
        ]

    def _status(self, m, csr, disp, engines):
        cfg = self.config
        m.d.comb += [
            csr.cap_array_rows.eq(cfg.dim), csr.cap_array_cols.eq(cfg.dim),
            csr.cap_spad_banks.eq(cfg.spad_banks), csr.cap_spad_bank_rows.eq(cfg.spad_bank_rows),
            csr.cap_acc_banks.eq(cfg.acc_banks), csr.cap_acc_bank_rows.eq(cfg.acc_bank_rows),
            csr.cap_dma_data_bytes.eq(cfg.axi_data_bits // 8),
            csr.cap_dma_max_burst.eq(cfg.max_burst_beats),
            csr.cap_dma_outstanding.eq(cfg.dma_outstanding),
            csr.cap_dma_addr_bits.eq(cfg.axi_addr_bits),
            csr.cap_queues_queues.eq(0), csr.cap_queues_fifo_depth.eq(FIFO_DEPTH),
            csr.status_dma_load_busy.eq(disp.inflight[0]),
            csr.status_dma_store_busy.eq(disp.inflight[1]),
            csr.status_gemm_busy.eq(disp.inflight[2]),
            csr.status_vec_busy.eq(disp.inflight[3]),
            csr.status_idle.eq(disp.idle),
        ]
        for i, (name, _) in enumerate(ENGINES):
            count = Signal(32, name=f"done_count_{name}")
            with m.If(disp.retire[i].done):
                m.d.sync += count.eq(count + 1)
            m.d.comb += getattr(csr, f"done_{name}_count").eq(count)

    def _interrupts(self, m, csr, disp):
        causes = ("dma_load_done", "dma_store_done", "gemm_done", "vec_done")
        for i, cause in enumerate(causes):
            r = disp.retire[i]
            m.d.comb += getattr(csr, f"irq_status_{cause}_set").eq(
                r.done & r.irq & (r.error == ErrorCode.OK))
        # The first failure since IRQ_STATUS.ERROR was cleared is kept in ERROR_INFO.
        events = [disp.reject, *disp.retire]
        failing = Signal()
        code, opcode, tag = Signal(8), Signal(8), Signal(16)
        for ev in reversed(events):   # the earliest event in the list wins a tie
            with m.If(ev.done & (ev.error != ErrorCode.OK)):
                m.d.comb += [failing.eq(1), code.eq(ev.error), opcode.eq(ev.opcode),
                             tag.eq(ev.tag)]
        info = [csr.error_info_code, csr.error_info_opcode, csr.error_info_tag]
        with m.If(failing & ~csr.irq_status_error):
            m.d.sync += [dst.eq(src) for dst, src in zip(info, (code, opcode, tag))]
        m.d.comb += csr.irq_status_error_set.eq(failing)
        pending = Signal()
        m.d.comb += pending.eq(
            (csr.irq_status_dma_load_done & csr.irq_enable_dma_load_done)
            | (csr.irq_status_dma_store_done & csr.irq_enable_dma_store_done)
            | (csr.irq_status_gemm_done & csr.irq_enable_gemm_done)
            | (csr.irq_status_vec_done & csr.irq_enable_vec_done)
            | (csr.irq_status_error & csr.irq_enable_error))
        m.d.sync += self.irq.eq(pending)

    def _perf_counters(self, m, csr, dma, gemm, vec):
        events = {
            "cycles": 1, "gemm_busy": gemm.ctl.busy, "gemm_active": gemm.active,
            "gemm_stall": gemm.stall, "vec_busy": vec.ctl.busy, "vec_active": vec.active,
            "dma_load_busy": dma.load.busy, "dma_store_busy": dma.store.busy,
            "dma_load_bytes": dma.load_bytes, "dma_store_bytes": dma.store_bytes,
        }
        for name, inc in events.items():
            counter = Signal(32, name=f"perf_{name}")
            with m.If(csr.perf_ctrl_clear):
                m.d.sync += counter.eq(0)
            with m.Elif(~csr.perf_ctrl_freeze):
                m.d.sync += counter.eq(counter + inc)
            m.d.comb += getattr(csr, f"perf_{name}_count").eq(counter)
