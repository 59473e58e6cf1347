"""cocotb side of test_vector_unit: VECTOR commands checked bit-exactly against golden.ops.

Data goes in and out through the harness backdoor ports; the cocotb side only awaits clock edges
while loading, submitting and reading back, and one ``ctl__done`` edge per command. A shadow copy
of every row written (by the backdoor or, as predicted by the golden model, by the vector unit)
gives the expected memory contents, so overlapping regions stay consistent.
"""
import os
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from golden import ops as golden
from hdl_gen.descriptor import ErrorCode, VecCmd
from hdl_gen.config import KakiConfig
from hdl_gen.vector_unit import PIPELINE_LATENCY

MEM_READ_LATENCY = KakiConfig().mem_read_latency     # the harness's memories are the chip's

DIM = int(os.environ["KAKI_VU_DIM"])
ACC_ROWS = int(os.environ["KAKI_VU_ACC_ROWS"])
SPAD_ROWS = int(os.environ["KAKI_VU_SPAD_ROWS"])
SEED = int(os.environ["KAKI_SEED"])
CLK_NS = 10
ADDR_MAX = 2**20 - 1        # widest descriptor address
I32_MIN, I32_MAX = -2**31, 2**31 - 1
VEC_LAYOUT = data.Layout.cast(VecCmd)
OP_NAMES = ("bias", "relu", "add", "maxred")


def pack_cmd(**fields):
    return VEC_LAYOUT.const(fields).as_value().value


def ops_dict(bits):
    return {name: (bits >> i) & 1 for i, name in enumerate(OP_NAMES)}


def ops_str(ops):
    return "+".join(n for n in OP_NAMES if ops.get(n)) or "requant"


def acc_row_int(row):
    return int.from_bytes(np.asarray(row, dtype=np.int64).astype("<u4").tobytes(), "little")


def spad_row_int(row):
    return int.from_bytes(np.asarray(row, dtype=np.int8).tobytes(), "little")


def spad_row_from_int(v):
    return np.frombuffer(v.to_bytes(DIM, "little"), dtype=np.int8).copy()


class Tb:
    """Clock, reset, backdoor access with shadows, and command submission."""

    def __init__(self, dut, name):
        self.dut = dut
        self.seed = SEED ^ (sum(map(ord, name)) * 0x9E3779B1 & 0x7FFFFFFF)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.acc = {}     # row -> np.int64 lanes (raw int32 values), what the backdoor wrote
        self.spad = {}    # row -> np.int8 lanes, expected scratchpad contents
        self.cmds = 0
        dut._log.info(f"{name}: KAKI_SEED={SEED} (test seed {self.seed}) dim={DIM} "
                      f"acc_rows={ACC_ROWS} spad_rows={SPAD_ROWS}")
        assert len(dut.acc_bd_wr__data) == DIM * 32 and len(dut.spad_bd_wr__data) == DIM * 8

    async def start(self):
        d = self.dut
        Clock(d.clk, CLK_NS, unit="ns").start()
        for s in ("ctl__cmd__valid", "ctl__cmd__payload", "acc_bd_rd__en", "acc_bd_rd__addr",
                  "acc_bd_wr__en", "acc_bd_wr__addr", "acc_bd_wr__data", "spad_bd_rd__en",
                  "spad_bd_rd__addr", "spad_bd_wr__en", "spad_bd_wr__addr", "spad_bd_wr__data",
                  "blk_seed", "blk_load", "blk_acc_rate", "blk_spad_rate", "cnt_clear"):
            getattr(d, s).value = 0
        d.rst.value = 1
        for _ in range(3):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0
        d.blk_seed.value = self.rng.getrandbits(32)
        d.blk_load.value = 1
        await FallingEdge(d.clk)
        d.blk_load.value = 0

    # -- backdoor (only while the vector unit is idle and the blockers are off) --
    async def acc_write(self, addr, rows):
        d = self.dut
        d.acc_bd_wr__en.value = 1
        for i, row in enumerate(rows):
            assert 0 <= addr + i < ACC_ROWS
            d.acc_bd_wr__addr.value = addr + i
            d.acc_bd_wr__data.value = acc_row_int(row)
            self.acc[addr + i] = np.asarray(row, dtype=np.int64).copy()
            await FallingEdge(d.clk)
        d.acc_bd_wr__en.value = 0

    async def spad_write(self, addr, rows):
        d = self.dut
        d.spad_bd_wr__en.value = 1
        for i, row in enumerate(rows):
            assert 0 <= addr + i < SPAD_ROWS
            d.spad_bd_wr__addr.value = addr + i
            d.spad_bd_wr__data.value = spad_row_int(row)
            self.spad[addr + i] = np.asarray(row, dtype=np.int8).copy()
            await FallingEdge(d.clk)
        d.spad_bd_wr__en.value = 0

    async def spad_read(self, addr, n):
        """One row per cycle; each row's data is on the port MEM_READ_LATENCY cycles later."""
        d = self.dut
        out = []
        for t in range(n + MEM_READ_LATENCY - 1):
            d.spad_bd_rd__en.value = int(t < n)
            if t < n:
                d.spad_bd_rd__addr.value = addr + t
            await FallingEdge(d.clk)
            if t >= MEM_READ_LATENCY - 1:
                out.append(spad_row_from_int(int(d.spad_bd_rd__data.value)))
        d.spad_bd_rd__en.value = 0
        return np.array(out, dtype=np.int8).reshape(n, DIM)

    async def check_spad(self, rows, what):
        """Read back every scratchpad row in ``rows`` and compare with the shadow."""
        rows = sorted(set(rows))
        # read in contiguous runs
        runs, start, prev = [], None, None
        for r in rows:
            if start is None:
                start = prev = r
            elif r == prev + 1:
                prev = r
            else:
                runs.append((start, prev))
                start = prev = r
        if start is not None:
            runs.append((start, prev))
        for lo, hi in runs:
            got = await self.spad_read(lo, hi - lo + 1)
            for i in range(hi - lo + 1):
                want = self.spad[lo + i]
                if not np.array_equal(got[i], want):
                    bad = np.flatnonzero(got[i] != want)
                    raise AssertionError(
                        f"{what}: scratchpad row {lo + i}: got {got[i].tolist()} want "
                        f"{want.tolist()} (lanes {bad.tolist()} differ) SEED={SEED}")

    # -- commands --
    async def submit(self, fields, *, rates=(0, 0)):
        """Hand one command over (waits for ready); clears the counters; returns the accept time."""
        d = self.dut
        d.ctl__cmd__payload.value = pack_cmd(**fields)
        d.ctl__cmd__valid.value = 1
        d.cnt_clear.value = 1
        d.blk_acc_rate.value, d.blk_spad_rate.value = rates
        for _ in range(100):
            ready = int(d.ctl__cmd__ready.value)
            await RisingEdge(d.clk)
            if ready:
                break
        else:
            raise AssertionError("the vector unit never raised ctl__cmd__ready")
        t_accept = get_sim_time("ns")
        await FallingEdge(d.clk)
        d.ctl__cmd__valid.value = 0
        d.cnt_clear.value = 0
        assert int(d.ctl__cmd__ready.value) == 0 and int(d.ctl__busy.value) == 1, \
            "ready must drop and busy rise once a command is accepted"
        self.cmds += 1
        return t_accept

    async def wait_done(self, what, timeout_cycles):
        d = self.dut
        try:
            await with_timeout(RisingEdge(d.ctl__done), timeout_cycles * CLK_NS, "ns")
        except cocotb.triggers.SimTimeoutError:
            raise AssertionError(f"timed out after {timeout_cycles} cycles waiting for ctl__done "
                                 f"of {what} (SEED={SEED})") from None
        t_done = get_sim_time("ns")
        await ReadOnly()
        err = int(d.ctl__error.value)
        assert int(d.ctl__busy.value) == 1, "busy must stay high through the done cycle"
        await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        assert int(d.ctl__done.value) == 0, "done must be a one-cycle pulse"
        assert int(d.ctl__busy.value) == 0 and int(d.ctl__cmd__ready.value) == 1, \
            "after done the unit must be idle and ready"
        d.blk_acc_rate.value = 0
        d.blk_spad_rate.value = 0
        return err, t_done

    def counters(self):
        d = self.dut
        return {n: int(getattr(d, n).value) for n in (
            "cnt_writes", "cnt_wr_denied", "cnt_active", "cnt_acc_denied", "cnt_spad_denied",
            "first_fire", "first_write")}


def timeout_for(rows, rates):
    pa, ps = (min(r, 255) / 256 for r in rates)
    return int(400 + 30 * (rows + 4) / ((1 - pa) * (1 - ps)))


# ---------------------------------------------------------------------------------------------
# Random data
# ---------------------------------------------------------------------------------------------

ACC_EXTREMES = (I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX)
MULT_EXTREMES = (I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX)
SHIFT_EXTREMES = (0, 1, 31, 32, 62, 63)
ZP_CHOICES = (-128, 127, 0, -1, 1)


def random_params(rng, rows):
    """acc rows (rows, DIM), bias, mult, shift: per lane either calibrated (outputs mostly in the
    int8 range, so rounding is exercised) or wild (full range and extremes)."""
    acc = np.zeros((rows, DIM), dtype=np.int64)
    bias = np.zeros(DIM, dtype=np.int64)
    mult = np.zeros(DIM, dtype=np.int64)
    shift = np.zeros(DIM, dtype=np.int64)
    for c in range(DIM):
        mode = rng.random()
        if mode < 0.6:
            a = rng.randrange(0, 31)
            mbits = rng.randrange(1, 32)
            acc[:, c] = [rng.randint(-2**a, 2**a - 1) for _ in range(rows)]
            bias[c] = rng.randint(-2**a, 2**a - 1)
            mult[c] = rng.choice((1, -1)) * rng.randrange(2**(mbits - 1), 2**mbits)
            shift[c] = min(63, max(0, a + mbits - 7 + rng.randint(-3, 3)))
        else:
            acc[:, c] = [rng.choice(ACC_EXTREMES) if rng.random() < 0.3
                         else rng.randint(I32_MIN, I32_MAX) for _ in range(rows)]
            bias[c] = rng.choice(ACC_EXTREMES) if rng.random() < 0.5 else rng.randint(I32_MIN, I32_MAX)
            mult[c] = rng.choice(MULT_EXTREMES) if rng.random() < 0.5 else rng.randint(I32_MIN, I32_MAX)
            shift[c] = rng.choice(SHIFT_EXTREMES) if rng.random() < 0.5 else rng.randrange(64)
    return acc, bias, mult, shift


def random_residual(rng, rows):
    return np.array([[rng.choice((-128, 127, -1, 0)) if rng.random() < 0.2 else rng.randint(-128, 127)
                      for _ in range(DIM)] for _ in range(rows)], dtype=np.int8)


def pick_layout(rng, rows, ops):
    """Random legal addresses: three distinct parameter rows, src block, dst/res blocks."""
    src = rng.randrange(0, ACC_ROWS - rows + 1)
    params = rng.sample(range(ACC_ROWS), 3)
    n_out = 1 if ops["maxred"] else rows
    while True:
        res = rng.randrange(0, SPAD_ROWS - rows + 1)
        if ops["add"] and not ops["maxred"] and rng.random() < 0.2:
            dst = res                     # in place
        else:
            dst = rng.randrange(0, SPAD_ROWS - n_out + 1)
        # a destination starting above the residual rows and overlapping them is unsupported
        if ops["maxred"] or not ops["add"] or not (res < dst < res + rows):
            break
    return dict(src_addr=src, bias_addr=params[0], mult_addr=params[1], shift_addr=params[2],
                res_addr=res, dst_addr=dst)


# ---------------------------------------------------------------------------------------------
# One good command end to end
# ---------------------------------------------------------------------------------------------

async def run_good(tb, *, layout, rows, ops, zp, acc, bias, mult, shift, residual=None,
                   rates=(0, 0), label="", load=True):
    """Load, run and check one command that must succeed. Returns the counters."""
    n_out = 1 if ops["maxred"] else rows
    src, dst, res = layout["src_addr"], layout["dst_addr"], layout["res_addr"]
    if load:
        await tb.acc_write(src, acc)
        if ops["bias"]:
            await tb.acc_write(layout["bias_addr"], [bias])
        await tb.acc_write(layout["mult_addr"], [mult])
        await tb.acc_write(layout["shift_addr"], [shift])
        # canaries around and in the destination (not over the residual rows), then residuals
        window = range(max(0, dst - 2), min(SPAD_ROWS, dst + n_out + 2))
        res_rows = set(range(res, res + rows)) if ops["add"] else set()
        for r in window:
            if r not in res_rows:
                await tb.spad_write(r, [tb.np_rng.integers(-128, 128, DIM, dtype=np.int8)])
        if ops["add"]:
            await tb.spad_write(res, residual)
    # expected result from what memory holds now (the shadows)
    acc_in = np.array([tb.acc[src + i] for i in range(rows)], dtype=np.int64).astype(np.int32)
    kw = dict(bias=tb.acc[layout["bias_addr"]].astype(np.int32) if ops["bias"] else None,
              mult=tb.acc[layout["mult_addr"]].astype(np.int32),
              shift=tb.acc[layout["shift_addr"]].astype(np.int32),
              zero_point=zp, relu=bool(ops["relu"]), maxred=bool(ops["maxred"]),
              residual=(np.array([tb.spad[res + i] for i in range(rows)], dtype=np.int8)
                        if ops["add"] else None))
    want = golden.vector_epilogue(acc_in, **kw).reshape(-1, DIM)
    assert want.shape == (n_out, DIM)
    fields = dict(layout, rows=rows, zero_point=zp & 0xFF, ops=ops)
    what = (f"{label} VECTOR {ops_str(ops)} rows={rows} src={src} dst={dst} res={res} "
            f"zp={zp} rates={rates}")
    t0 = await tb.submit(fields, rates=rates)
    err, t1 = await tb.wait_done(what, timeout_for(rows, rates))
    assert err == ErrorCode.OK.value, f"{what}: error {ErrorCode(err).name}, want OK (SEED={SEED})"
    cnt = tb.counters()
    assert cnt["cnt_wr_denied"] == 0, f"{what}: a vector unit write was not granted"
    assert cnt["cnt_writes"] == n_out, f"{what}: {cnt['cnt_writes']} writes, want {n_out}"
    assert cnt["cnt_active"] == rows, f"{what}: active counted {cnt['cnt_active']} rows, want {rows}"
    if not ops["maxred"] and rates == (0, 0):
        assert cnt["first_write"] - cnt["first_fire"] == PIPELINE_LATENCY, (what, cnt)
    for i in range(n_out):
        tb.spad[dst + i] = want[i]
    check = set(range(max(0, dst - 2), min(SPAD_ROWS, dst + n_out + 2)))
    if ops["add"]:
        check |= set(range(res, res + rows))
    await tb.check_spad(check, what)
    cnt["cycles"] = int((t1 - t0) / CLK_NS)
    cnt["saturated"] = float(np.mean((want == 127) | (want == -128)))
    return cnt


async def random_good(tb, *, ops, rows, rates=(0, 0), label=""):
    acc, bias, mult, shift = random_params(tb.rng, rows)
    residual = random_residual(tb.rng, rows)
    zp = tb.rng.choice(ZP_CHOICES) if tb.rng.random() < 0.3 else tb.rng.randint(-128, 127)
    layout = pick_layout(tb.rng, rows, ops)
    return await run_good(tb, layout=layout, rows=rows, ops=ops, zp=zp, acc=acc, bias=bias,
                          mult=mult, shift=shift, residual=residual, rates=rates, label=label)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def every_op_combination(dut):
    """All 16 combinations of bias/relu/add/maxred, rows 1..64, with and without a blocker."""
    tb = Tb(dut, "every_op_combination")
    await tb.start()
    row_choices = [1, 64, 2, 3, 5, 8, 16, 17, 31, 33, 47, 63]
    sat = []
    for rep in range(2):
        for bits in range(16):
            ops = ops_dict(bits)
            rows = row_choices[(bits + 16 * rep) % len(row_choices)] if rep == 0 or bits % 2 \
                else tb.rng.randint(1, 64)
            rates = (0, 0) if rep == 0 else (tb.rng.choice((0, 40, 128, 200)),
                                             tb.rng.choice((0, 40, 128, 200)))
            cnt = await random_good(tb, ops=ops, rows=rows, rates=rates, label=f"combo{bits}")
            sat.append(cnt["saturated"])
    dut._log.info(f"{tb.cmds} commands; saturated outputs {np.mean(sat):.0%}")
    assert np.mean(sat) < 0.8, "test data saturates almost everything: it would not test rounding"


@cocotb.test()
async def extreme_values(dut):
    """Every pairing of extreme acc, mult, shift, bias, zero point and residual values."""
    tb = Tb(dut, "extreme_values")
    await tb.start()
    acc_vals = ACC_EXTREMES + (2**30, -2**30, 12345, -12345)
    lane_params = [(m, s) for m in MULT_EXTREMES for s in SHIFT_EXTREMES]   # 36 pairings
    bias_vals = (I32_MIN, I32_MAX, 1, -1, 0)
    for zp in (-128, 127, -3):
        for chunk in range(0, len(lane_params), DIM):
            lp = [lane_params[(chunk + c) % len(lane_params)] for c in range(DIM)]
            mult = np.array([m for m, _ in lp], dtype=np.int64)
            shift = np.array([s for _, s in lp], dtype=np.int64)
            bias = np.array([bias_vals[(chunk + c) % len(bias_vals)] for c in range(DIM)],
                            dtype=np.int64)
            acc = np.array([[v] * DIM for v in acc_vals], dtype=np.int64)
            rows = len(acc_vals)
            residual = np.array([[(-128, 127, -1, 0, 1)[(r + c) % 5] for c in range(DIM)]
                                 for r in range(rows)], dtype=np.int8)
            ops = ops_dict(tb.rng.randrange(16) & 0b0111 | (tb.rng.random() < 0.2) << 3)
            ops["bias"] = chunk // DIM % 2
            await run_good(tb, layout=pick_layout(tb.rng, rows, ops), rows=rows, ops=ops, zp=zp,
                           acc=acc, bias=bias, mult=mult, shift=shift, residual=residual,
                           label="extreme")
    dut._log.info(f"{tb.cmds} commands")


@cocotb.test()
async def blocker_steals_grants(dut):
    """Heavy grant stealing on both read ports; rows must still come out exact and in place."""
    tb = Tb(dut, "blocker_steals_grants")
    await tb.start()
    denied_acc = denied_spad = 0
    for i in range(8):
        ops = ops_dict(tb.rng.randrange(16))
        ops["add"] = 1 if i < 6 else ops["add"]
        rates = [(200, 0), (0, 200), (160, 160), (230, 60), (60, 230), (128, 128),
                 (200, 200), (100, 100)][i]
        cnt = await random_good(tb, ops=ops, rows=tb.rng.randint(20, 64), rates=rates,
                                label=f"blocked{i}")
        denied_acc += cnt["cnt_acc_denied"]
        denied_spad += cnt["cnt_spad_denied"]
    dut._log.info(f"denied: acc {denied_acc}, spad {denied_spad}")
    assert denied_acc > 50 and denied_spad > 50, "the blocker did not steal enough grants"


@cocotb.test()
async def latency_and_throughput(dut):
    """Unblocked: one row per cycle, fixed latency, done one cycle after the last write."""
    tb = Tb(dut, "latency_and_throughput")
    await tb.start()
    for ops_bits, rows in ((0b0111, 64), (0b1111, 64), (0b0000, 1), (0b1000, 1)):
        ops = ops_dict(ops_bits)
        cnt = await random_good(tb, ops=ops, rows=rows, label="latency")
        # accept, CHECK, 2-3 parameter reads (the last one's data comes MEM_READ_LATENCY later),
        # SHIFT_CHECK, one row per cycle, pipeline, done
        n_param = 3 if ops["bias"] else 2
        want = (1 + n_param + MEM_READ_LATENCY + (rows - 1) + PIPELINE_LATENCY
                + (1 if ops["maxred"] else 0) + 1)
        dut._log.info(f"{ops_str(ops)} rows={rows}: accept->done {cnt['cycles']} cycles")
        assert cnt["cycles"] == want, f"{ops_str(ops)} rows={rows}: {cnt['cycles']} cycles, want {want}"


@cocotb.test()
async def back_to_back(dut):
    """A second command waiting on ctl__cmd is taken right after the first retires."""
    tb = Tb(dut, "back_to_back")
    await tb.start()
    d = tb.dut
    rows_a, rows_b = 40, 23
    ops_a, ops_b = ops_dict(0b0101), ops_dict(0b0011)
    la = dict(src_addr=0, bias_addr=500, mult_addr=501, shift_addr=502, res_addr=0, dst_addr=100)
    lb = dict(src_addr=200, bias_addr=503, mult_addr=504, shift_addr=505, res_addr=300,
              dst_addr=400)
    case = {}
    for name, lay, rows, ops in (("a", la, rows_a, ops_a), ("b", lb, rows_b, ops_b)):
        acc, bias, mult, shift = random_params(tb.rng, rows)
        residual = random_residual(tb.rng, rows)
        await tb.acc_write(lay["src_addr"], acc)
        await tb.acc_write(lay["bias_addr"], [bias])
        await tb.acc_write(lay["mult_addr"], [mult])
        await tb.acc_write(lay["shift_addr"], [shift])
        await tb.spad_write(lay["res_addr"], residual)
        zp = tb.rng.randint(-128, 127)
        kw = dict(bias=bias.astype(np.int32) if ops["bias"] else None, mult=mult.astype(np.int32),
                  shift=shift.astype(np.int32), zero_point=zp, relu=bool(ops["relu"]),
                  residual=residual if ops["add"] else None, maxred=bool(ops["maxred"]))
        case[name] = (golden.vector_epilogue(acc.astype(np.int32), **kw).reshape(-1, DIM),
                      pack_cmd(**lay, rows=rows, zero_point=zp & 0xFF, ops=ops), lay)
    # A is offered, accepted; B is offered immediately and must wait for ready.
    d.ctl__cmd__payload.value = case["a"][1]
    d.ctl__cmd__valid.value = 1
    await RisingEdge(d.clk)
    await FallingEdge(d.clk)
    d.ctl__cmd__payload.value = case["b"][1]
    try:
        await with_timeout(RisingEdge(d.ctl__done), 2000 * CLK_NS, "ns")
    except cocotb.triggers.SimTimeoutError:
        raise AssertionError("timed out waiting for ctl__done of the first command") from None
    await ReadOnly()
    assert int(d.ctl__error.value) == 0
    accepted_b_early = int(d.ctl__cmd__ready.value) == 1
    await RisingEdge(d.clk)        # FIN -> IDLE
    await FallingEdge(d.clk)
    assert int(d.ctl__cmd__ready.value) == 1 and not accepted_b_early
    await RisingEdge(d.clk)        # B accepted here
    await FallingEdge(d.clk)
    d.ctl__cmd__valid.value = 0
    assert int(d.ctl__busy.value) == 1
    try:
        await with_timeout(RisingEdge(d.ctl__done), 2000 * CLK_NS, "ns")
    except cocotb.triggers.SimTimeoutError:
        raise AssertionError("timed out waiting for ctl__done of the second command") from None
    await ReadOnly()
    assert int(d.ctl__error.value) == 0
    await FallingEdge(d.clk)
    for name in ("a", "b"):
        want, _, lay = case[name]
        for i in range(len(want)):
            tb.spad[lay["dst_addr"] + i] = want[i]
        await tb.check_spad(range(lay["dst_addr"], lay["dst_addr"] + len(want)), f"command {name}")


async def run_bad(tb, fields, want, what, *, load=None):
    """Submit a command that must fail with ``want``: nothing written, canaries intact."""
    # canary: scratchpad rows the command names (clipped to the memory) plus a fixed block
    canary = set(range(SPAD_ROWS - 16, SPAD_ROWS))
    for base in (fields.get("dst_addr", 0), fields.get("res_addr", 0)):
        canary |= set(r for r in range(base - 1, base + min(fields.get("rows", 1), 70) + 1)
                      if 0 <= r < SPAD_ROWS)
    for r in sorted(canary):
        await tb.spad_write(r, [tb.np_rng.integers(-128, 128, DIM, dtype=np.int8)])
    if load:
        await load()
    full = dict(dict(src_addr=0, dst_addr=0, rows=1, bias_addr=0, mult_addr=1, shift_addr=2,
                     res_addr=0, zero_point=0, ops={}, reserved=0), **fields)
    await tb.submit(full, rates=(tb.rng.choice((0, 100)), tb.rng.choice((0, 100))))
    err, _ = await tb.wait_done(what, 2000)
    assert err == want.value, f"{what}: error {ErrorCode(err).name}, want {want.name} (SEED={SEED})"
    cnt = tb.counters()
    assert cnt["cnt_writes"] == 0 and cnt["cnt_active"] == 0, f"{what}: wrote or started rows {cnt}"
    await tb.check_spad(canary, f"{what} canary")


@cocotb.test()
async def error_codes(dut):
    """Every validation error retires with its code and writes nothing; good commands follow."""
    tb = Tb(dut, "error_codes")
    await tb.start()
    E = ErrorCode
    ok_shift = [0] * DIM

    async def load_ok_params():
        await tb.acc_write(0, [[1] * DIM, [1 << 20] * DIM, ok_shift])

    A, S = ACC_ROWS, SPAD_ROWS
    cases = [
        (dict(reserved=1), E.RESERVED_BITS, "VecCmd.reserved bit 0"),
        (dict(reserved=8), E.RESERVED_BITS, "VecCmd.reserved bit 3"),
        (dict(ops={"reserved": 1}), E.RESERVED_BITS, "ops.reserved bit 0"),
        (dict(ops={"reserved": 8, "bias": 1}), E.RESERVED_BITS, "ops.reserved bit 3"),
        (dict(reserved=2, rows=0, src_addr=ADDR_MAX), E.RESERVED_BITS, "reserved before shape"),
        (dict(rows=0), E.BAD_SHAPE, "rows = 0"),
        (dict(rows=0, src_addr=ADDR_MAX, dst_addr=ADDR_MAX), E.BAD_SHAPE, "shape before range"),
        (dict(src_addr=A - 3, rows=4), E.LOCAL_RANGE, "src one row past the end"),
        (dict(src_addr=A, rows=1), E.LOCAL_RANGE, "src at the end"),
        (dict(src_addr=ADDR_MAX, rows=1), E.LOCAL_RANGE, "src 2^20-1"),
        (dict(src_addr=0, rows=0xFFFF), E.LOCAL_RANGE, "65535 rows"),
        (dict(ops={"bias": 1}, bias_addr=A), E.LOCAL_RANGE, "bias row past the end"),
        (dict(ops={"bias": 1}, bias_addr=ADDR_MAX), E.LOCAL_RANGE, "bias row 2^20-1"),
        (dict(mult_addr=A), E.LOCAL_RANGE, "mult row past the end"),
        (dict(shift_addr=ADDR_MAX), E.LOCAL_RANGE, "shift row 2^20-1"),
        (dict(dst_addr=S - 2, rows=3), E.LOCAL_RANGE, "dst rows past the end"),
        (dict(dst_addr=S, rows=1, ops={"maxred": 1}), E.LOCAL_RANGE, "maxred dst past the end"),
        (dict(dst_addr=ADDR_MAX, rows=1), E.LOCAL_RANGE, "dst 2^20-1"),
        (dict(res_addr=S - 5, rows=6, ops={"add": 1}), E.LOCAL_RANGE, "residual past the end"),
        (dict(res_addr=ADDR_MAX, rows=1, ops={"add": 1, "maxred": 1}), E.LOCAL_RANGE,
         "residual 2^20-1"),
        (dict(src_addr=A, shift_addr=2), E.LOCAL_RANGE, "range before shift (shift row bad)"),
    ]
    bad_shift_vals = [64, -1, I32_MAX, I32_MIN, 128, 1 << 20]
    for i, v in enumerate(bad_shift_vals):
        lane = tb.rng.randrange(DIM) if i else DIM - 1
        row = [tb.rng.randrange(64) for _ in range(DIM)]
        row[lane] = v
        cases.append((dict(rows=tb.rng.randint(1, 40), shift_addr=2, dst_addr=tb.rng.randrange(0, 900),
                           ops=ops_dict(tb.rng.randrange(16)), res_addr=tb.rng.randrange(0, 900)),
                      E.BAD_SHIFT, f"shift lane {lane} = {v}", row))
    for n, case in enumerate(cases):
        fields, want, what = case[:3]
        if want == E.BAD_SHIFT:
            row = case[3]
            # the golden model agrees that this shift row is illegal

            async def load(row=row):
                await tb.acc_write(0, [[1] * DIM, [1 << 20] * DIM, row])
            try:
                golden.vector_epilogue(np.zeros((1, DIM), np.int32), mult=np.ones(DIM, np.int32),
                                       shift=np.array(row, dtype=np.int64), zero_point=0)
            except golden.BadShiftError:
                pass
            else:
                raise AssertionError(f"golden accepted shift row {row}")
        else:
            load = load_ok_params
        await run_bad(tb, fields, want, what, load=load)
        if n % 4 == 3 or n == len(cases) - 1:
            # the unit recovers: a good command right after an error
            await random_good(tb, ops=ops_dict(tb.rng.randrange(16)), rows=tb.rng.randint(1, 20),
                              label=f"after error {what!r}")
    dut._log.info(f"{len(cases)} error cases, {tb.cmds} commands")


@cocotb.test()
async def range_boundaries_are_legal(dut):
    """Commands that touch exactly the last rows, or name out-of-range rows they never touch."""
    tb = Tb(dut, "range_boundaries_are_legal")
    await tb.start()
    A, S = ACC_ROWS, SPAD_ROWS
    legal = [
        (dict(src_addr=A - 7, dst_addr=S - 7, res_addr=S - 7, bias_addr=A - 8, mult_addr=A - 9,
              shift_addr=A - 10), 7, 0b0111),           # last rows everywhere (in place)
        (dict(src_addr=0, dst_addr=S - 1, res_addr=S - 9, bias_addr=ADDR_MAX, mult_addr=A - 1,
              shift_addr=0), 9, 0b1100),                # maxred: only dst_addr written; bias off
        (dict(src_addr=10, dst_addr=0, res_addr=ADDR_MAX, bias_addr=20, mult_addr=21,
              shift_addr=22), 5, 0b0011),               # residual off: res_addr ignored
        (dict(src_addr=3, dst_addr=5, res_addr=ADDR_MAX, bias_addr=ADDR_MAX, mult_addr=1,
              shift_addr=2), 1, 0b1010),                # maxred without add/bias, one row
    ]
    for layout, rows, bits in legal:
        ops = ops_dict(bits)
        if bits == 0b1100:
            layout["src_addr"] = 30   # keep src clear of the parameter rows
        acc, bias, mult, shift = random_params(tb.rng, rows)
        await run_good(tb, layout=layout, rows=rows, ops=ops, zp=tb.rng.randint(-128, 127),
                       acc=acc, bias=bias, mult=mult, shift=shift,
                       residual=random_residual(tb.rng, rows), label="boundary")


@cocotb.test()
async def random_soak(dut):
    """Random commands back to back: random ops, rows 1..64, zero points, blocker rates."""
    tb = Tb(dut, "random_soak")
    await tb.start()
    n = 400 if os.environ.get("KAKI_REGRESS", "0") not in ("", "0") else 40
    for i in range(n):
        rates = (0, 0) if tb.rng.random() < 0.3 else (tb.rng.randrange(0, 220),
                                                       tb.rng.randrange(0, 220))
        await random_good(tb, ops=ops_dict(tb.rng.randrange(16)), rows=tb.rng.randint(1, 64),
                          rates=rates, label=f"soak{i}")
    dut._log.info(f"{tb.cmds} commands")
