"""cocotb side of test_axi_arbiter: two cocotbext-axi ``AxiMaster``s on ``m__0__*``/``m__1__*``, one
``AxiRam`` on ``s__*``, random pauses on every channel of all three models.

Each manager checks its own reads against a Python byte model of the regions it owns; at the end
the RAM's contents are compared with the models (a misrouted or mixed W beat would corrupt a
region). The AXI checker (verif/axi_checker.py) on ``s`` checks the AXI rules the arbiter is
responsible for — valid/payload stable until ready on every channel, W bursts in AW order with
exactly ``awlen + 1`` beats and ``wlast`` on the last, strobes inside the beat lanes, responses
only for an outstanding ID, per-ID order — and issued IDs carrying a valid manager index. Seeds
come from ``KAKI_SEED`` (logged).
"""
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiMaster, AxiRam, AxiResp

from verif.axi_checker import Axi4Checker, BusMonitor, SignalSampler

N, DATA_BYTES, ID_BITS = 2, 8, 4
RAM_SIZE = 64 * 1024
MAX_SIZE = DATA_BYTES.bit_length() - 1


def seed_of(dut, name):
    seed = int(os.environ["KAKI_SEED"])
    dut._log.info(f"{name}: KAKI_SEED={seed}")
    return seed


def _pause_gen(rng, p):
    while True:
        yield rng.random() < p


class Tb:
    def __init__(self, dut, rng):
        self.dut, self.rng = dut, rng
        self.ram = AxiRam(AxiBus.from_prefix(dut, "s", bus_separator="__"), dut.clk, dut.rst,
                          size=RAM_SIZE)
        self.mgr = [AxiMaster(AxiBus.from_prefix(dut, f"m__{i}", bus_separator="__"), dut.clk,
                              dut.rst) for i in range(N)]
        self.errors = []
        self.max_w_pending = 0
        self.max_w_pending_mixed = 0
        self.rr_checked = 0
        self.mon = None

    async def reset(self):
        d = self.dut
        Clock(d.clk, 10, unit="ns").start()
        d.rst.value = 1
        for _ in range(3):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0
        await FallingEdge(d.clk)

    def set_pauses(self, p_sub, p_mgr):
        chans = [(self.ram.write_if.aw_channel, p_sub), (self.ram.write_if.w_channel, p_sub),
                 (self.ram.write_if.b_channel, p_sub), (self.ram.read_if.ar_channel, p_sub),
                 (self.ram.read_if.r_channel, p_sub)]
        for mg in self.mgr:
            chans += [(mg.write_if.aw_channel, p_mgr), (mg.write_if.w_channel, p_mgr),
                      (mg.write_if.b_channel, p_mgr), (mg.read_if.ar_channel, p_mgr),
                      (mg.read_if.r_channel, p_mgr)]
        for ch, p in chans:
            ch.set_pause_generator(_pause_gen(random.Random(self.rng.getrandbits(32)), p))

    def start_monitor(self, check_rr=False):
        """The AXI checker (verif/axi_checker.py) on ``s``, with the arbiter's own rules: issued IDs
        carry a valid manager index; counts of W bursts pending per manager; with ``check_rr``
        round-robin grants on the manager side. Returns the cocotb task of the manager-side
        checks (or None); ``self.mon`` is the checker."""
        core = Axi4Checker(None, DATA_BYTES, bus="s", ids=range(N << ID_BITS))
        core.listeners.append(self._on_handshake)
        self.mon = BusMonitor(SignalSampler(self.dut, "s__", core, edge="readonly"))
        return cocotb.start_soon(self._round_robin()) if check_rr else None

    def _on_handshake(self, cycle, ch, f):
        core = self.mon.core
        pending = list(core.aw)           # AWs at s whose W burst is not complete, in order
        self.max_w_pending = max(self.max_w_pending, len(pending))
        if len({b.id >> ID_BITS for b in pending}) > 1:
            self.max_w_pending_mixed = max(self.max_w_pending_mixed, len(pending))

    async def _round_robin(self):
        d = self.dut
        last = {"ar": None, "aw": None}
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            for ch in ("ar", "aw"):
                vs = [int(getattr(d, f"m__{i}__{ch}valid").value) for i in range(N)]
                rs = [int(getattr(d, f"m__{i}__{ch}ready").value) for i in range(N)]
                g = [i for i in range(N) if vs[i] and rs[i]]
                if len(g) > 1:
                    self.errors.append(f"{ch}: two managers granted at once")
                if g:
                    if all(vs) and last[ch] is not None:
                        self.rr_checked += 1
                        if g[0] == last[ch]:
                            self.errors.append(f"{ch}: manager {g[0]} granted twice in a row "
                                               f"while the other waited")
                    last[ch] = g[0]

    def stop_monitor(self, rr=None):
        self.mon.stop()
        if rr is not None:
            rr.cancel()

    def check_errors(self):
        self.mon.check()
        assert not self.errors, self.errors[:10]


def rand_op(rng, lo, hi):
    """(address, length, size) of a random access inside [lo, hi)."""
    size = rng.randint(0, MAX_SIZE)
    n = rng.randint(1, 48 << size)
    n = min(n, hi - lo)
    a = rng.randrange(lo, hi - n + 1)
    return a, n, size


@cocotb.test()
async def t_random_concurrent(dut):
    """Both managers run several concurrent workers of random reads/writes (random lengths,
    addresses, sizes; bursts cross 4 KiB lines and AxiMaster splits them) with pauses everywhere."""
    seed = seed_of(dut, "t_random_concurrent")
    rng = random.Random(seed)
    tb = Tb(dut, rng)
    tb.set_pauses(0.3, 0.3)
    await tb.reset()
    rr = tb.start_monitor()
    # make regress: 200 operations per worker
    ops = 200 if os.environ.get("KAKI_REGRESS", "0") not in ("", "0") else 20
    workers_per_mgr, region = 3, 8192
    init = bytes(rng.getrandbits(8) for _ in range(RAM_SIZE))
    tb.ram.write(0, init)
    models = {}
    counts = [0] * N

    async def worker(i, w, wseed):
        wr = random.Random(wseed)
        lo = (i * workers_per_mgr + w) * region
        hi = lo + region
        model = bytearray(init[lo:hi])
        models[(i, w)] = (lo, model)
        for k in range(ops):
            a, n, size = rand_op(wr, lo, hi)
            if wr.random() < 0.5:
                data = bytes(wr.getrandbits(8) for _ in range(n))
                resp = await tb.mgr[i].write(a, data, size=size)
                assert resp.resp == AxiResp.OKAY, f"m{i} write {a:#x}+{n}: {resp.resp}"
                model[a - lo:a - lo + n] = data
            else:
                resp = await tb.mgr[i].read(a, n, size=size)
                assert resp.resp == AxiResp.OKAY, f"m{i} read {a:#x}+{n}: {resp.resp}"
                assert resp.data == bytes(model[a - lo:a - lo + n]), \
                    f"m{i} worker {w} op {k}: read {a:#x}+{n} size {size} mismatch"
            counts[i] += 1

    tasks = [cocotb.start_soon(worker(i, w, rng.getrandbits(32)))
             for i in range(N) for w in range(workers_per_mgr)]
    for t in tasks:
        await with_timeout(t, 4, "ms")
    tb.mon.finish("end of traffic")
    tb.stop_monitor(rr)
    for (i, w), (lo, model) in models.items():
        assert tb.ram.read(lo, len(model)) == bytes(model), f"RAM region of m{i} worker {w}"
    dut._log.info(f"ops per manager {counts}, max W bursts pending {tb.max_w_pending}")
    tb.check_errors()


@cocotb.test()
async def t_write_interleave(dut):
    """Both managers issue many concurrent multi-beat write bursts; W beats follow AW order and
    never mix (every byte lands where its own manager put it)."""
    seed = seed_of(dut, "t_write_interleave")
    rng = random.Random(seed)
    tb = Tb(dut, rng)
    tb.set_pauses(0.4, 0.1)
    await tb.reset()
    rr = tb.start_monitor()
    tb.ram.write(0, bytes(RAM_SIZE))
    model = bytearray(RAM_SIZE)
    half = RAM_SIZE // N

    async def burst(i, a, data):
        resp = await tb.mgr[i].write(a, data)
        assert resp.resp == AxiResp.OKAY

    for rnd in range(6):
        tasks = []
        for i in range(N):
            for k in range(4):
                # each (round, manager, slot) owns a 512-byte slot; bursts of 8..32 beats
                a = i * half + (rnd * 4 + k) * 512 + rng.randrange(0, 4) * DATA_BYTES
                n = DATA_BYTES * rng.randint(8, 32)
                data = bytes([(0x10 * (i + 1) + k) & 0xff]) + \
                    bytes(rng.getrandbits(8) for _ in range(n - 1))
                model[a:a + n] = data
                tasks.append(cocotb.start_soon(burst(i, a, data)))
        for t in tasks:
            await with_timeout(t, 2, "ms")
    tb.mon.finish("end of traffic")
    tb.stop_monitor(rr)
    got = tb.ram.read(0, RAM_SIZE)
    bad = [a for a in range(RAM_SIZE) if got[a] != model[a]]
    assert not bad, f"{len(bad)} bytes wrong, first at {bad[0]:#x}"
    # read back through the arbiter too
    for i in range(N):
        r = await tb.mgr[i].read(i * half, 4096)
        assert r.data == bytes(model[i * half:i * half + 4096])
    dut._log.info(f"max W bursts pending at s {tb.max_w_pending} "
                  f"(mixed managers {tb.max_w_pending_mixed})")
    assert tb.max_w_pending_mixed >= 2, "W FIFO never held bursts of both managers"
    tb.check_errors()


@cocotb.test()
async def t_fairness(dut):
    """Under saturation (both managers always requesting) grants alternate on AR and AW, and both
    managers complete a fair share of transactions."""
    seed = seed_of(dut, "t_fairness")
    rng = random.Random(seed)
    tb = Tb(dut, rng)
    tb.set_pauses(0.2, 0.0)
    await tb.reset()
    rr = tb.start_monitor(check_rr=True)
    done = [[0, 0] for _ in range(N)]      # [reads, writes] per manager
    stop = [False]

    async def reader(i, base):
        while not stop[0]:
            await tb.mgr[i].read(base, DATA_BYTES)
            done[i][0] += 1

    async def writer(i, base):
        while not stop[0]:
            await tb.mgr[i].write(base, bytes(DATA_BYTES * 2))
            done[i][1] += 1

    tasks = []
    for i in range(N):
        for k in range(4):
            tasks.append(cocotb.start_soon(reader(i, i * 0x4000 + k * 64)))
            tasks.append(cocotb.start_soon(writer(i, i * 0x4000 + 0x1000 + k * 64)))
    for _ in range(3000):
        await RisingEdge(dut.clk)
    stop[0] = True
    for t in tasks:
        await with_timeout(t, 1, "ms")
    tb.mon.finish("end of traffic")
    tb.stop_monitor(rr)
    dut._log.info(f"completed [reads, writes] per manager: {done}; "
                  f"{tb.rr_checked} contended grants checked")
    for kind in range(2):
        a, b = done[0][kind], done[1][kind]
        assert min(a, b) > 0, f"a manager starved: {done}"
        assert min(a, b) / max(a, b) > 0.8, f"unfair share: {done}"
    assert tb.rr_checked > 100, tb.rr_checked
    tb.check_errors()
