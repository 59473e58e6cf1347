"""cocotb side of test_chip_queues: command queues, events, errors and firmware on the whole chip.

The scenarios and their scoreboard are verif/chip_scenarios.py, the same code the golden chip
model runs in tests/test_chip_model.py; here they drive the RTL through the testbench (ChipTB is a
device-program backend, driver/ops.py).
"""
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from spec import registers as R
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode
from spec.firmware_image import FirmwareImage
from driver.ops import run_async
from verif import chip_scenarios as S
from spec.chip import QUEUES
from verif.error_injection import BUS_TIMEOUT_CYCLES, ERROR_KINDS, blackhole_window

from verif import control_path
from verif.chip_tb import ChipTB
from verif.control_path import DirectedQueues
from verif.functional_coverage import async_probe
from verif.soc_target import HOST_WORDS

MEMORY_BYTES = HOST_WORDS * 8
#: The scenarios use host memory below HOST_BYTES; the error scenarios make the memory model
#: answer DECERR above it (the golden chip model does the same beyond its memory), except in the
#: black hole at its top, where it does not answer at all (the golden model is told the same).
HOST_BYTES = MEMORY_BYTES - 0x1_0000
DECERR_BASE = HOST_BYTES
BLACKHOLE = blackhole_window(HOST_BYTES)
assert BLACKHOLE[1] <= MEMORY_BYTES


def misbehave(tb):
    """Set the host memory model up as the error scenarios expect (DECERR, then the black hole)."""
    tb.host.set_error_window(DECERR_BASE, BLACKHOLE[0], resp=3)
    tb.host.set_blackhole(*BLACKHOLE)


async def _boot(dut, *, latency=None, stall=None, tb=None, seed=None):
    """Reset the chip, randomize host-memory timing, load the firmware; return (tb, device): the
    testbench itself is the device-program backend (driver/ops.py), seen through the functional
    coverage probe when coverage is collected."""
    tb = tb or ChipTB(dut)
    rng = np.random.default_rng(tb.seed if seed is None else seed)
    tb.host.configure(latency=int(rng.integers(2, 16)) if latency is None else latency,
                      stall=float(rng.uniform(0, 0.25)) if stall is None else stall, seed=tb.seed)
    await tb.reset()
    image = FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"])
    await tb.load_firmware(image, timeout_cycles=200_000)
    return tb, async_probe(tb, tb.caps.dim)


@cocotb.test()
async def queue_dag(dut):
    """Random jobs on all queues ordered only by events and barriers, rings wrapping; the
    scoreboard checks every record, consumer index, event edge and the whole host memory."""
    tb, dev = await _boot(dut)
    jobs = int(os.environ.get("KAKI_DAG_JOBS", "40"))
    report = await run_async(S.dag_scenario(tb.caps, tb.seed, host_bytes=HOST_BYTES, jobs=jobs), dev)
    tb.log.info(f"queue_dag: {report.descriptors} descriptors retired in {report.cycles} cycles")


@cocotb.test()
async def queue_errors(dut):
    """Each error class of KAKI_ERROR_KINDS on one queue (error_queue: rotated by the seed; on
    every queue in turn with KAKI_ERROR_EVERY_QUEUE=1) while the others keep completing; the
    failed queue is reset and resumed."""
    tb = ChipTB(dut)
    kinds = os.environ.get("KAKI_ERROR_KINDS", ",".join(ERROR_KINDS)).split(",")
    queues = range(QUEUES) if os.environ.get("KAKI_ERROR_EVERY_QUEUE") == "1" else [None]
    runs = [(kind, q) for kind in kinds for q in queues]
    for i, (kind, queue) in enumerate(runs):
        tb.log.info(f"error class {kind}: chip reset, firmware loaded")
        _, dev = await _boot(dut, tb=tb, seed=tb.seed + i)
        misbehave(tb)
        report = await run_async(
            S.error_scenario(tb.caps, tb.seed + i, kind, host_bytes=HOST_BYTES,
                             decerr_addr=DECERR_BASE, blackhole=BLACKHOLE, queue=queue), dev)
        tb.log.info(f"{kind}: {report.name}: {report.descriptors} descriptors retired in "
                    f"{report.cycles} cycles")
        if kind == "dma_timeout":
            check_timeout_cycles(tb, report)


def check_timeout_cycles(tb, report):
    """The DMA command that reached the black hole failed BUS_TIMEOUT.CYCLES after its last bus
    progress (exactly: the DMA bench's t_bus_timeout), plus the firmware's retirement: its record's
    timestamp (when the firmware asked for it) lies between that many cycles after the black hole
    swallowed its last burst (the host model's cycle count runs from the same reset as TIMESTAMP)
    and a few firmware passes later (a store's W beats may follow its swallowed AW late, and the
    other queues keep the firmware busy: 600..1600 cycles seen), long before the watchdog."""
    (ts,) = [r["timestamp"] for recs in report.records.values() for r in recs.values()
             if r["status"] == ErrorCode.BUS_TIMEOUT]
    waited = (ts - tb.host.bh_time) & 0xFFFF_FFFF
    tb.log.info(f"dma_timeout: record requested {waited} cycles after the last swallowed burst "
                f"(BUS_TIMEOUT.CYCLES = {BUS_TIMEOUT_CYCLES})")
    assert BUS_TIMEOUT_CYCLES <= waited <= BUS_TIMEOUT_CYCLES + 5000, \
        f"BUS_TIMEOUT after {waited} cycles, the limit is {BUS_TIMEOUT_CYCLES}"


@cocotb.test()
async def queue_dma_watchdog(dut):
    """The firmware watchdog resets only the hung DMA channel (chip_scenarios.dma_watchdog_scenario):
    with the bus timeout off, a DMA command of one queue hangs on the black hole while another
    queue runs a chain of commands on the other channel; the reset hits the chain with a command
    in flight, which completes bit-exactly. The load channel hung, then (chip reset) the store
    channel. The chain (~16 x 450 cycles) outlasts the watchdog's limit and its check period
    (3000 + 3000/16 cycles) whenever the hang starts in it: with 8 commands the hung command
    started late enough in the chain for SEED=2718 that the chain ended first."""
    tb = ChipTB(dut)
    for i, hung in enumerate(("load", "store")):
        _, dev = await _boot(dut, tb=tb, seed=tb.seed + i)
        misbehave(tb)
        report = await run_async(S.dma_watchdog_scenario(
            tb.caps, tb.seed + i, host_bytes=HOST_BYTES, blackhole=BLACKHOLE, hung=hung,
            commands=16, rows=128, watchdog=3000), dev)
        tb.log.info(f"{report.name}: {report.descriptors} descriptors retired in {report.cycles} "
                    f"cycles, then {report.phases[0].descriptors} after the queue's reset")


@cocotb.test()
async def dispatch_overhead(dut):
    """The control path's latencies and rates on an idle chip, from the bus
    (verif.control_path.measure): doorbell -> descriptor fetch -> the DMA's first read (engine
    start), engine done -> completion record -> consumer write-back, SIGNAL_EVENT -> WAIT_EVENT
    released on another queue -> engine start, and streams of 48 descriptors on one queue.
    Zero-latency host memory."""
    tb, dev = await _boot(dut, latency=1, stall=0.0)
    fig = await control_path.measure(tb)
    for line in control_path.describe(fig):
        tb.log.info(line)
    out = os.environ.get("KAKI_OVERHEAD_JSON")
    if out:
        import json
        with open(out, "w") as f:
            json.dump(fig, f)


# ------------------------------------------------------------------------------ directed tests

async def _irq_line(tb, cycles=20):
    await ClockCycles(tb.dut.clk, cycles)
    return int(tb.dut.irq.value)


@cocotb.test()
async def queue_irq_mask_and_ack(dut):
    """QUEUE_CPL is set only for descriptors with flags.irq, QUEUE_ERROR when a queue halts; the
    line follows IRQ_STATUS & IRQ_ENABLE; W1C clears exactly the bits written."""
    tb, _ = await _boot(dut)
    qs = DirectedQueues(tb)
    for q in range(3):
        await qs.setup(q)
    await tb.write(R.IRQ_ENABLE, 0)
    await qs.submit(0, encode(Opcode.NOP, irq=True, tag=1))
    await qs.wait_retired(0)
    await qs.submit(1, encode(Opcode.NOP, tag=2))
    await qs.wait_retired(1)
    status = await tb.read(R.IRQ_STATUS)
    assert R.IRQ_STATUS.QUEUE_CPL.get(status) == 0b001, f"IRQ_STATUS {status:#x}"
    assert await _irq_line(tb) == 0, "masked cause drove the line"
    await tb.write(R.IRQ_ENABLE, R.IRQ_ENABLE.QUEUE_CPL.put(0b010))
    assert await _irq_line(tb) == 0, "cause of queue 0 drove the line with only queue 1 enabled"
    await tb.write(R.IRQ_ENABLE, R.IRQ_ENABLE.QUEUE_CPL.put(0b001) | R.IRQ_ENABLE.QUEUE_ERROR.put(0xF))
    assert await _irq_line(tb) == 1, "enabled pending cause did not raise the line"
    await tb.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_CPL.put(0b110))   # not the pending bit
    assert await _irq_line(tb) == 1 and R.IRQ_STATUS.QUEUE_CPL.get(await tb.read(R.IRQ_STATUS)) == 1
    await tb.write(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_CPL.put(0b001))
    assert await _irq_line(tb) == 0, "W1C did not drop the line"
    bad = [0x7F | (3 << 16), 0, 0, 0, 0, 0, 0, 0]
    await qs.submit(2, encode(Opcode.NOP, tag=4), bad, encode(Opcode.NOP, tag=5))
    for _ in range(100):
        if R.Q_STATUS0.HALTED.get(await tb.read(R.Q_STATUS2)):
            break
        await ClockCycles(dut.clk, 100)
    assert await _irq_line(tb) == 1, "queue error did not raise the line"
    status = await tb.read(R.IRQ_STATUS)
    assert R.IRQ_STATUS.QUEUE_ERROR.get(status) == 0b100 and R.IRQ_STATUS.QUEUE_CPL.get(status) == 0
    assert await tb.read(R.Q_ERROR2) == ErrorCode.BAD_OPCODE
    assert await tb.read(R.Q_ERROR_INDEX2) == 1 and await tb.read(R.Q_CONSUMER2) == 2
    await tb.write(R.IRQ_STATUS, status)
    assert await _irq_line(tb) == 0
    # Queues 0 and 1 are unaffected by queue 2's halt.
    await qs.submit(0, encode(Opcode.NOP, irq=True, tag=6))
    await qs.wait_retired(0)
    assert await _irq_line(tb) == 1


@cocotb.test()
async def queue_perf_counters(dut):
    """PERF_* with queues: exact DMA bytes, retired counts per queue, event-wait stall cycles,
    stall <= busy, FREEZE holds every counter and CLEAR zeroes them."""
    tb, _ = await _boot(dut)
    qs = DirectedQueues(tb)
    for q in range(2):
        await qs.setup(q)
    dim = tb.caps.dim
    (lb, _), (sb, _) = qs.window(0), qs.window(1)
    await tb.host.load(lb, bytes(range(256)) * 16)
    await tb.clear_perf()
    await qs.submit(1, encode(Opcode.WAIT_EVENT, event=3, value=1),
                    encode(Opcode.DMA_STORE, host_addr=sb, host_row_stride=dim, row_bytes=dim,
                           rows=5, planes=1, local_addr=0, local_row_stride=1))
    wait_start = await tb.read(R.TIMESTAMP)
    await ClockCycles(dut.clk, 3000)
    assert R.Q_STATUS0.WAITING.get(await tb.read(R.Q_STATUS1)) == 1, "queue 1 is not shown waiting"
    await qs.submit(0, encode(Opcode.DMA_LOAD, host_addr=lb, host_row_stride=3 * dim, row_bytes=dim - 1,
                              rows=7, planes=2, host_plane_stride=64, local_addr=0, local_row_stride=1),
                    encode(Opcode.SIGNAL_EVENT, event=3, value=1))
    await qs.wait_retired(0)
    await qs.wait_retired(1)
    wait_end = await tb.read(R.TIMESTAMP)
    perf = {name: await tb.read(R.REGISTERS[name]) for name in R.REGISTERS if name.startswith("PERF_")
            and name != "PERF_CTRL"}
    assert perf["PERF_DMA_LOAD_BYTES"] == 7 * 2 * (dim - 1), perf
    assert perf["PERF_DMA_STORE_BYTES"] == 5 * dim, perf
    assert (perf["PERF_Q_RETIRED0"], perf["PERF_Q_RETIRED1"]) == (2, 2), perf
    assert perf["PERF_Q_RETIRED2"] == perf["PERF_Q_RETIRED3"] == 0, perf
    assert 2500 < perf["PERF_Q_EVENT_STALL1"] < wait_end - wait_start, perf
    assert perf["PERF_Q_EVENT_STALL0"] == 0, perf
    assert await tb.read(R.EVENT3) == 1
    for eng in ("DMA_LOAD", "DMA_STORE"):
        assert 0 < perf[f"PERF_{eng}_STALL"] <= perf[f"PERF_{eng}_BUSY"] <= perf["PERF_CYCLES"], (eng, perf)
    # no command went to these engines: their FIFOs stayed empty, never full
    assert perf["PERF_GEMM_FULL"] == perf["PERF_VEC_FULL"] == 0, perf
    await tb.write(R.PERF_CTRL, R.PERF_CTRL.FREEZE.put(1))
    frozen = {name: await tb.read(R.REGISTERS[name]) for name in perf}
    await qs.submit(0, encode(Opcode.DMA_LOAD, host_addr=lb, row_bytes=dim, rows=1, planes=1))
    await qs.wait_retired(0)
    again = {name: await tb.read(R.REGISTERS[name]) for name in perf}
    assert again == frozen, {k: (frozen[k], again[k]) for k in perf if again[k] != frozen[k]}
    await tb.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1) | R.PERF_CTRL.FREEZE.put(1))
    cleared = {name: await tb.read(R.REGISTERS[name]) for name in perf}
    assert not any(cleared.values()), cleared


@cocotb.test()
async def queue_load_compute_overlap(dut):
    """A load / compute / store pipeline over double-buffered GEMM tiles, one stage per queue,
    ordered only by events: queue 0 loads tile i+1 while queue 1 multiplies tile i and queue 2
    stores tile i-1. Results are checked against NumPy, and the engines' busy cycles must add up
    to well over the elapsed time (they overlapped). Host memory latency is fixed (2 cycles, no
    backpressure) so the schedule, and the overlap bound, do not depend on the seed."""
    tb, _ = await _boot(dut, latency=2, stall=0.0)
    dim = tb.caps.dim
    rng = np.random.default_rng(tb.seed)
    qs = DirectedQueues(tb, base=0x1_0000, log2=6, stride=0x5_0000)
    for q in range(3):
        await qs.setup(q)
    # Tiles big enough that engine time, not the firmware's few hundred cycles per descriptor
    # (docs/queues.md "Costs"), dominates: C (m x dim) = A (m x K) @ B (K x dim), K = kt * dim.
    tiles, m, kt = 4, 512, 8
    k = kt * dim
    a = rng.integers(-128, 128, (tiles, m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (tiles, k, dim), dtype=np.int8)
    src, _ = qs.window(0)
    dst, _ = qs.window(2)
    a_host = [src + i * (m * k + k * dim) for i in range(tiles)]
    b_host = [x + m * k for x in a_host]
    c_host = [dst + i * m * dim * 4 for i in range(tiles)]
    for i in range(tiles):
        await tb.host.load(a_host[i], a[i].tobytes())
        await tb.host.load(b_host[i], b[i].tobytes())
    bank, half_acc = tb.caps.spad_rows // tb.caps.spad_banks, tb.caps.acc_rows // 2
    assert m * kt <= bank, "an A buffer must fit one scratchpad bank"
    a_buf = [0, bank]                      # every buffer in its own scratchpad bank, so the DMA
    b_buf = [2 * bank, 3 * bank]           # fills one while the PE array reads the other
    c_buf = [0, half_acc]
    loaded, computed, stored = 5, 6, 7     # timeline events: tiles loaded / multiplied / stored
    load, compute, store = [], [], []
    for i in range(tiles):
        buf = i % 2
        if i >= 2:   # the scratchpad buffers are free once tile i-2 was multiplied
            load.append(encode(Opcode.WAIT_EVENT, event=computed, value=i - 1))
        load += [encode(Opcode.DMA_LOAD, host_addr=a_host[i], host_row_stride=k, row_bytes=dim,
                        rows=m, planes=kt, host_plane_stride=dim, local_addr=a_buf[buf],
                        local_row_stride=1, local_plane_stride=m),
                 encode(Opcode.DMA_LOAD, host_addr=b_host[i], host_row_stride=dim, row_bytes=dim,
                        rows=k, planes=1, local_addr=b_buf[buf], local_row_stride=1),
                 encode(Opcode.SIGNAL_EVENT, event=loaded, value=i + 1)]
        compute.append(encode(Opcode.WAIT_EVENT, event=loaded, value=i + 1))
        if i >= 2:   # the accumulator buffer is free once tile i-2 was stored
            compute.append(encode(Opcode.WAIT_EVENT, event=stored, value=i - 1))
        compute += [encode(Opcode.GEMM, a_addr=a_buf[buf], b_addr=b_buf[buf], c_addr=c_buf[buf],
                           m=m, k_tiles=kt, n_tiles=1, a_kt_stride=m),
                    encode(Opcode.SIGNAL_EVENT, event=computed, value=i + 1)]
        store += [encode(Opcode.WAIT_EVENT, event=computed, value=i + 1),
                  encode(Opcode.DMA_STORE, host_addr=c_host[i], host_row_stride=4 * dim,
                         row_bytes=4 * dim, rows=m, planes=1, local_addr=c_buf[buf],
                         local_row_stride=1, acc=1),
                  encode(Opcode.SIGNAL_EVENT, event=stored, value=i + 1)]
    await tb.clear_perf()
    start = await tb.read(R.TIMESTAMP)
    await qs.submit(2, *store)
    await qs.submit(1, *compute)
    await qs.submit(0, *load)
    for q in range(3):
        await qs.wait_retired(q, 500_000)
    elapsed = await tb.read(R.TIMESTAMP) - start
    for i in range(tiles):
        got = np.frombuffer(await tb.host.read(c_host[i], m * dim * 4), np.int32).reshape(m, dim)
        ref = a[i].astype(np.int32) @ b[i].astype(np.int32)
        assert np.array_equal(got, ref), f"tile {i}: C differs from NumPy at {np.argwhere(got != ref)[0]}"
    busy = {n: await tb.read(R.REGISTERS[f"PERF_{n}_BUSY"]) for n in ("DMA_LOAD", "DMA_STORE", "GEMM")}
    tb.log.info(f"{tiles} tiles in {elapsed} cycles; engine busy cycles {busy}; "
                f"sum/elapsed {sum(busy.values()) / elapsed:.2f}")
    # Serialized, the sum would be <= elapsed; this schedule measures 1.39 (load-bound).
    assert sum(busy.values()) > 1.3 * elapsed, f"no overlap: busy {busy} in {elapsed} cycles"
