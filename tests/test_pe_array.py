"""The PE array's weight loading, in Amaranth's own simulator (fast, no Verilator): row and column
(transposed) writes give ``out = a @ W`` for every bank, and the ``w_conflict`` monitor fires
exactly when a write reaches a PE an in-flight element of the same bank has still to pass: an
element presented in cycle ``t`` reads PE ``(r, j)`` in cycle ``t + r + j`` and a write presented
in cycle ``w`` reaches column ``j`` in cycle ``w + j``, so a write of row ``r`` conflicts iff
``t + r > w``, a write of a column iff ``t + dim - 1 > w``.
The GEMM engine's bench runs the array at full size under Verilator."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl_gen.pe_array import PEArray

DIM = 4


def _pack(v, bits):
    return sum((int(x) & ((1 << bits) - 1)) << (bits * i) for i, x in enumerate(v))


def _unpack32(v):
    return [((v >> (32 * i)) & 0xFFFFFFFF) - ((v >> (32 * i) & 0x80000000) << 1) for i in range(DIM)]


def _run(bench):
    dut = PEArray(DIM)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    async def testbench(ctx):
        await bench(ctx, dut)
    sim.add_testbench(testbench)
    sim.run()


async def _load(ctx, dut, w, bank, transpose):
    for k in range(DIM):
        ctx.set(dut.w_en, 1)
        ctx.set(dut.w_row, k)
        ctx.set(dut.w_bank, bank)
        ctx.set(dut.w_transpose, int(transpose))
        ctx.set(dut.w_data, _pack(w[:, k] if transpose else w[k], 8))
        await ctx.tick()
    ctx.set(dut.w_en, 0)


def test_row_and_column_loads_multiply():
    rng = np.random.default_rng(1)
    w = {b: rng.integers(-128, 128, (DIM, DIM)) for b in (0, 1)}
    rows = [(rng.integers(-128, 128, DIM), b) for b in (0, 1, 1, 0)]
    got = []

    async def bench(ctx, dut):
        await _load(ctx, dut, w[0], 0, transpose=True)
        await _load(ctx, dut, w[1], 1, transpose=False)
        for a, b in rows + [(None, 0)] * (2 * DIM):
            ctx.set(dut.a_valid, int(a is not None))
            ctx.set(dut.a_data, _pack(a, 8) if a is not None else 0)
            ctx.set(dut.a_bank, b)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                got.append(_unpack32(ctx.get(dut.out_data)))
            assert not ctx.get(dut.w_conflict)

    _run(bench)
    assert got == [list(a @ w[b]) for a, b in rows]


@pytest.mark.parametrize("transpose", [False, True], ids=["row", "column"])
def test_conflict_monitor_is_exact(transpose):
    seen = {}

    async def bench(ctx, dut):
        for gap in range(2 * DIM + 1):
            for k in range(DIM):
                for bank in (0, 1):
                    ctx.set(dut.a_valid, 1)       # one element of bank 0 presented at t = 0
                    ctx.set(dut.a_bank, 0)
                    await ctx.tick()
                    ctx.set(dut.a_valid, 0)
                    for _ in range(gap - 1):
                        await ctx.tick()
                    ctx.set(dut.w_en, int(gap > 0))
                    ctx.set(dut.w_row, k)
                    ctx.set(dut.w_bank, bank)
                    ctx.set(dut.w_transpose, int(transpose))
                    hit = 0
                    for _ in range(2 * DIM):           # the write crosses the array; drain
                        hit |= ctx.get(dut.w_conflict)
                        await ctx.tick()
                        ctx.set(dut.w_en, 0)
                    if gap > 0:
                        seen[gap, k, bank] = hit

    _run(bench)
    for (gap, k, bank), hit in seen.items():
        reach = DIM - 1 if transpose else k
        assert hit == (bank == 0 and reach > gap), (gap, k, bank, hit)
    assert any(seen.values()) and not all(seen.values())
