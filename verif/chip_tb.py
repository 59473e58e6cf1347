"""Whole-chip testbench: one Kaki SoC wired to the HDL host memory model.

:class:`ChipTB` owns reset, the CSR bus master (cocotbext-axi AXI4-Lite), the host
memory backdoor and the interrupt line. It talks to the chip only through its ports; host memory
belongs to the testbench and is loaded through the backdoor. The clock is made by the testbench
top itself (soc_target.py), period ``CLOCK_NS``.
"""
import logging
import os

import cocotb
from cocotb.triggers import ClockCycles, Lock, RisingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

import numpy as np

from compiler.lower_gemm import (encode_phases, host_layout, load_operands, lower_gemm_epilogue,
                                 plan_gemm, with_irq)
from spec import registers as R
from spec.capabilities import Capabilities
from spec.commands import encode
from spec.descriptors import COMMANDS, Engine, ErrorCode, Opcode
from driver.bringup import load_firmware
from driver.ops import run_async
from .workloads import gemm_epilogue_reference, host_tensors, run_on_model

from .csr_master import CsrMaster
from .host_mem import HostMemory
from .soc_target import CLOCK_NS, FIRST_EDGE_NS, HOST_WORDS

#: the DONE_<engine> counter of the engine serving each engine opcode (the command table)
_ENGINE_DONE = {int(op): f"DONE_{c.engine.name}" for op, c in COMMANDS.items() if c.engine is not None}


class DeviceTimeout(AssertionError):
    """A wait on the device exceeded its budget; the message says what was awaited and the state."""


class CommandFailed(AssertionError):
    """The device reported an error for a command."""

    def __init__(self, code, opcode, tag):
        super().__init__(f"command tag {tag} ({Opcode(opcode).name if opcode in Opcode._value2member_map_ else opcode}) "
                         f"failed with {ErrorCode(code).name if code in ErrorCode._value2member_map_ else code}")
        self.code, self.opcode, self.tag = code, opcode, tag


class CocotbextCsr:
    """cocotbext-axi's AxiLiteMaster behind :class:`CsrMaster`'s interface."""

    def __init__(self, dut):
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "csr", bus_separator="__"),
                                  dut.clk, dut.rst)
        for channel in (self.axil.write_if, self.axil.read_if):
            channel.log.setLevel(logging.WARNING)

    async def read(self, addr):
        resp = await self.axil.read(addr, 4)
        return int.from_bytes(resp.data, "little")

    async def write(self, addr, value):
        return int((await self.axil.write(addr, int(value).to_bytes(4, "little"))).resp)


#: ``KAKI_CSR_MASTER`` / ``ChipTB(csr_master=...)`` values
CSR_MASTERS = ("lean", "cocotbext-axi")


class ChipTB:
    def __init__(self, dut, csr_master=None):
        self.dut = dut
        self.seed = int(os.environ.get("KAKI_SEED", "1"))
        kind = csr_master or os.environ.get("KAKI_CSR_MASTER") or "lean"
        if kind not in CSR_MASTERS:
            raise ValueError(f"CSR master {kind!r}: expected one of {CSR_MASTERS}")
        self.csr = CsrMaster(dut, dut.clk) if kind == "lean" else CocotbextCsr(dut)
        self.host = HostMemory(dut, prefix="host_", words=HOST_WORDS, mem=dut.host.mem)
        self.host.configure(seed=self.seed)
        self.caps = None
        self.log = dut._log
        #: A boundary observer (verif/boundary_monitor.py) told of every register access
        #: made through read()/write() (functional_coverage.observe sets it); None: nobody.
        self.observer = None
        self._host_lock = Lock()

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 5)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)
        self.caps = await self.capabilities()
        self._submitted = {e: 0 for e in _ENGINE_DONE.values()}
        self._retired = {e: 0 for e in _ENGINE_DONE.values()}
        return self.caps

    # ------------------------------------------------------------------ registers
    async def read(self, reg):
        value = await self.csr.read(reg.addr)
        if self.observer is not None:
            self.observer.on_read(reg, value)
        return value

    async def write(self, reg, value):
        if self.observer is not None:
            self.observer.on_write(reg, int(value))
        await self.csr.write(reg.addr, int(value))

    async def capabilities(self):
        values = {}
        for reg in (R.ID, R.VERSION, R.CAP_ARRAY, R.CAP_SPAD, R.CAP_ACC, R.CAP_DMA, R.CAP_QUEUES):
            values[reg.name] = await self.read(reg)
        return Capabilities.from_values(lambda reg: values[reg.name])

    # ------------------------------------------------------------------ commands
    async def submit(self, words):
        """Write one descriptor and ring the doorbell, first waiting for room in its engine's FIFO.

        Room is judged from the engine's DONE_* counter: at most FIFO_DEPTH of the commands this
        testbench submitted to an engine may be unretired (the executing one counts, so this is
        conservative by one).
        """
        engine = _ENGINE_DONE.get(words[0] & 0xFF)
        if engine is not None:
            for _ in range(100_000):
                if self._submitted[engine] - self._retired[engine] < self.caps.fifo_depth:
                    break
                self._retired[engine] = await self.read(R.REGISTERS[engine])
            else:
                raise DeviceTimeout(f"{engine} never retired a command to make room; {await self.state()}")
            self._submitted[engine] += 1
        for reg, w in zip(R.CMD, words):
            await self.write(reg, w)
        await self.write(R.CMD_SUBMIT, R.CMD_SUBMIT.GO.put(1))

    async def wait_irq(self, timeout_cycles, what):
        """Wait for the IRQ line; on timeout raise DeviceTimeout naming ``what`` and the state."""
        if not int(self.dut.irq.value):
            try:
                await with_timeout(RisingEdge(self.dut.irq), timeout_cycles * CLOCK_NS, "ns")
            except cocotb.triggers.SimTimeoutError:
                raise DeviceTimeout(f"no interrupt after {timeout_cycles} cycles waiting for "
                                    f"{what}; {await self.state()}") from None
        status = await self.read(R.IRQ_STATUS)
        await self.write(R.IRQ_STATUS, status)          # W1C acknowledge
        if R.IRQ_STATUS.ERROR.get(status):
            info = R.ERROR_INFO.decode(await self.read(R.ERROR_INFO))
            raise CommandFailed(info["CODE"], info["OPCODE"], info["TAG"])
        return status

    async def state(self):
        """Status, retire counts and first error, for timeout messages."""
        parts = [f"STATUS={R.STATUS.decode(await self.read(R.STATUS))}"]
        for reg in (R.REGISTERS[f"DONE_{e.name}"] for e in Engine):
            parts.append(f"{reg.name}={await self.read(reg)}")
        parts.append(f"IRQ_STATUS={await self.read(R.IRQ_STATUS):#x}")
        parts.append(f"ERROR_INFO={R.ERROR_INFO.decode(await self.read(R.ERROR_INFO))}")
        return ", ".join(parts)

    async def enable_irqs(self):
        await self.write(R.IRQ_ENABLE, sum(f.mask for f in R.IRQ_ENABLE.fields))

    async def run_phases(self, phases, timeout_cycles=2_000_000):
        """Submit each phase (a list of descriptor word lists) and wait for its last command's IRQ."""
        for i, phase in enumerate(phases):
            for words in phase:
                await self.submit(words)
            await self.wait_irq(timeout_cycles, f"phase {i} ({len(phase)} commands)")

    async def perf(self):
        names = ["PERF_CYCLES", "PERF_GEMM_BUSY", "PERF_GEMM_ACTIVE", "PERF_GEMM_STALL",
                 "PERF_VEC_BUSY", "PERF_VEC_ACTIVE", "PERF_DMA_LOAD_BUSY", "PERF_DMA_STORE_BUSY",
                 "PERF_DMA_LOAD_BYTES", "PERF_DMA_STORE_BYTES"]
        return {n: await self.read(R.REGISTERS[n]) for n in names}

    # ------------------------------------------------------------------ control core
    async def load_firmware(self, image, timeout_cycles=50_000):
        """The driver's bring-up (driver/bringup.py): hold the core, load ``image`` (a
        FirmwareImage), release it, wait for READY; returns FW_VERSION. Raises FirmwareError with
        the firmware's status and fault registers if it faults or is not READY in time."""
        return await run_async(load_firmware(image, budget=timeout_cycles, poll=50), self)

    # ------------------------------------------------------------------ device-program backend
    async def host_read(self, addr, n):
        async with self._host_lock:          # the backdoor uses one file: one transfer at a time
            return await self.host.read(addr, n)

    async def host_write(self, addr, data):
        async with self._host_lock:
            await self.host.load(addr, bytes(data))

    async def wait(self, cycles):
        """Return at the ``cycles``-th rising clock edge from now (as ``ClockCycles`` would), after
        one timer wake-up instead of one per edge: scenarios poll with waits of hundreds of
        cycles, and each Python wake-up costs as much as simulating a few cycles."""
        if cycles <= 0:
            return
        now = int(get_sim_time("ns"))
        edge = (now - FIRST_EDGE_NS) // CLOCK_NS + cycles        # the rising edge to return at
        until = FIRST_EDGE_NS + edge * CLOCK_NS - CLOCK_NS // 2  # half a cycle before it
        if until > now:
            await Timer(until - now, "ns")
        await RisingEdge(self.dut.clk)

    async def wait_interrupt(self, max_cycles):
        """Driver backend interface (driver/device.py): True as soon as the irq line is high (at
        once if it already is), False after ``max_cycles`` cycles without it."""
        if int(self.dut.irq.value):
            return True
        try:
            await with_timeout(RisingEdge(self.dut.irq), int(max_cycles) * CLOCK_NS, "ns")
        except cocotb.triggers.SimTimeoutError:
            return False
        return True

    async def clear_perf(self):
        await self.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))

    async def run_commands(self, cmds, timeout_cycles=2_000_000):
        """Encode compiler Commands, submit them, and wait for the interrupt of the last one."""
        phase = [encode(c.opcode, irq=c.irq, tag=i, **c.fields) for i, c in enumerate(with_irq(cmds))]
        await self.run_phases([phase], timeout_cycles)

    async def load_gemm_operands(self, a, b):
        """Put A and B in host memory and DMA them on chip for a GEMM alone; return (plan, free host addr)."""
        m, k = a.shape
        n = b.shape[1]
        layout, end = host_layout(m, k, n)
        await self.host.load(layout.a, a.tobytes())
        await self.host.load(layout.b, b.tobytes())
        plan = plan_gemm(m, k, n, self.caps, layout, with_output=False)
        await self.run_commands(load_operands(plan))
        return plan, end

    async def gemm_epilogue(self, case, base=0x1000):
        """Run one compiled GEMM + epilogue case; check it against the golden model and NumPy.

        Returns the performance counters of each phase (load, gemm, epilogue, store).
        """
        m, k = case["a"].shape
        n = case["b"].shape[1]
        layout, end = host_layout(m, k, n, base=base)
        tensors = host_tensors(case, layout)
        for addr, arr in tensors:
            await self.host.load(addr, arr.tobytes())
        phases = encode_phases(lower_gemm_epilogue(plan_gemm(m, k, n, self.caps, layout),
                                                   zero_point=case["zp"]))
        perf = {}
        for name, phase in zip(("load", "gemm", "epilogue", "store"), phases):
            await self.clear_perf()
            await self.run_phases([phase])
            perf[name] = await self.perf()
        got = np.frombuffer(await self.host.read(layout.out, m * n), np.int8).reshape(m, n)
        model = run_on_model(self.caps, phases, tensors, end)
        expect = model.host[layout.out:layout.out + m * n].view(np.int8).reshape(m, n)
        ref = gemm_epilogue_reference(case)
        assert np.array_equal(expect, ref), "golden device model disagrees with the NumPy reference"
        wrong = np.argwhere(got != ref)
        assert wrong.size == 0, (
            f"GEMM {m}x{k}x{n}: {len(wrong)} of {m * n} outputs wrong, first at {tuple(wrong[0])}: "
            f"got {got[tuple(wrong[0])]}, expected {ref[tuple(wrong[0])]}")
        return perf
