"""Functional model of the control subsystem: the ISS running firmware against its MMIO registers.

It mirrors what the host sees of the RTL (`hdl_gen/control_core.py`): the core held in reset while
loading, IMEM/DMEM loaded from a firmware image, and the firmware's MMIO registers
(`hdl_gen/kaki_mmio.rdl`) that the host reads as FW_*. Here the MMIO registers are plain storage;
:class:`golden.chip_model.ChipModel` extends this model with the hardware behind them (queue
controller, issue unit, engines, completion writer).
"""
from spec import mmio_registers as M
from spec.firmware_image import FirmwareState

from .rv32_iss import RV32ISS

MMIO_BASE = 0x2000_0000
#: byte-lane mask of each write strobe value
_STROBE_MASK = tuple(sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1) for strb in range(16))


class FirmwareTimeout(RuntimeError):
    """The firmware did not reach the awaited state; the message carries its status and fault."""


class FirmwareRegisters:
    """The MMIO register block: word registers with their RDL reset values; holes read 0."""

    def __init__(self):
        self.values = {}
        self.reset()

    def reset(self):
        self.values = {r.addr: sum(f.reset << f.lsb for f in r.fields) for r in M.REGISTERS.values()}

    def read(self, addr):
        return self.values.get(addr - MMIO_BASE, 0)

    def write(self, addr, value, wstrb):
        off = addr - MMIO_BASE
        if off in self.values:
            mask = _STROBE_MASK[wstrb & 0xF]
            self.values[off] = (self.values[off] & ~mask) | (value & mask)

    def __getitem__(self, reg):
        return self.values[reg.addr]


class ControlModel:
    """Host view of the control core: ``load_firmware`` = hold in reset, load, release, wait.

    ``regs`` is the MMIO device the ISS sees (default: a plain :class:`FirmwareRegisters`);
    subclasses that model hardware behind it override :meth:`run_core`.
    """

    def __init__(self, regs=None):
        self.regs = FirmwareRegisters() if regs is None else regs
        self.iss = RV32ISS(mmio=self.regs)
        self.running = False

    def hold(self):
        """CORE_CTRL.RUN = 0: core and firmware registers in reset (memories keep their contents)."""
        self.running = False
        self.iss.reset()
        self.regs.reset()

    def load(self, image):
        """Load a FirmwareImage into IMEM and DMEM (only while held)."""
        if self.running:
            raise RuntimeError("the control core must be held in reset while its memories are loaded")
        self.iss.load_imem(image.imem)
        self.iss.dmem[:len(image.dmem)] = image.dmem

    def release(self, max_steps=100_000):
        """CORE_CTRL.RUN = 1: run until the firmware sleeps in WFI (or ``max_steps``)."""
        self.running = True
        return self.run_core(max_steps)

    def run_core(self, max_steps):
        """Run the core until it sleeps in WFI with nothing to wake it (or ``max_steps``)."""
        return self.iss.run(max_steps)

    def firmware_state(self):
        """FW_STATUS.STATE as a :class:`FirmwareState` (or the raw value if unknown)."""
        state = M.FW_STATUS.STATE.get(self.regs[M.FW_STATUS])
        return FirmwareState(state) if state in FirmwareState._value2member_map_ else state

    def fault_summary(self):
        """The firmware state and fault registers, for error messages."""
        return (f"firmware state {self.firmware_state()!r}; fault pc {self.regs[M.FW_FAULT_PC]:#x} "
                f"cause {self.regs[M.FW_FAULT_CAUSE]:#x} tval {self.regs[M.FW_FAULT_TVAL]:#x}")

    def load_firmware(self, image, max_steps=100_000):
        """Hold, load, release; return FW_VERSION once FW_STATUS says READY."""
        self.hold()
        self.load(image)
        steps = self.release(max_steps)
        if self.firmware_state() != FirmwareState.READY:
            raise FirmwareTimeout(f"not READY after {steps} steps: {self.fault_summary()}")
        return self.regs[M.FW_VERSION]
