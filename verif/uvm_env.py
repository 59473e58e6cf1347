"""pyuvm environment for the whole chip (docs/verification.md).

::

    KakiTest ── KakiEnv ─┬─ HostAgent: WorkSequencer → DeviceDriver ─ (probe) ─→ CSR bus, host memory
                         ├─ BoundaryMonitor  (the probe's transactions)  ──ap──┬→ Scoreboard
                         ├─ IrqMonitor       (the interrupt line)        ──ap──┤   (CommandPredictor)
                         ├─ CoverageCollector (ChipCoverage)  ←────────────────┤
                         ├─ CsrAgent:     AxiLiteMonitor (csr__* pins) ──ap──┐ │
                         ├─ HostMemAgent: AxiMonitor     (mem__* pins) ──ap──┤ │
                         └─ BusScoreboard (pins against the probe) ←─────────┴─┘

* **HostAgent**: sequences produce :class:`WorkItem`\\ s, each a device program (driver/ops.py) or a
  driver coroutine; the :class:`DeviceDriver` runs them on the chip's CSR port and host memory
  through a boundary probe, so everything it does is observed.
* **BoundaryMonitor**: publishes the probe's transactions (verif/boundary_monitor.py:
  doorbells, descriptors, completion records, queue configuration, interrupts read, errors, host
  writes) on its analysis port; **IrqMonitor** publishes each rising edge of the ``irq`` pin.
* **Scoreboard**: a :class:`~verif.predictor.CommandPredictor` fed through an
  analysis FIFO; each completion record is predicted with the golden device model and compared
  as it arrives, each completed store's bytes are read back and compared; the first difference
  fails the test naming queue, index, command, expected and actual.
* **CoverageCollector**: the functional coverage model (verif/functional_coverage.py).
* **CsrAgent, HostMemAgent, BusScoreboard** (verif/bus_agents.py, only on the RTL
  testbench): passive pin-level AXI4-Lite / AXI4 monitors with protocol checks; the driver's
  register accesses must appear on the CSR pins, each completed store's host bytes must equal the
  writes seen on the host-memory port.

Sequences: :class:`RandomDagSequence` (constrained random with cocotb-coverage ``crv``: job count,
queues, dependency/compute/extra-edge probabilities, legal by construction — the DAG builder of
verif/dag_workload.py), :class:`ErrorSequence` (directed: each error class on one queue
while the others run), :class:`ModelSequence` (a compiled model through ``Device.run``, fully
overlapped and fully serialized — ``Program.serialized()`` — with identical results required).
"""
import random

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge
from cocotb_coverage import crv
from pyuvm import (ConfigDB, uvm_agent, uvm_analysis_port, uvm_component, uvm_driver, uvm_env,
                   uvm_get_port, uvm_monitor, uvm_sequence, uvm_sequence_item, uvm_sequencer,
                   uvm_subscriber, uvm_test, uvm_tlm_analysis_fifo)

from driver.ops import run_async
from . import chip_scenarios as S

from . import boundary_monitor as BM
from .functional_coverage import ChipCoverage
from .bus_agents import BusScoreboard, CsrAgent, HostMemAgent, pin_agents_wanted
from .predictor import CommandPredictor, PredictionError

__all__ = ["KakiEnv", "KakiTest", "WorkItem", "RandomDagSequence", "ErrorSequence",
           "ModelSequence", "DagKnobs"]


# ---------------------------------------------------------------------------- items
class WorkItem(uvm_sequence_item):
    """One unit of host work: ``program()`` makes a device program (run with run_async on the
    probed backend) or ``coroutine(backend)`` an awaitable; ``result`` is filled in."""

    def __init__(self, name, program=None, coroutine=None):
        super().__init__(name)
        self.program, self.coroutine, self.result = program, coroutine, None

    def __str__(self):
        return self.get_name()


# ---------------------------------------------------------------------------- agents
class DeviceDriver(uvm_driver):
    """Runs each WorkItem on the probed backend (ConfigDB "BACKEND")."""

    def build_phase(self):
        self.backend = ConfigDB().get(self, "", "BACKEND")

    async def run_phase(self):
        while True:
            item = await self.seq_item_port.get_next_item()
            if item.program is not None:
                item.result = await run_async(item.program(), self.backend)
            else:
                item.result = await item.coroutine(self.backend)
            self.seq_item_port.item_done()


class HostAgent(uvm_agent):
    def build_phase(self):
        self.seqr = uvm_sequencer("seqr", self)
        self.driver = DeviceDriver("driver", self)

    def connect_phase(self):
        self.driver.seq_item_port.connect(self.seqr.seq_item_export)


class BoundaryMonitor(uvm_monitor):
    """The probe's subscriber: every boundary transaction goes out on ``ap``."""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)

    def write(self, txn):
        self.ap.write(txn)


class IrqEdge:
    def __init__(self, time_ns):
        self.time_ns = time_ns


class IrqMonitor(uvm_monitor):
    """Publishes every rising edge of the chip's interrupt pin."""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)
        self.edges = 0

    async def run_phase(self):
        dut = cocotb.top
        while True:
            await RisingEdge(dut.irq)
            self.edges += 1
            self.ap.write(IrqEdge(get_sim_time("ns")))


# ---------------------------------------------------------------------------- checking
class Scoreboard(uvm_component):
    """Command-by-command comparison with the golden device model (see the module doc)."""

    def build_phase(self):
        self.fifo = uvm_tlm_analysis_fifo("fifo", self)
        self.get_port = uvm_get_port("get_port", self)
        self.backend = ConfigDB().get(self, "", "BACKEND")
        caps, host_bytes = ConfigDB().get(self, "", "CAPS"), ConfigDB().get(self, "", "HOST_BYTES")
        self.predictor = CommandPredictor(caps, host_bytes, ConfigDB().get(self, "", "BLACKHOLE"))
        self.error = None
        self.irq_edges = 0
        self.busy = False

    def connect_phase(self):
        self.get_port.connect(self.fifo.get_export)

    async def run_phase(self):
        while True:
            txn = await self.get_port.get()
            self.busy = True
            await self._compare(txn)
            self.busy = False

    async def _compare(self, txn):
        if isinstance(txn, IrqEdge):
            self.irq_edges += 1
            return
        if self.error:
            return
        try:
            self.predictor.write(txn)
            for check in self.predictor.take_checks():
                actual = await self.backend.dev.host_read(check.lo, check.hi - check.lo)
                self.predictor.compare_store(check, actual)
        except PredictionError as e:
            self.error = e
            self.logger.error(f"first mismatch: {e}")

    async def drain(self):
        """Wait until every published transaction has been compared."""
        while self.busy or not self.fifo.is_empty():
            await RisingEdge(cocotb.top.clk)

    def check_phase(self):
        if self.error:
            raise self.error
        p = self.predictor
        self.logger.info(f"scoreboard: {p.predicted} commands predicted and matched, "
                         f"{p.stores_checked} stores read back, {self.irq_edges} interrupt edges")


class CoverageCollector(uvm_subscriber):
    def build_phase(self):
        self.model = ChipCoverage(ConfigDB().get(self, "", "CAPS").dim)

    def write(self, txn):
        if not isinstance(txn, IrqEdge):
            self.model.write(txn)

    def report_phase(self):
        self.model.close()


class KakiEnv(uvm_env):
    def build_phase(self):
        self.agent = HostAgent("agent", self)
        self.monitor = BoundaryMonitor("monitor", self)
        self.irq = IrqMonitor("irq", self)
        self.scoreboard = Scoreboard("scoreboard", self)
        self.coverage = CoverageCollector("coverage", self)
        self.bus_scoreboard = None
        if pin_agents_wanted(self):       # pins need the RTL testbench's dut
            self.csr_agent = CsrAgent("csr_agent", self)
            self.mem_agent = HostMemAgent("mem_agent", self)
            self.bus_scoreboard = BusScoreboard("bus_scoreboard", self)

    def connect_phase(self):
        ConfigDB().get(self, "", "OBSERVER").subscribers.append(self.monitor)
        for src in (self.monitor.ap, self.irq.ap):
            src.connect(self.scoreboard.fifo.analysis_export)
        self.monitor.ap.connect(self.coverage.analysis_export)
        if self.bus_scoreboard is not None:
            for src in (self.monitor.ap, self.csr_agent.monitor.ap, self.mem_agent.monitor.ap):
                src.connect(self.bus_scoreboard.analysis_export)


# ---------------------------------------------------------------------------- sequences
class DagKnobs(crv.Randomized):
    """Constrained-random knobs of one random dependency graph of jobs."""

    def __init__(self):
        super().__init__()
        self.jobs, self.queues, self.p_dep, self.p_compute, self.p_extra = 8, 4, 0.5, 0.3, 0.15
        self.add_rand("jobs", list(range(8, 41, 4)))
        self.add_rand("queues", [1, 2, 3, 4])
        self.add_rand("p_dep", [0.0, 0.25, 0.5, 0.75, 0.9])
        self.add_rand("p_compute", [0.0, 0.2, 0.4, 0.6])
        self.add_rand("p_extra", [0.0, 0.15, 0.3])
        # dependencies need somewhere to come from; every queue gets a few jobs
        self.add_constraint(lambda p_dep, queues: queues > 1 or p_dep <= 0.5)
        self.add_constraint(lambda jobs, queues: jobs >= 4 * queues)

    def knobs(self):
        return dict(p_dep=self.p_dep, p_compute=self.p_compute, p_extra=self.p_extra)

    def randomize_seeded(self, seed):
        """randomize() reproducibly: crv draws from Python's ``random`` *and* NumPy's global
        generator (its weighted choice), so both are seeded here, per draw — seeding only
        ``random`` once made the knobs differ from run to run under one SEED."""
        random.seed(seed)
        np.random.seed(seed & 0xFFFF_FFFF)
        self.randomize()


class RandomDagSequence(uvm_sequence):
    """``count`` random DAG workloads, each with freshly randomized knobs."""

    def __init__(self, name, count, seed):
        super().__init__(name)
        self.count, self.seed = count, seed

    async def body(self):
        caps, host_bytes = ConfigDB().get(None, "", "CAPS"), ConfigDB().get(None, "", "HOST_BYTES")
        knobs = DagKnobs()
        for n in range(self.count):
            knobs.randomize_seeded(self.seed * 1000 + n)
            queues = tuple(sorted(random.Random(self.seed * 1000 + n).sample(range(BM.QUEUES),
                                                                              knobs.queues)))
            seed = self.seed + n
            item = WorkItem(f"dag{n} jobs={knobs.jobs} queues={queues} {knobs.knobs()}",
                            program=lambda s=seed, k=knobs.knobs(), j=knobs.jobs, q=queues:
                            S.dag_scenario(caps, s, host_bytes=host_bytes, jobs=j, queues=q,
                                           knobs=k, fill_host=(s == self.seed)))
            await self.start_item(item)
            await self.finish_item(item)


class ErrorSequence(uvm_sequence):
    """Each error class of ``kinds`` on one queue while the others run a DAG."""

    def __init__(self, name, kinds, seed, decerr_addr):
        super().__init__(name)
        self.kinds, self.seed, self.decerr_addr = kinds, seed, decerr_addr

    async def body(self):
        caps, host_bytes = ConfigDB().get(None, "", "CAPS"), ConfigDB().get(None, "", "HOST_BYTES")
        for n, kind in enumerate(self.kinds):
            item = WorkItem(f"error {kind}", program=lambda k=kind, s=self.seed + n: S.error_scenario(
                caps, s, k, host_bytes=host_bytes, decerr_addr=self.decerr_addr))
            await self.start_item(item)
            await self.finish_item(item)


class ModelSequence(uvm_sequence):
    """A compiled model through the driver, overlapped then serialized; the outputs of both runs
    must equal each other and the graph interpreter."""

    def __init__(self, name, model, seed, firmware):
        super().__init__(name)
        self.model, self.seed, self.firmware = model, seed, firmware
        self.outputs = {}

    async def body(self):
        from compiler import models
        from compiler.compile import compile_graph
        from compiler.graph import interpret
        from driver.device import Device

        from verif.model_run import HOST_BASE, HOST_BYTES, read_outputs, upload_buffers

        g, feeds = models.build(self.model, self.seed)
        caps = ConfigDB().get(None, "", "CAPS")
        cm = compile_graph(g, caps)
        ref = interpret(g, feeds)
        for mode, program in (("overlapped", cm.program), ("serialized", cm.program.serialized())):
            async def run(backend, program=program):
                dev = await Device.open(backend, host_base=HOST_BASE, host_bytes=HOST_BYTES,
                                        firmware=self.firmware)
                bufs = await upload_buffers(dev, cm, feeds)
                await dev.run(program, bufs)
                out = await read_outputs(cm, bufs)
                await dev.close()
                return out
            item = WorkItem(f"{self.model} {mode}", coroutine=run)
            await self.start_item(item)
            await self.finish_item(item)
            self.outputs[mode] = item.result
        for k in ref:
            for mode, out in self.outputs.items():
                if not np.array_equal(out[k], ref[k]):
                    raise AssertionError(f"{self.model} {mode}: output {k} differs from the interpreter")


# ---------------------------------------------------------------------------- test base
class KakiTest(uvm_test):
    """Builds the environment around the chip testbench the cocotb test put in ConfigDB
    ("TB", the ChipTB; "OBSERVER", the boundary observer; "BACKEND", the probe)."""

    def build_phase(self):
        self.env = KakiEnv("env", self)

    async def run_sequences(self, *seqs):
        self.raise_objection()
        for seq in seqs:
            await seq.start(self.env.agent.seqr)
        await self.env.scoreboard.drain()
        self.drop_objection()
