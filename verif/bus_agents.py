"""Pin-level passive agents for the chip's two buses, and a scoreboard that cross-checks them
against what the host did (docs/verification.md).

::

    CsrAgent     ─ AxiLiteMonitor (csr__* pins) ──ap: CsrTxn ───────┐
    HostMemAgent ─ AxiMonitor     (mem__* pins) ──ap: AxiBurstTxn ──┼→ BusScoreboard
    BoundaryMonitor (the probe) ──ap: RegisterTxn, DescriptorTxn,  ─┘   (CsrMatcher, StoreBytes,
                                      RecordTxn, QueueResetTxn,          HostShadow)
                                      HostWriteTxn

Layers, so the checks run without a simulator (tests/test_bus_agents.py):

* the protocol checkers are verif/axi_checker.py's :class:`AxiLiteChecker` and
  :class:`Axi4Checker` (pure Python; each violation raises :class:`ProtocolError` naming the
  bus, the channel and the cycle), fed by its :class:`PackedSampler` from the packed copies of
  the pins on the testbench top (``mon_<bus>_hs``, ``mon_<bus>_<channel>``, verif/soc_target.py);
* :class:`AxiLiteMonitor`, :class:`AxiMonitor` (uvm_monitor), in the passive :class:`CsrAgent`
  and :class:`HostMemAgent`; :class:`BusScoreboard` (uvm_subscriber) with its pure parts
  :class:`CsrMatcher`, :class:`StoreBytes` and :class:`HostShadow`.

``cycle`` in every transaction and message is the index of the rising clock edge at which the
handshake happened (edge k at ``FIRST_EDGE_NS + k * CLOCK_NS``, verif/soc_target.py).
"""
from collections import defaultdict, deque
from dataclasses import dataclass

from cocotb.triggers import Event
from pyuvm import (ConfigDB, UVMConfigItemNotFound, uvm_agent, uvm_analysis_port, uvm_monitor,
                   uvm_subscriber)

from spec.chip import DEFAULTS
from spec.commands import decode
from spec.descriptors import COMMANDS, Engine, ErrorCode

from . import boundary_monitor as BM
from .axi_checker import (Axi4Checker, AxiBurstTxn, AxiLiteChecker, CsrTxn, PackedSampler,
                          ProtocolError)
from .soc_target import (CLOCK_NS, FIRST_EDGE_NS, HANDSHAKES, MONITOR_FIELDS, mem_signature,
                         signature_widths)
from .predictor import command_name, store_rows

__all__ = ["BusMismatch", "CsrMatcher", "StoreBytes", "HostShadow", "AxiLiteMonitor", "AxiMonitor",
           "CsrAgent", "HostMemAgent", "BusScoreboard", "pin_agents_wanted"]


class BusMismatch(AssertionError):
    """What the pins carried differs from what the host did or what landed in host memory."""


# ---------------------------------------------------------------------------- cross-checks
class CsrMatcher:
    """The driver's register accesses (RegisterTxn, from the probe) against the accesses on the
    CSR pins (CsrTxn): per direction, the same addresses and data in the same order, full-word
    strobes on writes. The probe reports a write before it goes out and a read after it returned,
    so each side waits in a queue until the other catches up."""

    def __init__(self):
        self.driver = {"read": deque(), "write": deque()}
        self.pins = {"read": deque(), "write": deque()}
        self.matched = {"read": 0, "write": 0}

    def from_driver(self, txn):
        self.driver[txn.kind].append(txn)
        self._match(txn.kind)

    def from_pins(self, txn):
        self.pins[txn.kind].append(txn)
        self._match(txn.kind)

    def _match(self, kind):
        drv, pins = self.driver[kind], self.pins[kind]
        while drv and pins:
            d, p = drv.popleft(), pins.popleft()
            if (d.reg.addr, d.value) != (p.addr, p.data) or kind == "write" and p.strb != 0xF:
                strb = f" strb {p.strb:#x}" if kind == "write" else ""
                raise BusMismatch(f"CSR {kind} #{self.matched[kind]}: the driver's {d.reg.name} "
                                  f"({d.reg.addr:#x}) = {d.value:#x}, the pins' {p.reg} ({p.addr:#x}) "
                                  f"= {p.data:#x}{strb} at cycle {p.cycle}")
            self.matched[kind] += 1

    def finish(self):
        """Raise if either side has an access the other never showed."""
        for kind in ("write", "read"):
            for side, other, q in (("driver", "pins", self.driver[kind]), ("pins", "driver", self.pins[kind])):
                if q:
                    raise BusMismatch(f"CSR {kind} #{self.matched[kind]}: {len(q)} access(es) seen by "
                                      f"the {side} and never by the {other}; first {q[0]}")


@dataclass(frozen=True)
class StoreRegion:
    """A completed DMA_STORE: its rows ((address, bytes) pairs) spanning host bytes [lo, hi)."""
    queue: int
    index: int
    command: str
    rows: tuple
    lo: int
    hi: int


class StoreBytes:
    """A map of every host byte the mem port wrote (OKAY bursts only: an error response leaves
    memory unchanged), and the stores to compare: each DMA_STORE whose completion record says OK
    becomes a :class:`StoreRegion` when its record arrives; :meth:`compare` then requires host
    memory there to equal the last byte the pins wrote to each address."""

    def __init__(self, data_bytes):
        self.data_bytes = data_bytes
        self.bytes = {}
        self.descs = defaultdict(dict)       # queue -> index -> descriptor words
        self.compared = 0

    def burst(self, txn):
        if txn.kind == "write" and txn.resp == 0:
            self.bytes.update(txn.written(self.data_bytes))

    def descriptor(self, txn):
        self.descs[txn.queue][txn.index] = txn.words

    def reset(self, txn):
        self.descs.pop(txn.queue, None)

    def completed(self, txn):
        """The StoreRegion of a completion record, or None if it is not a successful store."""
        rec = txn.record
        words = self.descs[txn.queue].pop(rec["index"], None)
        cmd = COMMANDS.get(rec["opcode"])
        if words is None or cmd is None or cmd.engine != Engine.DMA_STORE or rec["status"] != ErrorCode.OK:
            return None
        d = decode(list(words))
        if not d["row_bytes"]:
            return None
        rows = tuple(store_rows(d))
        return StoreRegion(txn.queue, rec["index"], command_name(d), rows,
                           min(a for a, _ in rows), max(a + n for a, n in rows))

    def compare(self, region, host):
        """``host``: host memory [region.lo, region.hi) read back after the record arrived."""
        for addr, n in region.rows:
            for a in range(addr, addr + n):
                pin, got = self.bytes.get(a), host[a - region.lo]
                if pin != got:
                    want = "never written on the mem port" if pin is None else f"{pin:#04x}"
                    raise BusMismatch(f"queue {region.queue} index {region.index} ({region.command}): "
                                      f"host byte {a:#x} expected {want} (AXI writes on the mem "
                                      f"port), got {got:#04x} (host memory)")
        self.compared += 1


class HostShadow:
    """What host memory holds, as far as the traffic shows it: every host write (the probe's
    HostWriteTxn) and every OKAY write burst of the mem port, in the order they happen. Each
    OKAY read burst must return the shadow's bytes wherever the shadow knows them (bytes nobody
    wrote since reset — e.g. loaded through the backdoor before the probe — are not checked).
    Legal workloads never let the chip read what is being written, so the order of
    transactions is the order of memory."""

    def __init__(self, data_bytes):
        self.data_bytes = data_bytes
        self.bytes = {}
        self.checked = 0                     # bytes of read data compared

    def host_write(self, txn):
        self.bytes.update(zip(range(txn.addr, txn.addr + len(txn.data)), txn.data))

    def burst(self, txn):
        if txn.resp != 0:
            return                           # an error response carries no memory contents
        if txn.kind == "write":
            self.bytes.update(txn.written(self.data_bytes))
            return
        for a, got in txn.read(self.data_bytes):
            want = self.bytes.get(a)
            if want is None:
                continue
            if want != got:
                raise BusMismatch(f"mem port read burst id {txn.id} addr {txn.addr:#x} len {txn.len} "
                                  f"(RLAST at cycle {txn.cycle}): byte {a:#x} expected {want:#04x} "
                                  f"(last written by the host or the chip), got {got:#04x}")
            self.checked += 1


# ---------------------------------------------------------------------------- pins
class _PinMonitor(uvm_monitor):
    """Passive monitor of one bus of the chip testbench's top (ConfigDB "TB": the ChipTB): a
    :class:`~verif.axi_checker.PackedSampler` feeds the core, whose transactions go out on
    ``ap``. The first protocol error stops the monitor and fails the test in check_phase."""
    BUS = ""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)
        self.dut = ConfigDB().get(self, "", "TB").dut
        self.core = self.make_core(self.ap.write)
        self.sampler = PackedSampler(self.dut, self.BUS, self.core, clock_ns=CLOCK_NS,
                                     first_edge_ns=FIRST_EDGE_NS, handshakes=HANDSHAKES,
                                     widths=self.widths())
        self.error = None

    def make_core(self, publish):
        raise NotImplementedError

    def widths(self):
        """{signature member: width} of the bus (None: read from its pins, ports of the top)."""
        return None

    async def run_phase(self):
        try:
            await self.sampler.run()
        except ProtocolError as e:
            self.error = e
            self.logger.error(str(e))

    def check_phase(self):
        if self.error:
            raise self.error

    def report_phase(self):
        s = self.sampler
        self.logger.info(f"{self.core.count} transactions, {s.cycles} cycles sampled after "
                         f"{s.wakeups} wake-ups")


class AxiLiteMonitor(_PinMonitor):
    """The CSR port ``csr__*`` (AXI4-Lite): publishes a :class:`CsrTxn` per completed access."""
    BUS = "csr"

    def make_core(self, publish):
        return AxiLiteChecker(publish, fields=MONITOR_FIELDS["csr"])

    def check_phase(self):
        super().check_phase()
        self.core.finish()          # the driver awaits every access: none may be left open


class AxiMonitor(_PinMonitor):
    """The host-memory port ``mem__*`` (AXI4, chip is manager): publishes an :class:`AxiBurstTxn`
    per completed burst. Besides the AXI rules, the chip's own bursts are full width, aligned and
    at most ``max_burst_beats`` long (what the host memory model's flags also check: they must
    stay clear, a second line of defence). Bursts still open when the test ends (prefetches) are
    only reported."""
    BUS = "mem"

    def make_core(self, publish):
        return Axi4Checker(publish, self.widths()["wdata"] // 8, fields=MONITOR_FIELDS["mem"],
                           full_width=True, aligned=True, max_beats=DEFAULTS["max_burst_beats"])

    def widths(self):
        return signature_widths(mem_signature(self.dut))     # mem__* wires are not public

    def check_phase(self):
        super().check_phase()
        flags = int(self.dut.host_st_prot_err.value)
        if flags:
            from .host_mem import PROT_ERR_BITS
            text = ", ".join(t for b, t in PROT_ERR_BITS.items() if flags >> b & 1)
            raise ProtocolError(f"mem: the host memory model flagged {text} ({flags:#04x}); "
                                f"the Python checker saw no violation")

    def report_phase(self):
        super().report_phase()
        self.logger.info(f"{self.core.outstanding()} bursts open at the end")


class CsrAgent(uvm_agent):
    """Passive agent of the CSR port: ``monitor`` (AxiLiteMonitor)."""

    def build_phase(self):
        self.monitor = AxiLiteMonitor("monitor", self)


class HostMemAgent(uvm_agent):
    """Passive agent of the host-memory port: ``monitor`` (AxiMonitor)."""

    def build_phase(self):
        self.monitor = AxiMonitor("monitor", self)


def pin_agents_wanted(component):
    """True when ConfigDB holds an RTL testbench ("TB" with a ``dut``) and "PIN_AGENTS" is not
    False: the pin agents need the simulator's handles."""
    db = ConfigDB()
    try:
        tb = db.get(component, "", "TB")
    except UVMConfigItemNotFound:
        return False
    try:
        wanted = db.get(component, "", "PIN_AGENTS")
    except UVMConfigItemNotFound:
        wanted = True
    return bool(wanted) and getattr(tb, "dut", None) is not None


class BusScoreboard(uvm_subscriber):
    """Cross-checks the pins against the host (connect the BoundaryMonitor's and both pin
    monitors' ``ap`` to ``analysis_export``): CSR accesses through :class:`CsrMatcher`, completed
    stores through :class:`StoreBytes` — host memory is read back (ConfigDB "TB" ``host_read``)
    in run_phase, under an objection so the test cannot end with a store unchecked —, read data
    of the mem port through :class:`HostShadow`. The first mismatch fails the test in
    check_phase."""

    def build_phase(self):
        self.tb = ConfigDB().get(self, "", "TB")
        self.csr = CsrMatcher()
        self.stores = StoreBytes(signature_widths(mem_signature(self.tb.dut))["wdata"] // 8)
        self.shadow = HostShadow(self.stores.data_bytes)
        self.pending = deque()
        self.work = Event()
        self.objecting = False
        self.error = None
        self._route = {CsrTxn: self.csr.from_pins, BM.RegisterTxn: self.csr.from_driver,
                       AxiBurstTxn: self._burst, BM.HostWriteTxn: self.shadow.host_write,
                       BM.DescriptorTxn: self.stores.descriptor,
                       BM.QueueResetTxn: self.stores.reset, BM.RecordTxn: self._record}

    def write(self, txn):
        handler = self._route.get(type(txn))
        if handler is None or self.error:
            return
        try:
            handler(txn)
        except BusMismatch as e:
            self._fail(e)

    def _burst(self, txn):
        self.stores.burst(txn)
        self.shadow.burst(txn)

    def _record(self, txn):
        region = self.stores.completed(txn)
        if region is None:
            return
        self.pending.append(region)
        if not self.objecting:
            self.objecting = True
            self.raise_objection()
        self.work.set()

    def _fail(self, e):
        self.error = e
        self.logger.error(f"first mismatch: {e}")

    async def run_phase(self):
        while True:
            await self.work.wait()
            self.work.clear()
            while self.pending:
                region = self.pending.popleft()
                host = await self.tb.host_read(region.lo, region.hi - region.lo)
                if not self.error:
                    try:
                        self.stores.compare(region, host)
                    except BusMismatch as e:
                        self._fail(e)
            self.objecting = False
            self.drop_objection()

    def check_phase(self):
        if self.error:
            raise self.error
        self.csr.finish()
        m = self.csr.matched
        self.logger.info(f"bus scoreboard: {m['write']} CSR writes and {m['read']} reads matched "
                         f"on the pins, {self.stores.compared} stores equal to the mem-port writes, "
                         f"{self.shadow.checked} bytes of mem-port read data equal to host memory")
