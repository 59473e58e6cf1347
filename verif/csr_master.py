"""A lean AXI4-Lite master for the chip testbench's CSR port (``csr__*`` of the testbench top,
verif/soc_target.py): the same pin timing as cocotbext-axi's ``AxiLiteMaster`` for one access at
a time per direction, with a fraction of its Python work.

Why: cocotbext-axi's master runs each access through four or five coroutines (command queue,
channel sources, response sink, its valid/ready monitors) and keeps value-change callbacks on
``bvalid``, ``bready``, ``rvalid``, ``rready`` and ``rst`` registered for the whole simulation, which
the simulator's main loop tests several times per time step. A driver run makes hundreds of
register accesses; here each is one coroutine, four or five wake-ups (the issuing edge, the
handshake edge(s), the response's VALID rising at the falling edge, the response edge), and
nothing stays registered while idle.

Timing (what cocotbext-axi does, and what tools/harness/replay.cpp replays): an access called
after rising edge ``c`` raises AWVALID+WVALID (ARVALID) after edge ``c + 1``; each VALID drops
after the edge at which its READY was high; the response is taken at the first edge at which
BVALID (RVALID) is high, with BREADY and RREADY held at 1, and the call returns at that edge.
The testbench top presents the chip's outputs through a falling-edge copy, so at a rising edge
Python reads what the chip drove just before it. Concurrent accesses in one direction are
serialised (cocotbext-axi would pipeline a second one behind the first); a read and a write may
overlap. AxPROT is driven as cocotbext-axi drives it (non-secure, 0b010), WSTRB all ones.
"""
from cocotb.handle import _GPISetAction
from cocotb.triggers import Lock, RisingEdge

__all__ = ["CsrMaster", "PROT_NONSECURE"]

PROT_NONSECURE = 0b010           # cocotbext.axi.AxiProt.NONSECURE, its default
_NO_DELAY = _GPISetAction.NO_DELAY.value


class _Pin:
    """One port: its cocotb handle (for edge triggers) and raw GPI reads and immediate writes
    (cocotb's ``handle.value`` builds a value object per access, several times the VPI cost)."""

    __slots__ = ("handle", "raw", "width")

    def __init__(self, handle):
        self.handle, self.raw, self.width = handle, handle._handle, len(handle)
        assert self.width <= 32, f"{handle._name}: {self.width} bits"

    def high(self):
        return self.raw.get_signal_val_binstr() == "1"

    def get(self):
        return int(self.raw.get_signal_val_binstr(), 2)

    def put(self, value):
        """``handle.value = Immediate(value)``: written at once, the next clock edge sees it."""
        self.raw.set_signal_val_int(_NO_DELAY, value)


class CsrMaster:
    """AXI4-Lite master on the ports ``<prefix>aw*``, ``w*``, ``b*``, ``ar*``, ``r*`` of ``dut``,
    clocked by ``clk``. :meth:`read` returns the 32-bit data, :meth:`write` the BRESP. Its writes
    to the ports take effect at once (the coroutine always writes right after a rising edge, so
    the next edge sees them, as it sees cocotb's default writes applied later in the same time
    step)."""

    def __init__(self, dut, clk, prefix="csr__"):
        def pin(name, optional=False):
            full = prefix + name
            if optional and not hasattr(dut, full):
                return None
            return _Pin(getattr(dut, full))

        self.clk = clk
        self.awaddr, self.awvalid, self.awready = pin("awaddr"), pin("awvalid"), pin("awready")
        self.awprot = pin("awprot", True)
        self.wdata, self.wvalid, self.wready = pin("wdata"), pin("wvalid"), pin("wready")
        self.wstrb = pin("wstrb", True)
        self.bvalid, self.bready, self.bresp = pin("bvalid"), pin("bready"), pin("bresp", True)
        self.araddr, self.arvalid, self.arready = pin("araddr"), pin("arvalid"), pin("arready")
        self.arprot = pin("arprot", True)
        self.rdata, self.rvalid, self.rready = pin("rdata"), pin("rvalid"), pin("rready")
        self.rresp = pin("rresp", True)
        self.strb_all = (1 << (self.wdata.width // 8)) - 1
        for p in (self.awvalid, self.wvalid, self.arvalid):
            p.put(0)
        for p in (self.bready, self.rready):
            p.put(1)
        self._wlock, self._rlock = Lock(), Lock()
        self.last_rresp = 0

    async def write(self, addr, data):
        """Write the word ``data`` at byte address ``addr``; returns BRESP."""
        async with self._wlock:
            await RisingEdge(self.clk)                     # edge c + 1: offer AW and W
            self.awaddr.put(addr)
            if self.awprot is not None:
                self.awprot.put(PROT_NONSECURE)
            self.wdata.put(data)
            if self.wstrb is not None:
                self.wstrb.put(self.strb_all)
            self.awvalid.put(1)
            self.wvalid.put(1)
            aw = w = True
            while aw or w:
                await RisingEdge(self.clk)
                if aw and self.awready.high():
                    self.awvalid.put(0)
                    aw = False
                if w and self.wready.high():
                    self.wvalid.put(0)
                    w = False
            await self._response(self.bvalid)
            return self.bresp.get() if self.bresp is not None else 0

    async def read(self, addr):
        """Read the word at byte address ``addr``; returns RDATA (RRESP in :attr:`last_rresp`)."""
        async with self._rlock:
            await RisingEdge(self.clk)                     # edge c + 1: offer AR
            self.araddr.put(addr)
            if self.arprot is not None:
                self.arprot.put(PROT_NONSECURE)
            self.arvalid.put(1)
            while True:
                await RisingEdge(self.clk)
                if self.arready.high():
                    break
            self.arvalid.put(0)
            await self._response(self.rvalid)
            if self.rresp is not None:
                self.last_rresp = self.rresp.get()
            return self.rdata.get()

    async def _response(self, valid):
        """Return at the first rising edge at which ``valid`` (a falling-edge copy of the chip's
        VALID, READY being 1) is high: one wake-up when it rises, one at that edge."""
        while True:
            if not valid.high():
                await RisingEdge(valid.handle)             # at a falling clock edge
            await RisingEdge(self.clk)
            if valid.high():
                return
