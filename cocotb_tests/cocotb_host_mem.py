"""cocotb side of the host memory model test: ``kaki_host_mem`` alone, as the simulation top.

A trusted manager (cocotbext-axi ``AxiMaster``) checks the model's AXI behaviour against its
backdoor (``HostMemory``), the AXI checker (verif/axi_checker.py) watches the port and the
model's handshake counters must agree with it; raw pin wiggling checks that the
protocol-violation flags fire.
Seeds come from ``KAKI_SEED`` (logged).
"""
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge
from cocotbext.axi import AxiBus, AxiMaster, AxiResp

from verif.axi_checker import Axi4Checker, BusMonitor, SignalSampler
from verif.host_mem import HostMemory

DB = 8
WORDS = int(os.environ["KAKI_HM_WORDS"])
SIZE = WORDS * DB
MANAGER_OUTS = ("awid", "awaddr", "awlen", "awsize", "awburst", "awprot", "awvalid", "wdata",
                "wstrb", "wlast", "wvalid", "bready", "arid", "araddr", "arlen", "arsize",
                "arburst", "arprot", "arvalid", "rready")


def seed_of(dut, name):
    seed = int(os.environ["KAKI_SEED"])
    dut._log.info(f"{name}: KAKI_SEED={seed}")
    return seed


async def setup(dut, seed, *, stall=0.0, latency=2, master=True, max_len=255):
    Clock(dut.clk, 10, unit="ns").start()
    hm = HostMemory(dut, "", data_bytes=DB, words=WORDS)
    hm.configure(latency=latency, stall=stall, seed=seed, max_len=max_len)
    dut.rst.value = 1
    axim = None
    if master:
        axim = AxiMaster(AxiBus.from_prefix(dut, "s", bus_separator="__"), dut.clk, dut.rst)
    else:
        for n in MANAGER_OUTS:
            getattr(dut, "s__" + n).value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    return hm, axim


@cocotb.test()
async def t_hm_axi_vs_backdoor(dut):
    """AxiMaster writes/reads at random alignments and lengths (several in flight, random stalls)
    agree with the backdoor; no protocol flag from a compliant manager."""
    seed = seed_of(dut, "t_hm_axi_vs_backdoor")
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    hm, axim = await setup(dut, seed, stall=0.3, latency=4)
    # the model's side of the protocol (R/B handshakes, RLAST, IDs, responses) and the manager's
    mon = BusMonitor(SignalSampler(dut, "s__", Axi4Checker(None, DB, bus="s")))
    mirror = nrng.integers(0, 256, 64 * 1024, dtype=np.uint8)
    await hm.load(0, mirror)
    for _ in range(40):
        a = rng.randrange(60 * 1024)
        n = rng.randint(1, 700)
        buf = nrng.integers(0, 256, n, dtype=np.uint8)
        if rng.random() < 0.5:
            resp = await axim.write(a, buf.tobytes())
            assert resp.resp == AxiResp.OKAY
        else:
            await hm.load(a, buf)
        mirror[a:a + n] = buf
        lo = max(0, a - 20)
        got = np.frombuffer(await hm.read(lo, n + 40), np.uint8)
        assert (got == mirror[lo:lo + n + 40]).all(), f"backdoor view after writing {a:#x}+{n}"
    # several reads in flight at once
    reqs = [(rng.randrange(60 * 1024), rng.randint(1, 300)) for _ in range(8)]
    tasks = [cocotb.start_soon(axim.read(a, n)) for a, n in reqs]
    for (a, n), t in zip(reqs, tasks):
        r = await t
        assert r.resp == AxiResp.OKAY
        assert r.data == mirror[a:a + n].tobytes(), f"AXI read {a:#x}+{n}"
    assert hm.rd_max_outstanding >= 2, hm.rd_max_outstanding
    # AxiMaster starts unaligned transfers at unaligned addresses (legal AXI; bit 6 is a DMA rule)
    assert hm.prot_err & ~0x40 == 0, hm.prot_err_text()
    await FallingEdge(dut.clk)
    mon.finish("AxiMaster traffic")
    mon.stop()
    # the model's own handshake counters are a sanity count of what the checker saw
    core = mon.core
    assert (hm.ar_count, hm.aw_count) == (core.ar_count, core.aw_count), \
        f"model counted {hm.ar_count} AR / {hm.aw_count} AW, the checker {core.summary()}"
    assert abs(hm.rd_max_outstanding - core.max_reads_seen) <= 1, (hm.rd_max_outstanding, core.summary())
    dut._log.info(f"{hm.ar_count} AR, {hm.aw_count} AW, max reads outstanding {hm.rd_max_outstanding}")


@cocotb.test()
async def t_hm_vpi_backdoor(dut):
    """Small transfers over VPI (``mem=``, the array is public in this build) and file transfers see
    the same memory at random alignments, across the wrap point, and the AXI port sees VPI writes."""
    seed = seed_of(dut, "t_hm_vpi_backdoor")
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    by_file, axim = await setup(dut, seed)
    by_vpi = HostMemory(dut, "", data_bytes=DB, words=WORDS, mem=dut.mem)   # same backdoor file
    mirror = nrng.integers(0, 256, SIZE, dtype=np.uint8)
    await by_file.load(0, mirror)
    for i in range(60):
        n = rng.choice((1, 7, 8, 9, rng.randint(1, 600)))
        a = rng.randrange(SIZE) if i % 10 else SIZE - rng.randint(1, 16)
        buf = nrng.integers(0, 256, n, dtype=np.uint8)
        writer, reader = (by_vpi, by_file) if i % 2 else (by_file, by_vpi)
        await writer.load(a, buf)
        idx = (a + np.arange(n)) % SIZE
        mirror[idx] = buf
        lo = (a - 9) % SIZE
        got = np.frombuffer(await reader.read(lo, n + 18), np.uint8)
        assert (got == mirror[(lo + np.arange(n + 18)) % SIZE]).all(), f"after writing {a:#x}+{n}"
    a = rng.randrange(SIZE // 2)
    by_vpi._poke_words(a // DB, nrng.integers(0, 256, 4 * DB, dtype=np.uint8))
    r = await axim.read(a // DB * DB, 4 * DB)
    assert r.data == await by_vpi.read(a // DB * DB, 4 * DB), "AXI read after a VPI write"


@cocotb.test()
async def t_hm_latency(dut):
    """Cycles from the AR handshake to the first R beat equal cfg_latency (minimum 2)."""
    seed = seed_of(dut, "t_hm_latency")
    hm, axim = await setup(dut, seed)
    for lat in (0, 1, 2, 3, 7, 20):
        hm.set_latency(lat)
        task = cocotb.start_soon(axim.read(0x100, 8))
        cycle, t_ar, t_r = 0, None, None
        while t_r is None:
            await RisingEdge(dut.clk)
            cycle += 1
            if t_ar is None and int(dut.s__arvalid.value) and int(dut.s__arready.value):
                t_ar = cycle
            if t_ar is not None and int(dut.s__rvalid.value):
                t_r = cycle
        await task
        assert t_r - t_ar == max(lat, 2), f"latency {lat}: first R beat after {t_r - t_ar} cycles"


@cocotb.test()
async def t_hm_error_window(dut):
    """Accesses overlapping [base, limit) answer the configured error; writes there are dropped."""
    seed = seed_of(dut, "t_hm_error_window")
    nrng = np.random.default_rng(seed)
    hm, axim = await setup(dut, seed, stall=0.2)
    mirror = nrng.integers(0, 256, 8192, dtype=np.uint8)
    await hm.load(0, mirror)
    for resp in (AxiResp.SLVERR, AxiResp.DECERR):
        hm.set_error_window(0x1003, 0x1005, int(resp))
        r = await axim.read(0x1000, 8)
        assert r.resp == resp
        r = await axim.read(0x0ff0, 16)          # two beats below the window
        assert r.resp == AxiResp.OKAY and r.data == mirror[0xff0:0x1000].tobytes()
        r = await axim.read(0x0ff8, 24)          # the middle beat overlaps
        assert r.resp == resp
        w = await axim.write(0x1000, b"\xaa" * 8)
        assert w.resp == resp
        w = await axim.write(0x1008, b"\x55" * 8)
        assert w.resp == AxiResp.OKAY
        mirror[0x1008:0x1010] = 0x55
        got = np.frombuffer(await hm.read(0xff0, 40), np.uint8)
        assert (got == mirror[0xff0:0x1018]).all(), "write inside the window was not dropped"
    hm.clear_error_window()
    r = await axim.read(0x1000, 8)
    assert r.resp == AxiResp.OKAY and r.data == mirror[0x1000:0x1008].tobytes()


async def _drive(dut, ch, fields, *, cycles=None):
    """Drive raw manager signals of channel ch ("ar"/"aw"/"w") until the handshake (or for a fixed
    number of cycles), then drop valid."""
    await FallingEdge(dut.clk)
    for k, v in fields.items():
        getattr(dut, f"s__{ch}{k}").value = v
    getattr(dut, f"s__{ch}valid").value = 1
    n = 0
    while True:
        await RisingEdge(dut.clk)
        n += 1
        if cycles is not None and n >= cycles:
            break
        if cycles is None and int(getattr(dut, f"s__{ch}ready").value):
            break
    await FallingEdge(dut.clk)
    getattr(dut, f"s__{ch}valid").value = 0


@cocotb.test()
async def t_hm_prot_flags(dut):
    """Each protocol-violation flag fires on its violation (and only it)."""
    seed = seed_of(dut, "t_hm_prot_flags")
    hm, _ = await setup(dut, seed, master=False, max_len=3)
    ok_ax = dict(addr=0x2000, len=1, size=3, burst=1)
    cases = [
        (0, "ar", ok_ax | dict(addr=0x2ff8)),
        (1, "aw", ok_ax | dict(addr=0x2ff8)),
        (2, "ar", ok_ax | dict(size=2)),
        (3, "aw", ok_ax | dict(burst=2)),
        (4, "ar", ok_ax | dict(len=4)),
        (6, "ar", ok_ax | dict(addr=0x2003)),
    ]
    for bit, ch, fields in cases + [(None, "ar", ok_ax)]:
        dut.rst.value = 1
        await RisingEdge(dut.clk)
        dut.rst.value = 0
        await _drive(dut, ch, fields)
        await RisingEdge(dut.clk)
        exp = 0 if bit is None else 1 << bit
        assert hm.prot_err == exp, f"{ch} {fields}: flags {hm.prot_err:#04x}, expected {exp:#04x}"
    # WLAST on the first beat of a two-beat burst
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    await _drive(dut, "aw", ok_ax)
    await _drive(dut, "w", dict(data=0, strb=0xFF, last=1))
    await RisingEdge(dut.clk)
    assert hm.prot_err == 1 << 5, hm.prot_err_text()
    # VALID dropped before READY: make the model stall (almost) always
    dut.rst.value = 1
    hm.set_backpressure(255)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    for _ in range(20):
        await _drive(dut, "ar", ok_ax, cycles=1)
        await RisingEdge(dut.clk)
        if hm.prot_err & 0x80:
            break
    assert hm.prot_err & 0x80, hm.prot_err_text()


@cocotb.test()
async def t_hm_blackhole(dut):
    """The black hole: bursts overlapping [base, limit) are swallowed (no R/B, written data
    dropped) while other IDs are served; a later burst of a swallowed one's ID waits behind it;
    released, they are answered in order per ID (reads with the memory's data). Refusing, the
    model holds AR/AW READY low for such a burst until released. Counters, and the AXI checker on
    the port (per-ID order, a response only for an outstanding request) clean."""
    seed = seed_of(dut, "t_hm_blackhole")
    nrng = np.random.default_rng(seed)
    hm, axim = await setup(dut, seed, stall=0.1)
    mon = BusMonitor(SignalSampler(dut, "s__", Axi4Checker(None, DB, bus="s")))
    mirror = nrng.integers(0, 256, 16384, dtype=np.uint8)
    await hm.load(0, mirror)

    async def pending(task, cycles=200):
        for _ in range(cycles):
            await RisingEdge(dut.clk)
            if task.done():
                return False
        return True
    hm.set_blackhole(0x2104, 0x2105)
    swallowed = cocotb.start_soon(axim.read(0x20f8, 24, arid=1))        # middle beat in the hole
    behind = cocotb.start_soon(axim.read(0x0100, 8, arid=1))             # same ID: waits
    other = await axim.read(0x0200, 16, arid=2)                          # another ID: served
    assert other.data == mirror[0x200:0x210].tobytes()
    write_hole = cocotb.start_soon(axim.write(0x2100, b"\xa5" * 8, awid=3))
    write_other = await axim.write(0x3000, b"\x5a" * 8, awid=4)
    assert write_other.resp == AxiResp.OKAY
    mirror[0x3000:0x3008] = 0x5A
    for t in (swallowed, behind, write_hole):
        assert await pending(t), "a swallowed burst (or one behind it) was answered"
    assert (hm.bh_count, hm.bh_parked) == (2, 3), (hm.bh_count, hm.bh_parked)
    mirror[0x20f8:0x2110] = nrng.integers(0, 256, 24, dtype=np.uint8)   # the data at release
    await hm.load(0x20f8, mirror[0x20f8:0x2110])
    hm.clear_blackhole()
    r = await swallowed
    assert r.resp == AxiResp.OKAY and r.data == mirror[0x20f8:0x2110].tobytes()
    assert (await behind).data == mirror[0x100:0x108].tobytes()
    assert (await write_hole).resp == AxiResp.OKAY
    got = np.frombuffer(await hm.read(0x20f8, 0xf10), np.uint8)
    assert (got == mirror[0x20f8:0x3008]).all(), "the swallowed write reached memory"
    # refusing: the address waits for READY until the hole closes
    hm.set_blackhole(0x2100, 0x2108, refuse=True, swallow=False)
    refused = cocotb.start_soon(axim.read(0x2100, 8, arid=5))
    assert await pending(refused, 50)
    assert int(dut.s__arvalid.value) and not int(dut.s__arready.value)
    assert hm.bh_count == 3 and hm.bh_parked == 0
    hm.clear_blackhole()
    assert (await refused).data == mirror[0x2100:0x2108].tobytes()
    await FallingEdge(dut.clk)
    mon.finish("black hole traffic")
    mon.stop()
    assert hm.prot_err == 0, hm.prot_err_text()
