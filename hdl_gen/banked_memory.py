"""Banked on-chip memory (scratchpad or accumulator) shared by several requesters."""
from amaranth import Cat, Module, Mux, Signal
from amaranth.asserts import AnyConst
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from .formal import Rules, contract_for, implies, past
from .mem_port import ReadPortSignature, WritePortSignature
from .sram import Sram1R1W


def chip_memory(config, *, banks, bank_rows, width, n_read, n_write):
    """A banked memory as the chip builds it: writes registered, reads too when
    ``config.mem_read_latency`` is 2 or more, the banks' outputs too when it is 3 (the engines
    are built for ``config.mem_read_latency``)."""
    return BankedMemory(banks=banks, bank_rows=bank_rows, width=width, n_read=n_read,
                        n_write=n_write, registered_writes=True,
                        registered_reads=config.mem_read_latency >= 2,
                        registered_output=config.mem_read_latency == 3)


class BankedMemory(wiring.Component):
    """``banks`` SRAM banks of ``bank_rows`` rows × ``width`` bits behind per-bank arbiters.

    Every bank has its own read port and write port, so requesters that touch different banks never
    wait on each other: the DMA fills one bank while the PE array streams from another (double
    buffering). Within a bank, the lowest-numbered requester wins (fixed priority); the loser sees
    ``gnt`` low and retries. The bank is the high bits of the row address.

    A granted read returns its row one cycle later (:attr:`read_latency` 1). Without
    ``registered_writes`` a read sees every write granted before or in its cycle. With it, each
    bank registers the granted write (enable, row, data) and stores it one cycle later, so the
    block RAMs' write pins are driven straight from registers (a wide memory's block RAMs span
    the whole die; their write nets are long): a read then sees every write granted *before* its
    cycle, and a read of a row written in the same cycle returns the old data. With
    ``registered_reads`` too, each bank also registers the granted read (enable, row): the row
    comes two cycles after the grant (:attr:`read_latency` 2) and every block-RAM pin is driven
    by a flip-flop; a read then sees every write granted up to and including its cycle again.
    With ``registered_output`` as well, each bank's output is registered before the requesters'
    data multiplexers (a block RAM's clock-to-output is most of a cycle on an FPGA): the row comes
    three cycles after the grant (:attr:`read_latency` 3), with the same writes seen.
    Grants do not change.

    Ports
    -----
    rd[i] : In(ReadPortSignature(addr_bits, width)), ``i`` < n_read — read requesters, by priority.
    wr[i] : In(WritePortSignature(addr_bits, width)), ``i`` < n_write — write requesters, by priority.
    """

    def __init__(self, *, banks, bank_rows, width, n_read, n_write, registered_writes=False,
                 registered_reads=False, registered_output=False):
        for name, v in (("banks", banks), ("bank_rows", bank_rows)):
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two, not {v!r}")
        if n_read < 1 or n_write < 1:
            raise ValueError(f"need at least one read and one write port, not {n_read}/{n_write}")
        self.banks, self.bank_rows, self.width = banks, bank_rows, width
        if registered_reads and not registered_writes:
            raise ValueError("registered_reads needs registered_writes (a read would otherwise "
                             "see a write granted in the cycle after it)")
        if registered_output and not registered_reads:
            raise ValueError("registered_output needs registered_reads (the chip's configurations "
                             "register the block RAMs' inputs before their outputs)")
        self.registered_writes, self.registered_reads = registered_writes, registered_reads
        self.registered_output = registered_output
        self.read_latency = 1 + registered_reads + registered_output
        self.row_bits = (bank_rows - 1).bit_length()
        self.addr_bits = max(1, (banks * bank_rows - 1).bit_length())
        super().__init__({
            "rd": In(ReadPortSignature(self.addr_bits, width)).array(n_read),
            "wr": In(WritePortSignature(self.addr_bits, width)).array(n_write),
        })

    def _bank(self, addr):
        return addr[self.row_bits:] if self.banks > 1 else 0

    def _arbitrate(self, m, ports, b):
        """Grant bank ``b`` to the first requesting port; return (granted, row address, winner)."""
        reqs = [p.en & (self._bank(p.addr) == b) for p in ports]
        wins = []
        for i, r in enumerate(reqs):
            win = Signal()
            m.d.comb += win.eq(r & ~Cat(*reqs[:i]).any() if i else r)
            wins.append(win)
        addr = Signal(self.row_bits, name=f"bank{b}_addr")
        for win, p in zip(wins, ports):
            with m.If(win):
                m.d.comb += addr.eq(p.addr[:self.row_bits])
        return Cat(*wins).any(), addr, wins

    def elaborate(self, platform):
        m = Module()
        rd_gnt = [[] for _ in self.rd]
        wr_gnt = [[] for _ in self.wr]
        bank_rdata = []
        for b in range(self.banks):
            sram = Sram1R1W(self.bank_rows, self.width)
            m.submodules[f"bank{b}"] = sram
            ren, raddr, rwins = self._arbitrate(m, self.rd, b)
            wen, waddr, wwins = self._arbitrate(m, self.wr, b)
            wdata = Signal(self.width, name=f"bank{b}_wdata")
            for i, win in enumerate(wwins):
                with m.If(win):
                    m.d.comb += wdata.eq(self.wr[i].data)
            if self.registered_writes:
                # row and data need no reset: the SRAM ignores them without the enable
                q = (Signal(name=f"bank{b}_wen_q"),
                     Signal(self.row_bits, name=f"bank{b}_waddr_q", reset_less=True),
                     Signal(self.width, name=f"bank{b}_wdata_q", reset_less=True))
                m.d.sync += [r.eq(v) for r, v in zip(q, (wen, waddr, wdata))]
                wen, waddr, wdata = q
            if self.registered_reads:
                q = (Signal(name=f"bank{b}_ren_q"),
                     Signal(self.row_bits, name=f"bank{b}_raddr_q", reset_less=True))
                m.d.sync += [r.eq(v) for r, v in zip(q, (ren, raddr))]
                ren, raddr = q
            m.d.comb += [sram.ren.eq(ren), sram.raddr.eq(raddr),
                         sram.wen.eq(wen), sram.waddr.eq(waddr), sram.wdata.eq(wdata)]
            for i, win in enumerate(rwins):
                rd_gnt[i].append(win)
            for i, win in enumerate(wwins):
                wr_gnt[i].append(win)
            if self.registered_output:
                rdata = Signal(self.width, name=f"bank{b}_rdata_q", reset_less=True)
                m.d.sync += rdata.eq(sram.rdata)
                bank_rdata.append(rdata)
            else:
                bank_rdata.append(sram.rdata)
        for i, p in enumerate(self.rd):
            m.d.comb += p.gnt.eq(Cat(*rd_gnt[i]).any())
            # Route the data, read_latency cycles after the grant, from the bank granted.
            bank_q = Signal(range(self.banks), name=f"rd{i}_bank_q")
            with m.If(p.en & p.gnt):
                m.d.sync += bank_q.eq(self._bank(p.addr))
            for k in range(2, self.read_latency + 1):
                delayed = Signal(range(self.banks), name=f"rd{i}_bank_q{k}")
                m.d.sync += delayed.eq(bank_q)
                bank_q = delayed
            with m.Switch(bank_q):
                for b in range(self.banks):
                    with m.Case(b):
                        m.d.comb += p.data.eq(bank_rdata[b])
        for i, p in enumerate(self.wr):
            m.d.comb += p.gnt.eq(Cat(*wr_gnt[i]).any())
        if contract_for(platform, self):
            self._formal_contract(m, platform)
        return m

    def _formal_contract(self, m, platform):
        """The banked memory's contract (docs/formal.md).

        Per bank and direction: at most one requester granted (``*.exclusive``), only a
        requester that asks (``*.grant``), and the lowest-numbered requester of the bank always
        (``*.priority``): a requester waits exactly while a higher-priority one uses its bank,
        so it cannot starve unless software keeps a compute engine on the DMA's bank
        (docs/architecture.md). ``rd.data``: a granted read returns, one cycle later, what the
        last granted write stored in that row (a write in the same cycle included, except with
        ``registered_writes`` alone), ``read_latency`` cycles later: the proof follows one
        arbitrary row address.

        With the proof option ``hog`` (cycles): if the requesters other than the
        lowest-priority one (the DMA) never ask for a bank more than ``hog`` cycles in a row
        (the environment rule ``bank.share``), the lowest-priority requester, asking for the
        same row, is granted after at most ``hog`` cycles of waiting (``*.wait``): no
        starvation, within that bound (a requester of middle priority is the lowest of the
        ones above it and alike).
        Fixed priority gives no bound without such a rule: a compute engine that streams from a
        bank every cycle holds the DMA off that bank (docs/architecture.md, double buffering).
        """
        rules = Rules(m, platform, "memory")
        for kind, ports in (("rd", self.rd), ("wr", self.wr)):
            for i, p in enumerate(ports):
                rules.guarantee(f"{kind}.grant", implies(p.gnt, p.en))
                higher = Cat(*[q.en & (self._bank(q.addr) == self._bank(p.addr))
                               for q in ports[:i]]).any() if i else 0
                rules.guarantee(f"{kind}.priority", implies(p.en & ~higher, p.gnt))
                for q in ports[i + 1:]:
                    rules.guarantee(f"{kind}.exclusive", ~(p.gnt & q.gnt & (
                        self._bank(q.addr) == self._bank(p.addr))))
            rules.cover(f"{kind}.contended", Cat(*[p.en & ~p.gnt for p in ports]).any())
        hog = platform.options.get("hog")
        if hog is not None:
            for kind, ports in (("rd", self.rd), ("wr", self.wr)):
                self._formal_wait(m, rules, kind, ports, hog)
        row = AnyConst(self.addr_bits)
        known = Signal(name="formal_row_known")       # the row was written since the start
        value = Signal(self.width, name="formal_row_value")
        writing = Signal(name="formal_row_writing")
        new = Signal(self.width, name="formal_row_new")
        for p in self.wr:
            with m.If(p.en & p.gnt & (p.addr == row)):
                m.d.comb += [writing.eq(1), new.eq(p.data)]
        with m.If(writing):
            m.d.sync += [known.eq(1), value.eq(new)]
        # with registered writes only, a write in the read's cycle is not seen (the old value is)
        seen = 0 if self.registered_writes and not self.registered_reads else writing
        for i, p in enumerate(self.rd):
            reading = p.en & p.gnt & (p.addr == row) & (known | seen)
            expect = Mux(seen, new, value)
            for k in range(self.read_latency):
                reading = past(m, reading, f"formal_rd{i}_row{k}")
                expect = past(m, expect, f"formal_rd{i}_expect{k}")
            rules.guarantee("rd.data", implies(reading, p.data == expect), group="data")
            rules.cover("rd.data", reading & past(m, writing, f"formal_rd{i}_bypass"))

    def _formal_wait(self, m, rules, kind, ports, hog):
        """``bank.share`` (relied on) and ``{kind}.wait`` (guaranteed) for the lowest-priority
        requester: see the contract."""
        *higher, p = ports
        for b in range(self.banks):
            asked = Cat(*[q.en & (self._bank(q.addr) == b) for q in higher]).any()
            run = Signal(range(hog + 1), name=f"formal_{kind}_bank{b}_run")
            m.d.sync += run.eq(Mux(asked & (run != hog), run + 1, 0))
            rules.rely("bank.share", implies(run == hog, ~asked))
        waiting = p.en & ~p.gnt
        again = past(m, waiting, f"formal_{kind}_waited") & (
            p.addr == past(m, p.addr, f"formal_{kind}_addr"))
        waited = Signal(range(hog + 1), name=f"formal_{kind}_wait")
        m.d.sync += waited.eq(Mux(waiting, Mux(again & (waited != hog), waited + 1, 1), 0))
        rules.guarantee(f"{kind}.wait", implies(p.en & again & (waited == hog), p.gnt),
                        group="memory")
        rules.cover(f"{kind}.waited", p.en & p.gnt & again & (waited == hog))
