"""cocotb side of test_special_function: SFU commands checked bit-exactly against
golden.special_functions.

The reference is written from the payload docstrings (hdl_gen/descriptor.py: element ``j`` of
logical row ``r`` is lane ``j % dim`` of row ``base + (j // dim) * seg_stride + r``) and the
golden functions on logical rows. A shadow copy of every scratchpad row (backdoor writes and the
predicted results) is the expected memory; after each command the destination rows and a guard
row on each side are read back and compared, and so are the source rows.
"""
import os
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from compiler.cost import sfu_cycles
from golden import special_functions as sf
from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import EmulCmd, ErrorCode, LutCmd, NormCmd, SoftmaxCmd
from hdl_gen.special_function import SfuCommand, SfuOp
from spec.capabilities import Capabilities
from spec.descriptors import Opcode

MEM_READ_LATENCY = KakiConfig().mem_read_latency
DIM = int(os.environ["KAKI_SFU_DIM"])
LANES = int(os.environ["KAKI_SFU_LANES"])
ACC_ROWS = int(os.environ["KAKI_SFU_ACC_ROWS"])
SPAD_ROWS = int(os.environ["KAKI_SFU_SPAD_ROWS"])
BANK_ROWS = int(os.environ["KAKI_SFU_BANK_ROWS"])
SEED = int(os.environ["KAKI_SEED"])
CLK_NS = 10
LAYOUTS = {SfuOp.SOFTMAX: SoftmaxCmd, SfuOp.LAYERNORM: NormCmd, SfuOp.RMSNORM: NormCmd,
           SfuOp.LUT: LutCmd, SfuOp.EMUL: EmulCmd}
CMD_LAYOUT = data.Layout.cast(SfuCommand)
CAPS = Capabilities.from_config(KakiConfig(dim=DIM))


def ceil_div(a, b):
    return -(-a // b)


def pack_cmd(op, fields):
    layout = data.Layout.cast(LAYOUTS[op])
    full = {name: 0 for name, _ in layout}
    full.update({k: (v & 0xFF if k.endswith("zero_point") else v) for k, v in fields.items()})
    payload = layout.const(full).as_value().value
    return CMD_LAYOUT.const({"op": op, "payload": payload}).as_value().value


def spad_row_int(row):
    return int.from_bytes(np.asarray(row, dtype=np.int8).tobytes(), "little")


def acc_row_int(row):
    return int.from_bytes(np.asarray(row, dtype=np.int64).astype("<u4").tobytes(), "little")


def segment_rows(base, rows, length, stride):
    """{(r, s): scratchpad row} of a logical-row operand."""
    return {(r, s): base + s * stride + r for r in range(rows) for s in range(ceil_div(length, DIM))}


class Tb:
    def __init__(self, dut, name):
        self.dut = dut
        self.seed = SEED ^ (sum(map(ord, name)) * 0x9E3779B1 & 0x7FFFFFFF)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.spad = {}
        self.acc = {}
        dut._log.info(f"{name}: KAKI_SEED={SEED} (test seed {self.seed}) dim={DIM}")

    async def start(self):
        d = self.dut
        Clock(d.clk, CLK_NS, unit="ns").start()
        for s in ("ctl__cmd__valid", "ctl__cmd__payload", "acc_bd_wr__en", "acc_bd_wr__addr",
                  "acc_bd_wr__data", "spad_bd_rd__en", "spad_bd_rd__addr", "spad_bd_wr__en",
                  "spad_bd_wr__addr", "spad_bd_wr__data", "blk_seed", "blk_load", "blk_rate",
                  "cnt_clear"):
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

    # -- backdoor (unit idle, blockers off) --
    async def spad_put(self, rows):
        d = self.dut
        d.spad_bd_wr__en.value = 1
        for addr, row in sorted(rows.items()):
            assert 0 <= addr < SPAD_ROWS and addr % BANK_ROWS != BANK_ROWS - 1, addr
            d.spad_bd_wr__addr.value = addr
            d.spad_bd_wr__data.value = spad_row_int(row)
            self.spad[addr] = np.asarray(row, dtype=np.int8).copy()
            await FallingEdge(d.clk)
        d.spad_bd_wr__en.value = 0

    async def acc_put(self, rows):
        d = self.dut
        d.acc_bd_wr__en.value = 1
        for addr, row in sorted(rows.items()):
            d.acc_bd_wr__addr.value = addr
            d.acc_bd_wr__data.value = acc_row_int(row)
            self.acc[addr] = np.asarray(row, dtype=np.int64).copy()
            await FallingEdge(d.clk)
        d.acc_bd_wr__en.value = 0

    async def spad_get(self, addrs):
        d = self.dut
        addrs = list(addrs)
        out = {}
        for t in range(len(addrs) + MEM_READ_LATENCY - 1):
            d.spad_bd_rd__en.value = int(t < len(addrs))
            if t < len(addrs):
                d.spad_bd_rd__addr.value = addrs[t]
            await FallingEdge(d.clk)
            if t >= MEM_READ_LATENCY - 1:
                v = int(d.spad_bd_rd__data.value)
                out[addrs[t - MEM_READ_LATENCY + 1]] = np.frombuffer(
                    v.to_bytes(DIM, "little"), dtype=np.int8).copy()
        d.spad_bd_rd__en.value = 0
        return out

    async def check(self, addrs, what):
        got = await self.spad_get(sorted(set(addrs)))
        for a, row in got.items():
            want = self.spad.get(a)
            if want is None:
                continue
            if not np.array_equal(row, want):
                raise AssertionError(f"{what}: scratchpad row {a}: got {row.tolist()} want "
                                     f"{want.tolist()} (SEED={SEED})")

    # -- operands --
    def logical(self, base, rows, length, stride):
        x = np.zeros((rows, length), dtype=np.int8)
        for (r, s), a in segment_rows(base, rows, length, stride).items():
            n = min(DIM, length - s * DIM)
            x[r, s * DIM:s * DIM + n] = self.spad[a][:n]
        return x

    def params(self, base, length):
        return np.concatenate([self.acc[base + s] for s in range(ceil_div(length, DIM))])[
            :length].astype(np.int64).astype(np.int32)

    def expected(self, op, f):
        rows, length, stride = f["rows"], f["length"], f["seg_stride"]
        src = f["a_addr"] if op == SfuOp.EMUL else f["src_addr"]
        x = self.logical(src, rows, length, stride)
        if op == SfuOp.SOFTMAX:
            return sf.softmax(x, mult=f["mult"], causal=bool(f["causal"]),
                              mask_offset=f["mask_offset"])
        if op in (SfuOp.LAYERNORM, SfuOp.RMSNORM):
            kw = dict(eps=(f["eps_mant"], f["eps_exp"]), shift=f["shift"],
                      in_zero_point=f["in_zero_point"], out_zero_point=f["out_zero_point"])
            gamma = self.params(f["gamma_addr"], length)
            if op == SfuOp.RMSNORM:
                return sf.rms_norm(x, gamma, **kw)
            return sf.layer_norm(x, gamma, self.params(f["beta_addr"], length), **kw)
        if op == SfuOp.LUT:
            table = np.concatenate([self.spad[f["table_addr"] + q] for q in range(256 // DIM)])
            return sf.lookup(x, table)
        b = self.logical(f["b_addr"], rows, length, stride)
        return sf.emul(x, b, mult=f["mult"], shift=f["shift"], a_zero_point=f["a_zero_point"],
                       b_zero_point=f["b_zero_point"], out_zero_point=f["out_zero_point"])

    def zero_rows(self, op, f):
        """Rows of a norm whose D is 0 (the unit skips their division)."""
        if op not in (SfuOp.LAYERNORM, SfuOp.RMSNORM):
            return 0
        x = self.logical(f["src_addr"], f["rows"], f["length"], f["seg_stride"])
        s1, s2 = sf.norm_stats(x, in_zero_point=f["in_zero_point"], rms=op == SfuOp.RMSNORM)
        return int((f["length"] * s2 - s1 * s1 == 0).sum())

    def apply(self, f, y):
        """Write result rows into the shadow: lanes past the row's length are 0."""
        rows, length = y.shape
        out = {}
        for (r, s), a in segment_rows(f["dst_addr"], rows, length, f["seg_stride"]).items():
            row = np.zeros(DIM, dtype=np.int8)
            n = min(DIM, length - s * DIM)
            row[:n] = y[r, s * DIM:s * DIM + n]
            out[a] = row
        self.spad.update(out)
        return out

    # -- commands --
    async def run(self, op, f, *, expect=ErrorCode.OK, rate=0, what=""):
        d = self.dut
        what = what or f"{op.name} {f}"
        y = self.expected(op, f) if expect == ErrorCode.OK else None
        zero_rows = self.zero_rows(op, f) if expect == ErrorCode.OK else 0
        d.ctl__cmd__payload.value = pack_cmd(op, f)
        d.ctl__cmd__valid.value = 1
        d.cnt_clear.value = 1
        d.blk_rate.value = rate
        await ReadOnly()
        assert int(d.ctl__cmd__ready.value) == 1, "the SFU is not idle before a command"
        await RisingEdge(d.clk)
        t0 = get_sim_time("ns")
        await FallingEdge(d.clk)
        d.ctl__cmd__valid.value = 0
        d.cnt_clear.value = 0
        assert int(d.ctl__busy.value) == 1 and int(d.ctl__cmd__ready.value) == 0
        if expect == ErrorCode.OK:     # the cost model's cycles, with room for denied grants
            budget = 400 + 2 * sfu_cycles(Opcode[op.name], f["rows"], f["length"], CAPS,
                                          lanes=LANES) \
                * (1 + rate // 32)
        else:
            budget = 400
        try:
            await with_timeout(RisingEdge(d.ctl__done), budget * CLK_NS, "ns")
        except cocotb.triggers.SimTimeoutError:
            raise AssertionError(f"timed out after {budget} cycles waiting for ctl__done of "
                                 f"{what} (SEED={SEED})") from None
        cycles = round((get_sim_time("ns") - t0) / CLK_NS)
        await ReadOnly()
        err = ErrorCode(int(d.ctl__error.value))
        writes, denied = int(d.cnt_writes.value), int(d.cnt_wr_denied.value)
        await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.blk_rate.value = 0
        assert int(d.ctl__done.value) == 0, "done must be a one-cycle pulse"
        assert int(d.ctl__busy.value) == 0 and int(d.ctl__cmd__ready.value) == 1
        assert err == expect, f"{what}: error {err.name}, expected {expect.name} (SEED={SEED})"
        if expect != ErrorCode.OK:
            assert writes == 0, f"{what}: a rejected command wrote {writes} rows"
            return None
        out = self.apply(f, y)
        if rate == 0:              # no denied grant: the cost model's cycles exactly
            model = sfu_cycles(Opcode[op.name], f["rows"], f["length"], CAPS,
                               zero_rows=zero_rows, lanes=LANES)
            assert cycles == model, (f"{what}: {cycles} cycles, the cost model "
                                     f"(compiler/cost.py sfu_cycles) says {model} (SEED={SEED})")
        assert writes - denied == len(out), (what, writes, denied, len(out))
        guards = {a + k for a in out for k in (-1, 1)} - set(out)
        await self.check(list(out) + [g for g in guards if 0 <= g < SPAD_ROWS], what)
        return y


class Placer:
    """Non-overlapping scratchpad regions inside one bank, clear of each bank's last row."""

    def __init__(self, tb):
        self.tb, self.next = tb, {b: b * BANK_ROWS + 1 for b in range(SPAD_ROWS // BANK_ROWS)}

    def region(self, rows, length, stride, bank=None):
        span = (ceil_div(length, DIM) - 1) * stride + rows
        banks = [bank] if bank is not None else list(self.next)
        self.tb.rng.shuffle(banks)
        for b in banks:
            start = self.next[b]
            if start + span + 1 < (b + 1) * BANK_ROWS - 1:
                self.next[b] = start + span + 2
                return start
        raise AssertionError(f"no room for {span} rows")


def rows_of(rng, kind, rows, length):
    if kind == "uniform":
        return rng.integers(-128, 128, (rows, length))
    if kind == "equal":
        return np.full((rows, length), rng.integers(-128, 128))
    if kind == "min":
        return np.full((rows, length), -128)
    if kind == "dominant":
        x = rng.integers(-128, -90, (rows, length))
        x[np.arange(rows), rng.integers(0, length, rows)] = 127
        return x
    return np.clip(np.rint(rng.normal(0, rng.uniform(0.5, 40), (rows, length))), -128, 127)


async def load_operand(tb, base, x, stride):
    rows, length = x.shape
    put = {}
    for (r, s), a in segment_rows(base, rows, length, stride).items():
        row = tb.np_rng.integers(-128, 128, DIM)            # lanes past the row: junk
        n = min(DIM, length - s * DIM)
        row[:n] = x[r, s * DIM:s * DIM + n]
        put[a] = row
    await tb.spad_put(put)


async def random_command(tb, pl, op, *, rows=None, length=None, in_place=False, rate=0):
    rng, nprng = tb.rng, tb.np_rng
    rows = rows or rng.randint(1, 4)
    length = length or rng.choice([1, 2, DIM - 1, DIM, DIM + 1, 3 * DIM, 5 * DIM + 3,
                                   rng.randint(1, 8 * DIM)])
    stride = rows + (rng.choice([0, 0, 1, 3]) if length <= 16 * DIM else 0)   # long rows: dense
    kind = rng.choice(["uniform", "normal", "equal", "min", "dominant"])
    src = pl.region(rows, length, stride)
    dst = src if in_place else pl.region(rows, length, stride)
    await load_operand(tb, src, rows_of(nprng, kind, rows, length).astype(np.int8), stride)
    f = dict(dst_addr=dst, rows=rows, length=length, seg_stride=stride)
    if op == SfuOp.SOFTMAX:
        f.update(src_addr=src, mult=rng.choice([0, 1, 300, 6000, rng.randint(0, 65535)]),
                 causal=rng.randint(0, 1), mask_offset=rng.choice([0, 0, 1, rng.randint(0, length)]))
    elif op in (SfuOp.LAYERNORM, SfuOp.RMSNORM):
        segs = ceil_div(length, DIM)
        gam = rng.randrange(0, ACC_ROWS // 2 - segs + 1)
        bet = rng.randrange(ACC_ROWS // 2, ACC_ROWS - segs + 1)
        big = rng.random() < 0.3
        lim = 2**31 if big else 2**15
        await tb.acc_put({gam + s: nprng.integers(-lim, lim, DIM) for s in range(segs)})
        await tb.acc_put({bet + s: nprng.integers(-2**31 if big else -2**20, 2**31 if big else 2**20, DIM)
                          for s in range(segs)})
        f.update(src_addr=src, gamma_addr=gam, beta_addr=bet,
                 shift=rng.choice([0, 1, 16, 20, 24, rng.randint(0, 63)]),
                 in_zero_point=rng.randint(-128, 127), out_zero_point=rng.randint(-128, 127),
                 eps_mant=rng.choice([0, rng.randint(0, 65535)]), eps_exp=rng.randint(0, 63))
    elif op == SfuOp.LUT:
        table = pl.region(256 // DIM, 1, 1)
        await tb.spad_put({table + q: nprng.integers(-128, 128, DIM) for q in range(256 // DIM)})
        f.update(src_addr=src, table_addr=table)
    else:
        b = pl.region(rows, length, stride)
        await load_operand(tb, b, nprng.integers(-128, 128, (rows, length)).astype(np.int8), stride)
        f.update(a_addr=src, b_addr=b, mult=rng.randint(0, 65535), shift=rng.randint(0, 40),
                 a_zero_point=rng.randint(-128, 127), b_zero_point=rng.randint(-128, 127),
                 out_zero_point=rng.randint(-128, 127))
    return f


@cocotb.test()
async def random_ops(dut):
    """Every op, random shapes (rows of 1 to 8 array widths, partial last segments), strides,
    data, parameters and grant denials on every port; some in place."""
    tb = Tb(dut, "random_ops")
    await tb.start()
    for k in range(30):
        op = list(SfuOp)[k % len(SfuOp)]
        pl = Placer(tb)
        in_place = op != SfuOp.EMUL and tb.rng.random() < 0.25
        f = await random_command(tb, pl, op, in_place=in_place)
        rate = tb.rng.choice([0, 0, 40, 120])
        await tb.run(op, f, rate=rate, what=f"#{k} {op.name} rate={rate} {f}")


@cocotb.test()
async def long_rows_and_edges(dut):
    """Rows much longer than the array (a norm of 4096 channels, a 1000-long softmax), length 1,
    the causal mask's first and last rows, and 8-row commands."""
    tb = Tb(dut, "long_rows_and_edges")
    await tb.start()
    cases = [(SfuOp.SOFTMAX, dict(rows=1, length=1000)), (SfuOp.RMSNORM, dict(rows=1, length=4096)),
             (SfuOp.LAYERNORM, dict(rows=2, length=1)), (SfuOp.SOFTMAX, dict(rows=8, length=8)),
             (SfuOp.LUT, dict(rows=8, length=3 * DIM)), (SfuOp.EMUL, dict(rows=1, length=1)),
             (SfuOp.LAYERNORM, dict(rows=1, length=700))]
    for op, shape in cases:
        pl = Placer(tb)
        f = await random_command(tb, pl, op, **shape)
        await tb.run(op, f, rate=tb.rng.choice([0, 60]), what=f"{op.name} {shape}")


@cocotb.test()
async def write_backpressure(dut):
    """Long rows while the scratchpad denies most of the unit's writes: the output FIFO fills, the
    unit must hold back its reads (credits) rather than drop rows; every row still lands."""
    tb = Tb(dut, "write_backpressure")
    await tb.start()
    for op, rate in ((SfuOp.EMUL, 230), (SfuOp.SOFTMAX, 200), (SfuOp.LUT, 240)):
        pl = Placer(tb)
        f = await random_command(tb, pl, op, rows=2, length=40 * DIM)
        await tb.run(op, f, rate=rate, what=f"{op.name} under write backpressure {rate}/256")


@cocotb.test()
async def error_commands(dut):
    """Each error: nothing written, the unit ready again; then a good command still works."""
    tb = Tb(dut, "error_commands")
    await tb.start()
    pl = Placer(tb)
    good = await random_command(tb, pl, SfuOp.LAYERNORM, rows=2, length=2 * DIM)
    S, L, R = ErrorCode.BAD_SHAPE, ErrorCode.LOCAL_RANGE, ErrorCode.RESERVED_BITS
    cases = [
        (SfuOp.LAYERNORM, dict(rows=0), S), (SfuOp.LAYERNORM, dict(length=0), S),
        (SfuOp.RMSNORM, dict(length=4097), S), (SfuOp.LAYERNORM, dict(reserved=1), R),
        (SfuOp.LAYERNORM, dict(dst_addr=SPAD_ROWS - 2), L),
        (SfuOp.LAYERNORM, dict(src_addr=2**20 - 1), L),
        (SfuOp.LAYERNORM, dict(seg_stride=SPAD_ROWS), L),
        (SfuOp.LAYERNORM, dict(gamma_addr=ACC_ROWS - 1), L),
        (SfuOp.LAYERNORM, dict(beta_addr=ACC_ROWS - 1), L),
        (SfuOp.SOFTMAX, dict(reserved=1 << 98), R), (SfuOp.SOFTMAX, dict(length=0), S),
        (SfuOp.SOFTMAX, dict(rows=SPAD_ROWS), L),
        (SfuOp.LUT, dict(table_addr=SPAD_ROWS - 256 // DIM + 1), L),
        (SfuOp.EMUL, dict(a_addr=0, b_addr=SPAD_ROWS, dst_addr=1), L),
    ]
    for op, over, code in cases:
        f = dict(good)
        if op == SfuOp.EMUL:
            f = dict(rows=1, length=1, seg_stride=1, dst_addr=1, a_addr=0, b_addr=0)
        elif op == SfuOp.LUT:
            f = dict(src_addr=good["src_addr"], dst_addr=good["dst_addr"], rows=1, length=1,
                     seg_stride=1, table_addr=0)
        elif op == SfuOp.SOFTMAX:
            f = dict(src_addr=good["src_addr"], dst_addr=good["dst_addr"], rows=2, length=2 * DIM,
                     seg_stride=good["seg_stride"])
        f.update(over)
        await tb.run(op, f, expect=code, what=f"{op.name} {over}")
    await tb.run(SfuOp.LAYERNORM, good, what="good after errors")
    # RMSNORM ignores beta: out of range there is fine
    await tb.run(SfuOp.RMSNORM, dict(good, beta_addr=2**20 - 1), what="RMSNORM, beta ignored")
