"""cocotb side of test_gemm_engine: GEMM commands checked bit-exactly against NumPy.

The reference is written from the GemmCmd docstring alone: the A matrix is the ``m`` × ``K`` matrix
whose k-tile ``kt`` row ``i`` is scratchpad row ``a_addr + kt*a_kt_stride + i``, B the ``K`` × ``N``
matrix whose tile ``(kt, nt)`` row ``kk`` is row ``b_addr + nt*b_nt_stride + kt*dim + kk``, and
``C = wrap32(A.astype(int64) @ B)`` (plus the old C when ``accumulate``), C tile ``nt`` row ``i`` at
accumulator row ``c_addr + nt*c_nt_stride + i``.

Data moves through the harness backdoors (one row per cycle); each command is one ctl handshake and
one wait on ``ctl__done``. Hardware counters in the harness give busy/active/stall cycles and the
engine's memory accesses, which are checked against what the command must do.
"""
import os
import random

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

from amaranth.lib import data
from compiler.cost import gemm_banks_shared, gemm_cycles
from hdl_gen.descriptor import ErrorCode, GemmCmd
from spec.capabilities import Capabilities
from cocotb_tests.test_gemm_engine import harness_config

DIM = int(os.environ["KAKI_DIM"])
CFG = harness_config(DIM)
CAPS = Capabilities.from_config(CFG)
SPAD_ROWS, ACC_ROWS = CFG.spad_rows, CFG.acc_rows
SB, AB = CFG.spad_bank_rows, CFG.acc_bank_rows
CLK_NS = 10
GEMM_LAYOUT = data.Layout.cast(GemmCmd)
FIELDS = ("a_addr", "b_addr", "c_addr", "m", "k_tiles", "n_tiles", "a_kt_stride", "b_nt_stride",
          "c_nt_stride", "accumulate", "b_transpose", "batches_m1", "a_batch_stride",
          "b_batch_stride", "c_batch_stride", "reserved")
PERF = ("busy", "active", "stall", "spad_rd", "acc_rd", "acc_wr")


def wrap32(x):
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32) - 2**31


def pack8(row):
    return int.from_bytes(np.asarray(row, dtype=np.int64).astype(np.int8).tobytes(), "little")


def pack32(row):
    return int.from_bytes(wrap32(row).astype("<i4").tobytes(), "little")


def unpack8(v):
    return np.frombuffer(v.to_bytes(DIM, "little"), dtype=np.int8).astype(np.int64)


def unpack32(v):
    return np.frombuffer(v.to_bytes(4 * DIM, "little"), dtype="<i4").astype(np.int64)


def cmd(**kw):
    """A complete GemmCmd field dict (zeros for what is not given)."""
    c = {f: 0 for f in FIELDS}
    c.update(kw)
    return c


def batches(c):
    return c["batches_m1"] + 1


def a_row(c, kt, i, h=0):
    return c["a_addr"] + h * c["a_batch_stride"] + kt * c["a_kt_stride"] + i


def b_cell(c, kt, nt, kk, n, h=0):
    """(scratchpad row, lane) of ``B[kt*dim + kk, nt*dim + n]`` of batch item ``h``: row ``kk`` of
    tile (kt, nt) lane ``n``, or, with ``b_transpose``, the tile's column ``n`` lane ``kk``."""
    base = c["b_addr"] + h * c["b_batch_stride"]
    if c["b_transpose"]:
        return base + kt * c["b_nt_stride"] + nt * DIM + n, kk
    return base + nt * c["b_nt_stride"] + kt * DIM + kk, n


def c_row(c, nt, i, h=0):
    return c["c_addr"] + h * c["c_batch_stride"] + nt * c["c_nt_stride"] + i


def _b_cells(c):
    for h in range(batches(c)):
        for kt in range(c["k_tiles"]):
            for nt in range(c["n_tiles"]):
                for kk in range(DIM):
                    for n in range(DIM):
                        yield h, kt * DIM + kk, nt * DIM + n, b_cell(c, kt, nt, kk, n, h)


def _batched(x):
    return x[None] if x.ndim == 2 else x


def spad_image(c, A, B):
    """Scratchpad rows holding A (batches × m × K) and B (batches × K × N; 2-D for one batch
    item) in the layout of command ``c``."""
    A, B = _batched(np.asarray(A)), _batched(np.asarray(B))
    img = {}
    for h in range(batches(c)):
        for kt in range(c["k_tiles"]):
            for i in range(c["m"]):
                img[a_row(c, kt, i, h)] = A[h, i, kt * DIM:(kt + 1) * DIM]
    for h, k, n, (row, lane) in _b_cells(c):
        img.setdefault(row, np.zeros(DIM, dtype=np.int64))[lane] = B[h, k, n]
    return img


def operands(c, img):
    """A and B (batches × ...) as command ``c`` sees them in scratchpad image ``img`` (handles
    overlapping rows)."""
    m, kts, nts, hs = c["m"], c["k_tiles"], c["n_tiles"], batches(c)
    A = np.zeros((hs, m, kts * DIM), dtype=np.int64)
    B = np.zeros((hs, kts * DIM, nts * DIM), dtype=np.int64)
    for h in range(hs):
        for kt in range(kts):
            for i in range(m):
                A[h, i, kt * DIM:(kt + 1) * DIM] = img[a_row(c, kt, i, h)]
    for h, k, n, (row, lane) in _b_cells(c):
        B[h, k, n] = img[row][lane]
    return A, B


def c_addrs(c):
    return [c_row(c, nt, i, h) for h in range(batches(c)) for nt in range(c["n_tiles"])
            for i in range(c["m"])]


def c_matrix_to_rows(c, C):
    """{acc row: int32 row} for the (batches ×) m × N matrix C under command ``c``'s C layout."""
    C = _batched(np.asarray(C))
    return {c_row(c, nt, i, h): C[h, i, nt * DIM:(nt + 1) * DIM] for h in range(batches(c))
            for nt in range(c["n_tiles"]) for i in range(c["m"])}


def c_rows_to_matrix(c, rows):
    """batches × m × N."""
    return np.stack([np.concatenate([np.stack([rows[c_row(c, nt, i, h)] for i in range(c["m"])])
                                     for nt in range(c["n_tiles"])], axis=1)
                     for h in range(batches(c))])


class Tb:
    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        self.seed = int(os.environ["KAKI_SEED"])
        self.rng = random.Random(self.seed)
        self.nprng = np.random.default_rng(self.seed)
        self.log.info(f"KAKI_SEED={self.seed} dim={DIM} spad_rows={SPAD_ROWS} acc_rows={ACC_ROWS}")
        self.acc = {}        # model of accumulator rows the test knows
        self.total_busy = 0
        self.total_active = 0

    async def start(self):
        dut = self.dut
        Clock(dut.clk, CLK_NS, unit="ns").start()
        dut.rst.value = 1
        for name in ("ctl__cmd__valid", "ctl__cmd__payload", "deny_mode", "perf_clear",
                     "spad_bd_rd__en", "spad_bd_rd__addr", "spad_bd_wr__en", "spad_bd_wr__addr",
                     "spad_bd_wr__data", "acc_bd_rd__en", "acc_bd_rd__addr", "acc_bd_wr__en",
                     "acc_bd_wr__addr", "acc_bd_wr__data"):
            getattr(dut, name).value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    # ---- backdoor (engine idle: the backdoor ports are always granted) ------------------------
    async def spad_write(self, rows):
        dut = self.dut
        if not rows:
            return
        dut.spad_bd_wr__en.value = 1
        for a, r in rows.items():
            dut.spad_bd_wr__addr.value = a
            dut.spad_bd_wr__data.value = pack8(r)
            await RisingEdge(dut.clk)
        dut.spad_bd_wr__en.value = 0

    async def acc_write(self, rows):
        dut = self.dut
        if not rows:
            return
        dut.acc_bd_wr__en.value = 1
        for a, r in rows.items():
            dut.acc_bd_wr__addr.value = a
            dut.acc_bd_wr__data.value = pack32(r)
            await RisingEdge(dut.clk)
            self.acc[a] = wrap32(r)
        dut.acc_bd_wr__en.value = 0

    async def _read(self, port, addrs, unpack):
        """One row per cycle; the row asked for in cycle t is on the port in cycle
        t + CFG.mem_read_latency."""
        dut = self.dut
        en, addr, dat = (getattr(dut, f"{port}__{x}") for x in ("en", "addr", "data"))
        out = {}
        lat = CFG.mem_read_latency
        for t in range(len(addrs) + lat if addrs else 0):
            en.value = int(t < len(addrs))
            if t < len(addrs):
                addr.value = addrs[t]
            await ReadOnly()
            if t >= lat:
                out[addrs[t - lat]] = unpack(dat.value.to_unsigned())
            await RisingEdge(dut.clk)
        return out

    async def acc_read(self, addrs):
        return await self._read("acc_bd_rd", list(addrs), unpack32)

    async def spad_read(self, addrs):
        return await self._read("spad_bd_rd", list(addrs), unpack8)

    async def perf(self):
        return {p: getattr(self.dut, f"perf_{p}").value.to_unsigned() for p in PERF}

    async def check_monitors(self):
        await ReadOnly()
        assert int(self.dut.hazard_seen.value) == 0, "PE array weight-bank hazard (w_conflict) seen"
        assert int(self.dut.idle_access_seen.value) == 0, "engine accessed a memory while not busy"
        await RisingEdge(self.dut.clk)

    # ---- commands --------------------------------------------------------------------------
    async def submit(self, c, *, expect=ErrorCode.OK, what="", deny=0, background=None):
        """Run one command; return the counter deltas and the cycles from accept to done."""
        dut = self.dut
        c = cmd(**c)
        dut.deny_mode.value = deny
        await ReadOnly()
        before = await self.perf()
        assert int(dut.ctl__cmd__ready.value) == 1 and int(dut.ctl__busy.value) == 0, "engine not idle before submit"
        await RisingEdge(dut.clk)
        dut.ctl__cmd__payload.value = GEMM_LAYOUT.const(c).as_value().value
        dut.ctl__cmd__valid.value = 1
        await RisingEdge(dut.clk)                 # accepted at this edge (ready was 1)
        t0 = get_sim_time("ns")
        dut.ctl__cmd__valid.value = 0
        task = cocotb.start_soon(background()) if background else None
        await ReadOnly()
        assert int(dut.ctl__busy.value) == 1 and int(dut.ctl__cmd__ready.value) == 0, "busy/ready after accept"
        if c["m"] and c["k_tiles"] and c["n_tiles"]:
            budget = 200 + 4 * batches(c) * c["k_tiles"] * c["n_tiles"] * (c["m"] + DIM) \
                * (4 if deny else 1)
        else:
            budget = 200
        try:
            await with_timeout(RisingEdge(dut.ctl__done), budget * CLK_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(f"timed out after {budget} cycles waiting for ctl__done of {what} "
                                 f"command {c}") from None
        await ReadOnly()
        cycles = round((get_sim_time("ns") - t0) / CLK_NS)
        err = ErrorCode(dut.ctl__error.value.to_unsigned())
        assert int(dut.ctl__busy.value) == 0 and int(dut.ctl__cmd__ready.value) == 1, "busy/ready in done cycle"
        after = await self.perf()
        delta = {p: after[p] - before[p] for p in PERF}
        hazard, idle_access = int(dut.hazard_seen.value), int(dut.idle_access_seen.value)
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.ctl__done.value) == 0, "done longer than one cycle"
        await RisingEdge(dut.clk)
        if task is not None:
            await task
        assert not hazard, f"{what}: PE array weight-bank hazard (w_conflict) during {c}"
        assert not idle_access, f"{what}: engine accessed a memory while not busy ({c})"
        assert err == expect, f"{what}: error {err!r}, expected {expect!r} for {c}"
        assert delta["active"] + delta["stall"] == delta["busy"], delta
        if expect == ErrorCode.OK:
            m, kts, nts, hs = c["m"], c["k_tiles"], c["n_tiles"], batches(c)
            assert delta["active"] == hs * m * kts * nts, (what, delta)
            assert delta["spad_rd"] == hs * kts * nts * (m + DIM), (what, delta)
            assert delta["acc_wr"] == hs * m * kts * nts, (what, delta)
            assert delta["acc_rd"] == hs * m * (kts - (0 if c["accumulate"] else 1)) * nts, \
                (what, delta)
            if not deny and background is None:     # no stalls: the cost model's cycles exactly
                model = gemm_cycles(m, kts, nts, CAPS, batches=hs, b_transpose=c["b_transpose"],
                                    shared_bank=gemm_banks_shared(c, CAPS))
                assert delta["busy"] == model, (f"{what}: {delta['busy']} busy cycles, the cost "
                                                f"model (compiler/cost.py) says {model} for {c}")
            self.total_busy += delta["busy"]
            self.total_active += delta["active"]
        else:
            assert (delta["spad_rd"], delta["acc_rd"], delta["acc_wr"], delta["active"]) == (0, 0, 0, 0), \
                f"{what}: failing command touched memory: {delta}"
        self.log.debug(f"{what}: {c} -> {err.name} in {cycles} cycles {delta}")
        return delta, cycles

    async def gemm(self, c, A=None, B=None, *, what="", deny=0, c0=None, background=None,
                   low=-128, high=128):
        """Load operands for ``c``, run it, check every C row (and guard rows around C) bit-exactly."""
        c = cmd(**c)
        m, K, N, hs = c["m"], c["k_tiles"] * DIM, c["n_tiles"] * DIM, batches(c)
        if A is None:
            A = self.nprng.integers(low, high, size=(hs, m, K))
        if B is None:
            B = self.nprng.integers(low, high, size=(hs, K, N))
        img = spad_image(c, A, B)
        await self.spad_write(img)
        A, B = operands(c, img)
        rows = c_addrs(c)
        assert len(set(rows)) == len(rows), "test bug: C tiles overlap"
        guards = sorted({r for r0 in (c_row(c, nt, 0, h) for h in range(hs)
                                      for nt in range(c["n_tiles"]))
                         for r in (r0 - 1, r0 + m) if 0 <= r < ACC_ROWS} - set(rows))
        if c0 is None:
            c0 = self.nprng.integers(-2**31, 2**31, size=(hs, m, N))
        c0 = _batched(np.asarray(c0))
        await self.acc_write(c_matrix_to_rows(c, c0))
        await self.acc_write({r: self.nprng.integers(-2**31, 2**31, size=DIM) for r in guards
                              if r not in self.acc})
        guard_vals = {r: self.acc[r] for r in guards}
        delta, cycles = await self.submit(c, what=what, deny=deny, background=background)
        expect = wrap32(A @ B + (c0 if c["accumulate"] else 0))
        got_rows = await self.acc_read(rows)
        got = c_rows_to_matrix(c, got_rows)
        if not np.array_equal(got, expect):
            bad = np.argwhere(got != expect)
            h, i, n = bad[0]
            raise AssertionError(
                f"{what}: C mismatch at {len(bad)} elements, first batch {h} C[{i},{n}] = "
                f"{got[h, i, n]} expected {expect[h, i, n]} (acc row {c_row(c, n // DIM, i, h)}); "
                f"command {c}")
        for r, v in (await self.acc_read(guards)).items():
            assert np.array_equal(v, guard_vals[r]), f"{what}: guard acc row {r} modified"
        self.acc.update(c_matrix_to_rows(c, expect))
        return delta, cycles, expect if hs > 1 else expect[0]

    def place(self, lo, hi, size):
        """A random start row for ``size`` rows inside [lo, hi)."""
        assert hi - lo >= size, (lo, hi, size)
        return self.rng.randrange(lo, hi - size + 1)


def random_cmd(tb, m=None, min_tiles=1, transpose=False, batches=1, same_bank=False):
    """A random, valid command: A in scratchpad bank 0, B in bank 1 (``same_bank``: bank 0 too,
    the engine's two read ports then take turns), C in accumulator bank 0. ``batches`` items
    share their A or B (batch stride 0) or lie side by side; their C never overlap."""
    rng = tb.rng
    if m is None:
        m = rng.choice([1, 2, DIM - 1, DIM, DIM + 1, rng.randint(1, 3 * DIM)])
    kts, nts = rng.randint(min_tiles, 4), rng.randint(min_tiles, 3)
    a_stride = rng.choice([m, m + rng.randint(1, 5), 0]) if kts > 1 else rng.randint(0, 2**20 - 1)
    a_span = (kts - 1) * a_stride + m
    steps, lin = (kts, nts) if transpose else (nts, kts)       # B tiles along its stride / rows
    b_stride = rng.choice([lin * DIM, lin * DIM + rng.randint(1, 7), rng.randint(0, lin * DIM)]) \
        if steps > 1 else rng.randint(0, 2**20 - 1)
    b_span = (steps - 1) * b_stride + lin * DIM
    c_stride = rng.choice([m, m + rng.randint(1, 9)]) if nts > 1 else rng.randint(0, 2**20 - 1)
    c_span = (nts - 1) * c_stride + m
    a_bs, b_bs = (rng.choice([0, span + rng.randint(0, 3)]) for span in (a_span, b_span))
    c_bs = c_span + rng.randint(0, 5)
    total = lambda span, stride: (batches - 1) * stride + span
    return cmd(a_addr=tb.place(0, SB, total(a_span, a_bs)),
               b_addr=tb.place(0, SB, total(b_span, b_bs)) if same_bank
               else tb.place(SB, 2 * SB, total(b_span, b_bs)),
               c_addr=tb.place(0, AB, total(c_span, c_bs)), m=m, k_tiles=kts, n_tiles=nts,
               a_kt_stride=a_stride, b_nt_stride=b_stride, c_nt_stride=c_stride,
               accumulate=rng.randint(0, 1), b_transpose=int(transpose), batches_m1=batches - 1,
               a_batch_stride=a_bs if batches > 1 else rng.randint(0, 2**16 - 1),
               b_batch_stride=b_bs if batches > 1 else rng.randint(0, 2**16 - 1),
               c_batch_stride=c_bs if batches > 1 else rng.randint(0, 2**16 - 1))


@cocotb.test()
async def random_commands(dut):
    """Random shapes (m=1, m<dim, several k/n tiles), strides, accumulate, grant denials, idle gaps."""
    tb = Tb(dut)
    await tb.start()
    n = 24
    for k in range(n):
        c = random_cmd(tb, m=1 if k == 0 else None, transpose=k % 5 == 3, same_bank=k % 4 == 2)
        deny = tb.rng.choice([0, 0, 1, 2, 3])
        await ClockCycles(dut.clk, tb.rng.choice([0, 0, 1, 3, 17]))
        await tb.gemm(c, what=f"random #{k} deny={deny}", deny=deny)
    await tb.check_monitors()
    tb.log.info(f"{n} random commands OK; active/busy {tb.total_active}/{tb.total_busy}")


@cocotb.test()
async def transposed_and_batched(dut):
    """B stored transposed (B's columns as scratchpad rows) and several batch items in one
    command, random shapes, strides and grant denials; then attention's two products per head
    in one command each: S = Q·Kᵀ with K as stored (transposed B), O = P·V (V as B)."""
    tb = Tb(dut)
    await tb.start()
    for k in range(16):
        tr, hs = bool(k % 2), tb.rng.choice([1, 2, 3] if DIM > 8 else [1, 2, 3, 5])  # fits a bank
        c = random_cmd(tb, transpose=tr, batches=hs, m=1 if k == 0 else None)
        deny = tb.rng.choice([0, 0, 1, 3])
        await tb.gemm(c, what=f"transpose={int(tr)} batches={hs} #{k} deny={deny}", deny=deny)
    heads, seq, dh = 3, 2 * DIM, DIM           # per head: Q, K, V are seq x dh
    Q, K, V = (tb.nprng.integers(-128, 128, size=(heads, seq, dh)) for _ in range(3))
    qk = cmd(a_addr=0, b_addr=SB, c_addr=0, m=seq, k_tiles=1, n_tiles=seq // DIM, a_kt_stride=seq,
             b_nt_stride=seq, c_nt_stride=seq, b_transpose=1, batches_m1=heads - 1,
             a_batch_stride=seq, b_batch_stride=seq, c_batch_stride=2 * seq)
    _, _, S = await tb.gemm(qk, Q, K.transpose(0, 2, 1), what="Q.K^T, all heads")
    assert np.array_equal(S, wrap32(Q @ K.transpose(0, 2, 1)))
    P = tb.nprng.integers(0, 128, size=(heads, seq, seq))
    pv = cmd(a_addr=0, b_addr=SB, c_addr=0, m=seq, k_tiles=seq // DIM, n_tiles=1, a_kt_stride=seq,
             b_nt_stride=0, c_nt_stride=seq, batches_m1=heads - 1, a_batch_stride=seq * seq // DIM,
             b_batch_stride=seq, c_batch_stride=seq)
    _, _, O = await tb.gemm(pv, P, V, what="P.V, all heads")
    assert np.array_equal(O, wrap32(P @ V))
    await tb.check_monitors()


@cocotb.test()
async def tiny_m_pingpong(dut):
    """m=1 and m=2 with many tiles: back-to-back weight-bank switches and RMW of the same rows."""
    tb = Tb(dut)
    await tb.start()
    for m, kts, nts, acc, deny in ((1, 8, 3, 0, 0), (1, 8, 3, 1, 3), (2, 5, 4, 1, 0),
                                   (1, 1, 6, 0, 2), (3, 6, 2, 0, 1)):
        c = cmd(a_addr=10, b_addr=SB + 5, c_addr=20, m=m, k_tiles=kts, n_tiles=nts,
                a_kt_stride=m, b_nt_stride=kts * DIM, c_nt_stride=m, accumulate=acc)
        delta, cycles, _ = await tb.gemm(c, what=f"tiny m={m} k_tiles={kts} n_tiles={nts}", deny=deny)
        if deny == 0:
            # No denials: the busy cycles are the cost model's (checked in submit).
            tb.log.info(f"m={m} k_tiles={kts} n_tiles={nts}: {cycles} cycles, "
                        f"busy {delta['busy']}, active {delta['active']}")
    # Every n-tile adds into the same C rows (c_nt_stride = 0): order-independent, RMW every tile.
    m, kts, nts = 1, 3, 5
    c = cmd(a_addr=50, b_addr=SB + 300, c_addr=7, m=m, k_tiles=kts, n_tiles=nts,
            a_kt_stride=1, b_nt_stride=kts * DIM, c_nt_stride=0, accumulate=1)
    A = tb.nprng.integers(-128, 128, size=(m, kts * DIM))
    B = tb.nprng.integers(-128, 128, size=(kts * DIM, nts * DIM))
    c0 = tb.nprng.integers(-2**31, 2**31, size=(m, DIM))
    await tb.spad_write(spad_image(c, A, B))
    await tb.acc_write({7: c0[0]})
    await tb.submit(c, what="c_nt_stride=0 accumulate")
    expect = wrap32(c0 + sum(A @ B[:, nt * DIM:(nt + 1) * DIM] for nt in range(nts)))
    got = (await tb.acc_read([7]))[7]
    assert np.array_equal(got, expect[0]), f"c_nt_stride=0: {got} != {expect[0]}"
    await tb.check_monitors()


@cocotb.test()
async def k_split_accumulate(dut):
    """K split across commands: the first overwrites (accumulate=0), the later ones add."""
    tb = Tb(dut)
    await tb.start()
    for m, splits in ((tb.rng.randint(1, 2 * DIM), (2, 1)), (1, (1, 1, 2)), (DIM + 3, (3, 2))):
        kts, nts = sum(splits), 2
        c = cmd(a_addr=tb.place(0, 200, 1), b_addr=tb.place(SB, SB + 100, 1), c_addr=tb.place(0, 500, 1),
                m=m, k_tiles=kts, n_tiles=nts, a_kt_stride=m + 2, b_nt_stride=kts * DIM + 3,
                c_nt_stride=m + 1)
        A = tb.nprng.integers(-128, 128, size=(m, kts * DIM))
        B = tb.nprng.integers(-128, 128, size=(kts * DIM, nts * DIM))
        await tb.spad_write(spad_image(c, A, B))
        await tb.acc_write(c_matrix_to_rows(c, tb.nprng.integers(-2**31, 2**31, size=(m, nts * DIM))))
        k0 = 0
        for s, kn in enumerate(splits):
            part = dict(c, a_addr=c["a_addr"] + k0 * c["a_kt_stride"], b_addr=c["b_addr"] + k0 * DIM,
                        k_tiles=kn, accumulate=int(s > 0))
            await ClockCycles(dut.clk, tb.rng.randint(0, 5))
            await tb.submit(part, what=f"K split {splits} part {s}", deny=tb.rng.choice([0, 2]))
            k0 += kn
        got = c_rows_to_matrix(c, await tb.acc_read(c_addrs(c)))[0]
        expect = wrap32(A @ B)
        assert np.array_equal(got, expect), f"K split {splits} m={m}: mismatch {np.argwhere(got != expect)[:4]}"
    await tb.check_monitors()


@cocotb.test()
async def extremes(dut):
    """-128 x -128 everywhere with a big K, then accumulation across the int32 wrap."""
    tb = Tb(dut)
    await tb.start()
    m, kts, nts = DIM + 3, 32, 2
    K = kts * DIM
    c = cmd(a_addr=0, b_addr=SB, c_addr=100, m=m, k_tiles=kts, n_tiles=nts,
            a_kt_stride=m, b_nt_stride=K, c_nt_stride=m)
    A = np.full((m, K), -128)
    B = np.full((K, nts * DIM), -128)
    _, _, r = await tb.gemm(c, A, B, what="-128x-128 overwrite")
    assert (r == 16384 * K).all()
    # Accumulate onto values near INT32_MAX: the sums wrap.
    c0 = 2**31 - 1 - tb.nprng.integers(0, 16384 * K, size=(m, nts * DIM))
    _, _, r = await tb.gemm(dict(c, accumulate=1), A, B, c0=c0, what="-128x-128 accumulate, wraps")
    assert (r < 0).all()
    # 127 x -128 onto values near INT32_MIN: wraps the other way.
    B = np.full((K, nts * DIM), 127)
    c0 = -2**31 + tb.nprng.integers(0, 16256 * K, size=(m, nts * DIM))
    _, _, r = await tb.gemm(dict(c, accumulate=1), A, B, c0=c0, what="-128x127 accumulate, wraps")
    assert (r > 0).all()
    # Mixed extremes, checked elementwise.
    A = tb.nprng.choice([-128, 127], size=(m, K))
    B = tb.nprng.choice([-128, 127], size=(K, nts * DIM))
    await tb.gemm(c, A, B, what="+-extremes")
    await tb.check_monitors()


@cocotb.test()
async def error_commands(dut):
    """Each error code; the accumulator (canary) and all memory counters stay untouched."""
    tb = Tb(dut)
    await tb.start()
    D = DIM
    good = cmd(a_addr=0, b_addr=SB, c_addr=100, m=4, k_tiles=2, n_tiles=2,
               a_kt_stride=8, b_nt_stride=2 * D, c_nt_stride=8)
    canary_rows = [*range(0, 140), *range(ACC_ROWS - 40, ACC_ROWS)]
    canary = {r: tb.nprng.integers(-2**31, 2**31, size=D) for r in canary_rows}
    await tb.acc_write(canary)
    # Operands for the good command, so a command that wrongly ran would write real data.
    await tb.spad_write(spad_image(good, tb.nprng.integers(-128, 128, size=(4, 2 * D)),
                                   tb.nprng.integers(-128, 128, size=(2 * D, 2 * D))))
    R = ErrorCode.RESERVED_BITS
    S = ErrorCode.BAD_SHAPE
    L = ErrorCode.LOCAL_RANGE
    cases = [(f"reserved bit {b}", dict(reserved=1 << b), R) for b in range(6)]
    cases += [
        ("reserved + m=0", dict(reserved=0x20, m=0), R),
        ("reserved + A out of range", dict(reserved=1, a_addr=2**20 - 1), R),
        ("m=0", dict(m=0), S),
        ("k_tiles=0", dict(k_tiles=0), S),
        ("n_tiles=0", dict(n_tiles=0), S),
        ("all sizes 0", dict(m=0, k_tiles=0, n_tiles=0), S),
        ("m=0 + C out of range", dict(m=0, c_addr=2**20 - 1), S),
        ("A last row = spad_rows", dict(a_addr=SPAD_ROWS - 8 - 4 + 1), L),
        ("A at spad_rows (wraps to 0 if truncated)", dict(a_addr=SPAD_ROWS), L),
        ("A addr max", dict(a_addr=2**20 - 1), L),
        ("A kt stride = spad_rows", dict(a_kt_stride=SPAD_ROWS), L),
        ("A huge stride x k_tiles", dict(a_kt_stride=2**20 - 1, k_tiles=4095), L),
        ("B last row = spad_rows", dict(b_addr=SPAD_ROWS - 2 * D - 2 * D + 1), L),
        ("B nt stride = spad_rows", dict(b_nt_stride=SPAD_ROWS), L),
        ("B k_tiles past end", dict(b_addr=0, a_kt_stride=0, k_tiles=SPAD_ROWS // D + 1), L),
        ("B addr max", dict(b_addr=2**20 - 1), L),
        ("C last row = acc_rows", dict(c_addr=ACC_ROWS - 8 - 4 + 1), L),
        ("C at acc_rows (wraps to 0 if truncated)", dict(c_addr=ACC_ROWS), L),
        ("C nt stride = acc_rows", dict(c_nt_stride=ACC_ROWS), L),
        ("C huge stride x n_tiles", dict(c_nt_stride=2**20 - 1, n_tiles=4095, b_nt_stride=0), L),
        ("m = 65535", dict(m=65535, a_kt_stride=0), L),
        ("B transposed, last row = spad_rows", dict(b_transpose=1, b_addr=SPAD_ROWS - 4 * D + 1), L),
        ("B transposed, k-tile stride = spad_rows", dict(b_transpose=1, b_nt_stride=SPAD_ROWS), L),
        ("second batch item's A past the end", dict(batches_m1=1, a_batch_stride=SPAD_ROWS - 11), L),
        ("fourth batch item's B past the end",
         dict(batches_m1=3, b_batch_stride=(SPAD_ROWS - SB) // 3), L),
        ("256 batch items' C past the end",
         dict(batches_m1=255, c_batch_stride=ACC_ROWS // 255 + 1), L),
        ("batches + m=0", dict(batches_m1=255, m=0), S),
    ]
    tb.rng.shuffle(cases)
    for k, (what, over, code) in enumerate(cases):
        _, cycles = await tb.submit(dict(good, **over), expect=code, what=what)
        assert cycles <= 8, f"{what}: error took {cycles} cycles"
        if k == len(cases) // 2:
            got = await tb.acc_read(canary_rows)
            assert all(np.array_equal(got[r], canary[r]) for r in canary_rows), "canary modified"
        await ClockCycles(dut.clk, tb.rng.randint(0, 3))
    got = await tb.acc_read(canary_rows)
    bad = [r for r in canary_rows if not np.array_equal(got[r], canary[r])]
    assert not bad, f"error commands modified accumulator rows {bad[:8]}"
    tb.log.info(f"{len(cases)} error commands retired with the right code, nothing touched")
    # A good command still works, then commands touching exactly the last rows of each memory.
    await tb.gemm(good, what="good after errors")
    await tb.gemm(dict(good, a_addr=SPAD_ROWS - 8 - 4), what="A ends at the last scratchpad row")
    await tb.gemm(dict(good, b_addr=SPAD_ROWS - 4 * D), what="B ends at the last scratchpad row")
    await tb.gemm(dict(good, c_addr=ACC_ROWS - 12), what="C ends at the last accumulator row")
    await tb.gemm(dict(good, b_transpose=1, b_addr=SPAD_ROWS - 4 * D),
                  what="transposed B ends at the last scratchpad row")
    await tb.gemm(dict(good, batches_m1=2, c_addr=ACC_ROWS - 36, c_batch_stride=12),
                  what="third batch item's C ends at the last accumulator row")
    await tb.check_monitors()


@cocotb.test()
async def background_traffic(dut):
    """Backdoor reads/writes on banks the GEMM does not use run every cycle during the GEMM."""
    tb = Tb(dut)
    await tb.start()
    stats = {"cycles": 0, "checked": 0}

    async def traffic():
        d = dut
        smodel, amodel = {}, {}
        pend = [[] for _ in range(CFG.mem_read_latency)]   # reads of each cycle in flight
        while int(d.ctl__busy.value) == 1 or stats["cycles"] == 0:
            sw = tb.rng.randrange(2 * SB, 4 * SB)        # scratchpad banks 2 and 3
            aw = tb.rng.randrange(AB + 8, 2 * AB)        # accumulator bank 1 (clear of C guards)
            sv, av = tb.nprng.integers(-128, 128, DIM), tb.nprng.integers(-2**31, 2**31, DIM)
            sr = tb.rng.choice([r for r in list(smodel)[-8:] if r != sw] or [None])
            ar = tb.rng.choice([r for r in list(amodel)[-8:] if r != aw] or [None])
            d.spad_bd_wr__en.value, d.spad_bd_wr__addr.value, d.spad_bd_wr__data.value = 1, sw, pack8(sv)
            d.acc_bd_wr__en.value, d.acc_bd_wr__addr.value, d.acc_bd_wr__data.value = 1, aw, pack32(av)
            d.spad_bd_rd__en.value, d.spad_bd_rd__addr.value = int(sr is not None), sr or 0
            d.acc_bd_rd__en.value, d.acc_bd_rd__addr.value = int(ar is not None), ar or 0
            await ReadOnly()
            for port in ("spad_bd_wr", "acc_bd_wr", "spad_bd_rd", "acc_bd_rd"):
                if int(getattr(d, f"{port}__en").value) == 1:
                    assert int(getattr(d, f"{port}__gnt").value) == 1, f"backdoor {port} denied on a free bank"
            for kind, row, want in pend.pop(0):
                got = (unpack8(d.spad_bd_rd__data.value.to_unsigned()) if kind == "s"
                       else unpack32(d.acc_bd_rd__data.value.to_unsigned()))
                assert np.array_equal(got, want), f"backdoor read {kind} row {row} during GEMM"
                stats["checked"] += 1
            pend.append(([("s", sr, smodel[sr])] if sr is not None else [])
                        + ([("a", ar, amodel[ar])] if ar is not None else []))
            await RisingEdge(d.clk)
            smodel[sw], amodel[aw] = sv, wrap32(av)
            stats["cycles"] += 1
        for x in ("spad_bd_wr__en", "acc_bd_wr__en", "spad_bd_rd__en", "acc_bd_rd__en"):
            getattr(d, x).value = 0

    for k in range(2):
        c = random_cmd(tb, m=tb.rng.randint(4 * DIM, 8 * DIM), min_tiles=2)
        await tb.gemm(c, what=f"GEMM with background traffic #{k}", deny=k * 2, background=traffic)
    assert stats["checked"] > 50, stats
    tb.log.info(f"background traffic: {stats['cycles']} cycles, {stats['checked']} reads checked")
    await tb.check_monitors()


@cocotb.test()
async def utilization(dut):
    """A large command: log active cycles / busy cycles (no assertion on speed)."""
    tb = Tb(dut)
    await tb.start()
    m, kts, nts = 256, 4, 2
    c = cmd(a_addr=0, b_addr=SB, c_addr=0, m=m, k_tiles=kts, n_tiles=nts,
            a_kt_stride=m, b_nt_stride=kts * DIM, c_nt_stride=m, accumulate=0)
    delta, cycles, _ = await tb.gemm(c, what="utilization m=256 k_tiles=4 n_tiles=2")
    util = delta["active"] / delta["busy"]
    tb.log.info(f"UTILIZATION dim={DIM} m={m} k_tiles={kts} n_tiles={nts}: active {delta['active']} / "
                f"busy {delta['busy']} cycles = {100 * util:.1f}% (stall {delta['stall']}; "
                f"two-stream bound m/max(m, dim) = {100 * m / max(m, DIM):.1f}%; accept->done "
                f"{cycles} cycles)")
    print(f"UTILIZATION dim={DIM}: {delta['active']}/{delta['busy']} = {100 * util:.1f}%")
    await tb.check_monitors()
