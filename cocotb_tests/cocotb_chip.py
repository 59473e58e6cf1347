"""cocotb side of test_chip: GEMMs, error isolation, interrupts and overlap on the whole chip.

Every test's testbench is seen by the functional coverage model when coverage is collected
(``functional_coverage.observe``: direct submissions, ERROR_INFO and the IRQ_STATUS reads of
``ChipTB.wait_irq``)."""
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from compiler.lower_gemm import gemm_command, store_accumulator
from spec import registers as R
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode
from golden import ops
from verif.workloads import random_gemm_case

from verif.chip_tb import ChipTB, CommandFailed, CocotbextCsr
from verif.functional_coverage import observe


async def _reset(tb):
    """Reset the chip and put the testbench behind the coverage observer; returns the caps."""
    caps = await tb.reset()
    if tb.observer is None:
        observe(tb, caps.dim)
    return caps


@cocotb.test()
async def random_gemms(dut):
    """Random shapes (edges in M, K and N) with random host-memory latency and backpressure."""
    tb = ChipTB(dut)
    rng = np.random.default_rng(tb.seed)
    tb.host.configure(latency=int(rng.integers(2, 20)), stall=float(rng.uniform(0, 0.3)),
                      seed=tb.seed)
    caps = await _reset(tb)
    await tb.enable_irqs()
    shapes = [(1, 1, 1), (caps.dim, caps.dim, caps.dim)]
    shapes += [tuple(int(x) for x in rng.integers(1, 48, 3)) for _ in range(3)]
    for m, k, n in shapes:
        tb.log.info(f"GEMM {m}x{k}x{n}")
        await tb.gemm_epilogue(random_gemm_case(rng, m, k, n))


#: an opcode value the command table leaves unused
UNUSED_OPCODE = next(v for v in range(0x7F, 0x100) if v not in set(Opcode))

BAD_DESCRIPTORS = [
    ("unknown opcode", lambda c: [UNUSED_OPCODE, 0, 0, 0, 0, 0, 0, 0], ErrorCode.BAD_OPCODE),
    ("reserved flag", lambda c: [encode(Opcode.GEMM, m=1, k_tiles=1, n_tiles=1)[0] | (1 << 9),
                                 *encode(Opcode.GEMM, m=1, k_tiles=1, n_tiles=1)[1:]],
     ErrorCode.RESERVED_BITS),
    ("gemm m=0", lambda c: encode(Opcode.GEMM, m=0, k_tiles=1, n_tiles=1), ErrorCode.BAD_SHAPE),
    ("gemm C beyond acc", lambda c: encode(Opcode.GEMM, m=4, k_tiles=1, n_tiles=1,
                                           c_addr=c.acc_rows - 2), ErrorCode.LOCAL_RANGE),
    ("load row too long", lambda c: encode(Opcode.DMA_LOAD, host_addr=0x1000, row_bytes=c.dim,
                                           col_offset=1, rows=1, planes=1), ErrorCode.BAD_SHAPE),
    ("load beyond spad", lambda c: encode(Opcode.DMA_LOAD, host_addr=0x1000, row_bytes=4,
                                          rows=2, planes=1, local_row_stride=1,
                                          local_addr=c.spad_rows - 1), ErrorCode.LOCAL_RANGE),
    ("store beyond host space", lambda c: encode(Opcode.DMA_STORE, host_addr=(1 << c.addr_bits) - 2,
                                                 row_bytes=4, rows=1, planes=1),
     ErrorCode.HOST_RANGE),
    ("vector bad shift", lambda c: encode(Opcode.VECTOR, src_addr=0, dst_addr=64, rows=2,
                                          mult_addr=100, shift_addr=101), ErrorCode.BAD_SHIFT),
    ("softmax length 0", lambda c: encode(Opcode.SOFTMAX, rows=1, length=0, seg_stride=1),
     ErrorCode.BAD_SHAPE),
    ("layernorm beta beyond acc", lambda c: encode(Opcode.LAYERNORM, rows=1, length=2 * c.dim,
                                                   seg_stride=1, beta_addr=c.acc_rows - 1),
     ErrorCode.LOCAL_RANGE),
    ("lut reserved bit", lambda c: encode(Opcode.LUT, rows=1, length=1, seg_stride=1, reserved=1),
     ErrorCode.RESERVED_BITS),
]


@cocotb.test()
async def errors_are_precise_and_isolated(dut):
    """Each error class: precise code and tag in ERROR_INFO, nothing written, next command works."""
    tb = ChipTB(dut)
    caps = await _reset(tb)
    await tb.enable_irqs()
    rng = np.random.default_rng(tb.seed)
    canary = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    await tb.host.load(0x8000, canary)
    # A shift row with one lane out of range for the BAD_SHIFT case.
    shift = np.full(caps.dim, 3, np.int32)
    shift[caps.dim // 2] = 64
    await tb.host.load(0x200, shift.tobytes())
    await tb.run_phases([[encode(Opcode.DMA_LOAD, irq=True, host_addr=0x200, row_bytes=4 * caps.dim,
                                 rows=1, planes=1, local_addr=101, acc=1)]])
    for tag, (name, make, code) in enumerate(BAD_DESCRIPTORS, start=100):
        words = list(make(caps))
        words[0] = (words[0] & 0xFFFF) | (tag << 16)
        try:
            await tb.submit(words)
            await tb.wait_irq(20_000, f"the error of '{name}'")
        except CommandFailed as e:
            assert e.code == code, f"{name}: got {ErrorCode(e.code).name}, expected {code.name}"
            assert e.tag == tag, f"{name}: ERROR_INFO.TAG {e.tag} != {tag}"
        else:
            raise AssertionError(f"{name}: no error reported")
        tb.log.info(f"{name}: {code.name} as expected")
    # AXI error responses from host memory: SLVERR on a load, DECERR on a store.
    for opcode, resp, code in ((Opcode.DMA_LOAD, 2, ErrorCode.AXI_SLVERR),
                               (Opcode.DMA_STORE, 3, ErrorCode.AXI_DECERR)):
        tb.host.set_error_window(0x4000, 0x4100, resp)
        await tb.submit(encode(opcode, host_addr=0x4010, row_bytes=caps.dim, rows=4, planes=1,
                               host_row_stride=64, local_row_stride=1, local_addr=8, tag=7))
        try:
            await tb.wait_irq(50_000, f"the AXI error of a {opcode.name}")
        except CommandFailed as e:
            assert e.code == code, f"{opcode.name}: got {ErrorCode(e.code).name}"
        else:
            raise AssertionError(f"{opcode.name} into an error window reported no error")
        tb.host.clear_error_window()
    assert await tb.host.read(0x8000, len(canary)) == canary, "an erroring command wrote host memory"
    # The chip keeps working after every error.
    await tb.gemm_epilogue(random_gemm_case(rng, 9, 20, 11))


@cocotb.test()
async def dma_bus_timeouts_in_a_row(dut):
    """Bus timeouts on each DMA channel (hdl_gen/axi_guard.py). First the host memory's black
    hole refuses the bursts' addresses: the guard keeps offering the abandoned address (and a
    store's W beat) from its hold registers until the black hole lets go. Then seven timeouts in a row
    with every abandoned burst accepted and parked: each abandon leaves orphans on the guard's
    current AXI ID, so the channel's next burst takes the next free ID, through all eight. Each
    command fails with BUS_TIMEOUT and its own tag. Behind each parked one a good command of the
    same channel waits in the FIFO and runs on the next free ID; their data is checked
    bit-exactly, and a load-store round trip again once the black hole has answered the orphans."""
    tb = ChipTB(dut)
    caps = await _reset(tb)
    await tb.enable_irqs()
    rng = np.random.default_rng(tb.seed)
    hole = (0xE_0000, 0xE_1000)
    await tb.write(R.BUS_TIMEOUT, 300)
    row, rounds, src, dst = caps.dim, 7, 0x2000, 0x6000
    data = rng.integers(0, 256, (rounds, row), dtype=np.uint8)
    await tb.host.load(src, data.tobytes())
    spad_rows = rng.integers(0, 256, (rounds, row), dtype=np.uint8)
    await tb.host.load(src + rounds * row, spad_rows.tobytes())
    # spad rows 32.. hold what the stores behind the store timeouts write back
    await tb.run_phases([[encode(Opcode.DMA_LOAD, irq=True, host_addr=src + rounds * row,
                                 row_bytes=row, rows=rounds, planes=1, host_row_stride=row,
                                 local_row_stride=1, local_addr=32)]], timeout_cycles=20_000)

    async def timeout(opcode, tag, host_addr):
        try:
            await tb.wait_irq(20_000, f"the bus timeout of {opcode.name} tag {tag:#x}")
        except CommandFailed as e:
            assert (e.code, e.opcode, e.tag) == (ErrorCode.BUS_TIMEOUT, opcode, tag), e
        else:
            raise AssertionError(f"{opcode.name} to the black hole at {host_addr:#x} did not time out")

    tb.host.set_blackhole(*hole, refuse=True, swallow=False)
    for tag, opcode in enumerate((Opcode.DMA_LOAD, Opcode.DMA_STORE), start=0x30):
        # four bursts (one per row): the arbiter's buffer takes one, the guard holds the next
        await tb.submit(encode(opcode, irq=True, tag=tag, host_addr=hole[1] - 256, row_bytes=row,
                               rows=4, planes=1, host_row_stride=64, local_row_stride=1,
                               local_addr=4 * (tag - 0x30) + 56))
        await timeout(opcode, tag, hole[1] - 256)
    tb.host.clear_blackhole()
    await ClockCycles(dut.clk, 200)
    tb.host.set_blackhole(*hole)
    for opcode in (Opcode.DMA_LOAD, Opcode.DMA_STORE):
        for i in range(rounds):
            tag = 0x40 + 8 * (opcode == Opcode.DMA_STORE) + i
            await tb.submit(encode(opcode, irq=True, tag=tag, host_addr=hole[0] + 64 * i,
                                   row_bytes=row, rows=1, planes=1, local_addr=i))
            good = (dict(host_addr=src + i * row, local_addr=16 + i) if opcode == Opcode.DMA_LOAD
                    else dict(host_addr=dst + i * row, local_addr=32 + i))
            await tb.submit(encode(opcode, row_bytes=row, rows=1, planes=1, **good))
            await timeout(opcode, tag, hole[0] + 64 * i)
    # the loads behind the timeouts, stored back after the stores behind them
    await tb.run_phases([[encode(Opcode.DMA_STORE, irq=True, host_addr=dst + rounds * row,
                                 row_bytes=row, rows=rounds, planes=1, host_row_stride=row,
                                 local_row_stride=1, local_addr=16)]], timeout_cycles=20_000)
    got = np.frombuffer(await tb.host.read(dst, 2 * rounds * row), np.uint8).reshape(2 * rounds, row)
    assert (got[:rounds] == spad_rows).all(), "a store behind a bus timeout wrote wrong data"
    assert (got[rounds:] == data).all(), "a load behind a bus timeout read wrong data"
    tb.host.clear_blackhole()
    await ClockCycles(dut.clk, 200)
    back = rng.integers(0, 256, 4 * row, dtype=np.uint8).tobytes()
    await tb.host.load(0x2400, back)
    await tb.run_phases([[encode(Opcode.DMA_LOAD, irq=True, host_addr=0x2400, row_bytes=row,
                                 rows=4, planes=1, host_row_stride=row, local_row_stride=1,
                                 local_addr=48)],
                         [encode(Opcode.DMA_STORE, irq=True, host_addr=0x6400, row_bytes=row,
                                 rows=4, planes=1, host_row_stride=row, local_row_stride=1,
                                 local_addr=48)]], timeout_cycles=20_000)
    assert await tb.host.read(0x6400, len(back)) == back, "a round trip after the orphans differs"
    await tb.write(R.BUS_TIMEOUT, R.BUS_TIMEOUT.CYCLES.reset)


@cocotb.test()
async def direct_submission_overflow(dut):
    """A direct submission to an engine whose command FIFO is full retires at once with
    CMD_OVERFLOW (hdl_gen/dispatcher.py): ERROR_INFO names the refused command, the accepted ones
    still run (and only they), and the engine keeps working afterwards."""
    tb = ChipTB(dut)
    caps = await _reset(tb)
    await tb.write(R.IRQ_ENABLE, R.IRQ_ENABLE.ERROR.put(1) | R.IRQ_ENABLE.GEMM_DONE.put(1))
    depth = caps.fifo_depth
    # Long GEMMs (n_tiles passes over the same operands, thousands of cycles each) while a
    # submission takes a few dozen cycles: the first starts at once, the next `depth` fill the
    # FIFO and the one after is refused.
    m = min(256, caps.acc_rows, caps.spad_rows - caps.dim)
    long_gemm = dict(a_addr=0, b_addr=caps.spad_rows - caps.dim, c_addr=0, m=m, k_tiles=1,
                     n_tiles=8, b_nt_stride=0, c_nt_stride=0)
    refused = depth + 2
    for tag in range(1, refused + 1):
        for reg, w in zip(R.CMD, encode(Opcode.GEMM, tag=tag, **long_gemm)):
            await tb.write(reg, w)
        await tb.write(R.CMD_SUBMIT, R.CMD_SUBMIT.GO.put(1))
    try:
        await tb.wait_irq(5_000, "the CMD_OVERFLOW of the refused GEMM")
    except CommandFailed as e:
        assert (e.code, e.opcode, e.tag) == (ErrorCode.CMD_OVERFLOW, Opcode.GEMM, refused), \
            f"got {e}, expected CMD_OVERFLOW for GEMM tag {refused}"
    else:
        raise AssertionError("a GEMM submitted to a full command FIFO was not refused")
    assert await tb.read(R.DONE_GEMM) < refused - 1, "the FIFO was not full when the GEMM was refused"
    for _ in range(2000):
        if await tb.read(R.DONE_GEMM) == refused - 1:
            break
        await ClockCycles(dut.clk, 100)
    await ClockCycles(dut.clk, 20 * m)
    assert await tb.read(R.DONE_GEMM) == refused - 1, "the accepted GEMMs did not all run exactly once"
    assert R.IRQ_STATUS.ERROR.get(await tb.read(R.IRQ_STATUS)) == 0, "accepted GEMMs reported an error"
    await tb.run_phases([[encode(Opcode.GEMM, irq=True, tag=99, m=1, k_tiles=1, n_tiles=1)]])
    assert await tb.read(R.DONE_GEMM) == refused, "the GEMM engine did not run a command after the overflow"


@cocotb.test()
async def interrupt_mask_and_ack(dut):
    """The IRQ line follows IRQ_STATUS & IRQ_ENABLE; W1C acknowledges; masked causes still latch."""
    tb = ChipTB(dut)
    await _reset(tb)
    nop_load = encode(Opcode.DMA_LOAD, irq=True, host_addr=0x1000, row_bytes=8, rows=1, planes=1)
    await tb.submit(nop_load)
    await ClockCycles(dut.clk, 300)
    assert int(dut.irq.value) == 0, "IRQ raised while every cause is masked"
    assert R.IRQ_STATUS.DMA_LOAD_DONE.get(await tb.read(R.IRQ_STATUS)) == 1
    await tb.write(R.IRQ_ENABLE, R.IRQ_ENABLE.GEMM_DONE.put(1))
    await ClockCycles(dut.clk, 5)
    assert int(dut.irq.value) == 0, "IRQ raised for a cause that is not enabled"
    await tb.write(R.IRQ_ENABLE, R.IRQ_ENABLE.DMA_LOAD_DONE.put(1))
    await ClockCycles(dut.clk, 5)
    assert int(dut.irq.value) == 1, "IRQ not raised after enabling a pending cause"
    await tb.write(R.IRQ_STATUS, R.IRQ_STATUS.DMA_LOAD_DONE.put(1))
    await ClockCycles(dut.clk, 5)
    assert int(dut.irq.value) == 0, "IRQ still high after W1C acknowledge"
    assert await tb.read(R.IRQ_STATUS) == 0
    # A command without flags.irq retires silently.
    await tb.submit(encode(Opcode.DMA_LOAD, host_addr=0x1000, row_bytes=8, rows=1, planes=1))
    await ClockCycles(dut.clk, 300)
    assert await tb.read(R.IRQ_STATUS) == 0
    assert await tb.read(R.DONE_DMA_LOAD) == 2


@cocotb.test()
async def dma_overlaps_gemm(dut):
    """Loads into other banks run while the GEMM computes (double buffering), results unchanged."""
    tb = ChipTB(dut)
    caps = await _reset(tb)
    await tb.enable_irqs()
    rng = np.random.default_rng(tb.seed)
    s = 64
    a = rng.integers(-128, 128, (s, s), dtype=np.int8)
    b = rng.integers(-128, 128, (s, s), dtype=np.int8)
    plan, end = await tb.load_gemm_operands(a, b)
    # Second operand set for the next GEMM goes to the last scratchpad bank while this one runs.
    nxt = rng.integers(-128, 128, (s, 8), dtype=np.int8)
    await tb.host.load(end, nxt.tobytes())
    spare = caps.spad_rows - caps.spad_bank_rows
    await tb.clear_perf()
    gemm = gemm_command(plan)
    await tb.submit(encode(gemm.opcode, **gemm.fields))
    await tb.submit(encode(Opcode.DMA_LOAD, irq=True, host_addr=end, row_bytes=8, rows=s,
                           host_row_stride=8, planes=1, local_addr=spare, local_row_stride=1))
    await tb.wait_irq(100_000, "the overlapped load")
    perf = await tb.perf()
    assert perf["PERF_GEMM_BUSY"] > 0 and perf["PERF_DMA_LOAD_BUSY"] > 0
    assert await tb.read(R.DONE_GEMM) == 0 or perf["PERF_GEMM_BUSY"] >= perf["PERF_DMA_LOAD_BUSY"], \
        "the load should have finished while the GEMM was still running"
    await tb.submit(encode(Opcode.NOP))
    for _ in range(1000):
        if await tb.read(R.DONE_GEMM) == 1:
            break
        await ClockCycles(dut.clk, 100)
    perf = await tb.perf()
    assert perf["PERF_GEMM_STALL"] + perf["PERF_GEMM_ACTIVE"] <= perf["PERF_GEMM_BUSY"] + 1
    # GEMM result still exact: store C and compare.
    await tb.run_commands(store_accumulator(plan, end + 0x1000))
    c = np.frombuffer(await tb.host.read(end + 0x1000, 4 * s * s), np.int32).reshape(s, s)
    np.testing.assert_array_equal(c, ops.gemm(a, b))


@cocotb.test()
async def firmware_boots_faults_and_reloads(dut):
    """Real firmware on the RTL core: boot to READY, reset, a faulting image, reload."""
    from elftools.elf.elffile import ELFFile

    from driver.bringup import FirmwareError
    from spec.firmware_image import FirmwareImage, FirmwareState
    from firmware.build import version

    tb = ChipTB(dut)
    await _reset(tb)
    elf = os.environ["KAKI_FW_ELF"]
    image = FirmwareImage.from_elf(elf)
    assert await tb.load_firmware(image) == version()[1]
    # With no work the service loop's first pass ends in WFI within a few hundred cycles.
    for _ in range(40):
        await ClockCycles(dut.clk, 50)
        if R.FW_STATUS.SLEEPING.get(await tb.read(R.FW_STATUS)):
            break
    else:
        raise AssertionError("firmware did not sleep in WFI within 2000 cycles of READY with no work")
    # Holding the core in reset resets the firmware's registers too.
    await tb.write(R.CORE_CTRL, 0)
    await ClockCycles(dut.clk, 5)
    assert await tb.read(R.FW_STATUS) == 0 and await tb.read(R.FW_VERSION) == 0
    # An illegal instruction in main(): the trap handler reports FAULT with cause 2 and the pc.
    with open(elf, "rb") as f:
        main = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("main")[0]["st_value"]
    bad = bytearray(image.imem)
    bad[main:main + 4] = b"\xff\xff\xff\xff"
    try:
        await tb.load_firmware(FirmwareImage(bytes(bad), image.dmem, 0), timeout_cycles=5_000)
    except FirmwareError as e:
        assert (e.state, e.cause, e.pc) == (FirmwareState.FAULT, 2, main), e
    else:
        raise AssertionError("a firmware with an illegal instruction in main() reported READY")
    assert R.FW_STATUS.STATE.get(await tb.read(R.FW_STATUS)) == FirmwareState.FAULT
    assert await tb.read(R.FW_FAULT_CAUSE) == 2
    assert await tb.read(R.FW_FAULT_PC) == main
    assert await tb.read(R.FW_FAULT_TVAL) == 0xFFFFFFFF
    # The fault also reached the host as a firmware message (cause in FW_MSG) with its interrupt.
    assert R.IRQ_STATUS.FW_MSG.get(await tb.read(R.IRQ_STATUS)) == 1
    assert await tb.read(R.FW_MSG) == 2
    # Reload the good image: READY again.
    assert await tb.load_firmware(image) == version()[1]
    # While the core runs, the firmware owns dispatch: CMD_SUBMIT fails with DIRECT_SUBMIT
    # (ERROR_INFO names the command) and the command does not run.
    await tb.write(R.IRQ_STATUS, await tb.read(R.IRQ_STATUS))
    await tb.write(R.IRQ_ENABLE, R.IRQ_ENABLE.ERROR.put(1) | R.IRQ_ENABLE.DMA_LOAD_DONE.put(1))
    loads = await tb.read(R.DONE_DMA_LOAD)
    await tb.submit(encode(Opcode.DMA_LOAD, irq=True, tag=0x55, host_addr=0x1000, row_bytes=8,
                           rows=1, planes=1))
    try:
        await tb.wait_irq(2_000, "the DIRECT_SUBMIT error")
    except CommandFailed as e:
        assert (e.code, e.opcode, e.tag) == (ErrorCode.DIRECT_SUBMIT, Opcode.DMA_LOAD, 0x55), e
    else:
        raise AssertionError("a direct submission while the core runs was accepted")
    await ClockCycles(dut.clk, 300)
    assert await tb.read(R.DONE_DMA_LOAD) == loads, "the refused direct submission ran"
    assert R.IRQ_STATUS.DMA_LOAD_DONE.get(await tb.read(R.IRQ_STATUS)) == 0


@cocotb.test()
async def firmware_reads_perf(dut):
    """The firmware reads performance counters through PERF_SEL/PERF_VALUE and messages the host:
    a probe image (firmware/probes/perf_probe.c) reports PERF_DMA_LOAD_BYTES by FW_MSG."""
    from spec.firmware_image import FirmwareImage

    tb = ChipTB(dut)
    caps = await _reset(tb)
    await tb.enable_irqs()
    await tb.clear_perf()
    await tb.host.load(0x1000, bytes(range(64)))
    await tb.run_phases([[encode(Opcode.DMA_LOAD, irq=True, host_addr=0x1000, host_row_stride=caps.dim,
                                 row_bytes=caps.dim - 3, rows=3, planes=1, local_row_stride=1)]])
    expect = await tb.read(R.PERF_DMA_LOAD_BYTES)
    assert expect == 3 * (caps.dim - 3), expect
    await tb.load_firmware(FirmwareImage.from_elf(os.environ["KAKI_PROBE_ELF"]))
    status = await tb.wait_irq(20_000, "the probe's FW_MSG")
    assert R.IRQ_STATUS.FW_MSG.get(status), f"IRQ_STATUS {status:#x}"
    msg = await tb.read(R.FW_MSG)
    assert msg == expect, f"firmware read PERF_DMA_LOAD_BYTES as {msg:#x}, CSR says {expect:#x}"


async def run_core_program(tb, words, budget, what):
    """Hold the control core, load ``words`` into IMEM through CORE_MEM_ADDR/DATA (the driver's
    bring-up path), release it and return once CORE_PC shows its last word, a jump to itself,
    committed; fail after ``budget`` cycles."""
    await tb.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))
    await tb.write(R.CORE_MEM_ADDR, 0)
    for w in words:
        await tb.write(R.CORE_MEM_DATA, w)
    await tb.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(1))
    halt_pc = 4 * (len(words) - 1)
    for _ in range(budget // 200 + 1):
        await ClockCycles(tb.dut.clk, 200)
        if await tb.read(R.CORE_PC) == halt_pc:
            return
    raise AssertionError(f"{what}: the core did not reach its final jump at {halt_pc:#x} within "
                         f"{budget} cycles (CORE_PC {await tb.read(R.CORE_PC):#x})")


#: MMIO words a program on the control core writes and the host reads back in the registers of
#: the same names (kaki_mmio.rdl, kaki_regs.rdl): the signatures of core_random_programs
SIGNATURE_REGS = (("FW_VERSION", "FW_VERSION"), ("FW_FAULT_PC", "FW_FAULT_PC"),
                  ("FW_FAULT_CAUSE", "FW_FAULT_CAUSE"), ("FW_FAULT_TVAL", "FW_FAULT_TVAL"))


@cocotb.test()
async def core_random_programs(dut):
    """Random RV32IM programs on the chip's control core (the block test's generator, with a
    signature: verif.rv32_random.signed_program), loaded and started through CORE_CTRL and
    CORE_MEM_ADDR/DATA as the driver's bring-up does. The signatures the program stores to MMIO,
    read back through the host's FW_* registers once CORE_PC stays on the final jump-to-self,
    must equal the ISS's for the same words. KAKI_CORE_PROGRAMS programs of KAKI_CORE_INSNS body
    instructions."""
    import random

    from golden.rv32_asm import is_terminator
    from golden.rv32_iss import MMIO_BASE, RV32ISS
    from spec import mmio_registers as MR
    from verif.rv32_random import signed_program

    tb = ChipTB(dut)
    await _reset(tb)
    rng = random.Random(tb.seed)
    addrs = [MMIO_BASE + MR.REGISTERS[m].addr for m, _ in SIGNATURE_REGS]
    for n in range(int(os.environ.get("KAKI_CORE_PROGRAMS", "3"))):
        words = signed_program(rng, int(os.environ.get("KAKI_CORE_INSNS", "400")), addrs)
        iss = RV32ISS(words)
        # (the pipeline takes a few cycles per instruction at most: 8 per ISS step is generous)
        steps = iss.run(50 * len(words), until=is_terminator)
        expected = {a: v for a, v, _ in iss.mmio.writes}
        assert all(a in expected for a in addrs), f"the ISS did not reach the signature ({steps} steps)"
        await run_core_program(tb, words, 8 * steps, f"program {n} ({steps} ISS steps)")
        got = {m: await tb.read(getattr(R, h)) for m, h in SIGNATURE_REGS}
        want = {m: expected[MMIO_BASE + MR.REGISTERS[m].addr] for m, _ in SIGNATURE_REGS}
        assert got == want, (f"program {n} ({len(words)} words, {steps} ISS steps): signatures "
                             f"{ {k: hex(v) for k, v in got.items()} } != ISS "
                             f"{ {k: hex(v) for k, v in want.items()} }")
        tb.log.info(f"program {n}: {len(words)} words, {steps} steps, signatures match")
    await tb.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))


@cocotb.test()
async def core_reads_every_perf_counter(dut):
    """The control core reads every PERF_* counter through PERF_SEL/PERF_VALUE (and a host
    address that is no counter, which reads 0) while PERF_CTRL.FREEZE holds them, folding the
    values into a signature it stores to FW_VERSION; the host folds its own reads of the same
    registers the same way. Some DMA and GEMM work first, so that the counters are not all 0."""
    from golden import rv32_asm as A
    from golden.rv32_iss import MMIO_BASE
    from spec import mmio_registers as MR
    from verif.rv32_random import SIGNATURE_MULTIPLIER

    tb = ChipTB(dut)
    caps = await _reset(tb)
    await tb.enable_irqs()
    rng = np.random.default_rng(tb.seed)
    await tb.gemm_epilogue(random_gemm_case(rng, caps.dim, caps.dim, caps.dim))
    await tb.write(R.PERF_CTRL, R.PERF_CTRL.FREEZE.put(1))
    perf = [r for name, r in sorted(R.REGISTERS.items(), key=lambda kv: kv[1].addr)
            if name.startswith("PERF_") and name != "PERF_CTRL"]
    addrs = [r.addr for r in perf] + [R.ID.addr]
    sel, value, out, mult, acc, t, v = 5, 6, 7, 8, 9, 10, 11
    words = (A.li(sel, MMIO_BASE + MR.PERF_SEL.addr) + A.li(value, MMIO_BASE + MR.PERF_VALUE.addr)
             + A.li(mult, SIGNATURE_MULTIPLIER) + [A.addi(acc, 0, 0)])
    for a in addrs:
        words += A.li(t, a) + [A.sw(t, 0, sel), A.lw(v, 0, value), A.R_ENC["mul"](acc, acc, mult),
                               A.R_ENC["xor"](acc, acc, v)]
    words += A.li(out, MMIO_BASE + MR.FW_VERSION.addr) + [A.sw(acc, 0, out), A.HALT_INSN]
    await run_core_program(tb, words, 20 * len(words), "PERF_SEL walk")
    want = 0
    for r in perf:
        want = (want * SIGNATURE_MULTIPLIER ^ await tb.read(r)) & 0xFFFF_FFFF
    want = want * SIGNATURE_MULTIPLIER & 0xFFFF_FFFF       # the last address is no counter: 0
    got = await tb.read(R.FW_VERSION)
    assert got == want, (f"the core's fold of PERF_VALUE over {len(addrs)} addresses is {got:#x}, "
                         f"the host's reads fold to {want:#x}")
    tb.log.info(f"PERF_SEL walk: {len(perf)} counters read by the core match the host's")
    await tb.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))
    await tb.write(R.PERF_CTRL, 0)


@cocotb.test()
async def core_fetch_faults_and_interrupt(dut):
    """Traps the random programs never raise, on the chip's core. First, jumps to addresses no
    instruction can be fetched from (DMEM, MMIO, past IMEM, the top of the address space, a
    half-word target): the handler folds mcause, mtval and mepc into a signature, stores it to
    FW_VERSION and returns through ra; the host's read must equal the ISS's. Then the external
    interrupt, from the MMIO timer (WORK.TIMER, unmasked in WORK_MASK, mie.MEIE and mstatus.MIE
    set) while the core counts in a loop: the handler reports mcause and mepc in FW_FAULT_CAUSE
    and FW_FAULT_PC, masks the timer and returns; the count runs to its end."""
    from golden import rv32_asm as A
    from golden.rv32_asm import is_terminator
    from golden.rv32_iss import CAUSE_FETCH_FAULT, MMIO_BASE, RV32ISS
    from spec import mmio_registers as MR
    from verif.rv32_random import SIGNATURE_MULTIPLIER

    tb = ChipTB(dut)
    await _reset(tb)
    mmio, mult, acc, t, ra = 20, 21, 22, 6, 1
    # 0x0: jump to the start; 0x4: the handler (every trap returns to ra)
    handler = []
    for csr in ("mcause", "mtval", "mepc"):
        handler += [A.csrr(t, csr), A.R_ENC["mul"](acc, acc, mult), A.R_ENC["xor"](acc, acc, t)]
    handler += [A.csrw("mepc", ra), A.mret()]
    words = [A.jal(0, 4 * (1 + len(handler)))] + handler
    words += A.li(t, 4) + [A.csrw("mtvec", t)] + A.li(mult, SIGNATURE_MULTIPLIER) + [A.addi(acc, 0, 1)]
    for target in (0x1000_0000, MMIO_BASE, 0x4000, 0xFFFF_FFF0, None):
        if target is None:          # a half-word target inside IMEM (jalr clears only bit 0)
            words += [A.auipc(t, 0), A.jalr(ra, t, 10)]
        else:
            words += A.li(t, target) + [A.jalr(ra, t, 0)]
    words += A.li(mmio, MMIO_BASE) + [A.sw(acc, MR.FW_VERSION.addr, mmio), A.HALT_INSN]
    iss = RV32ISS(words)
    trace = []
    steps = iss.run(10 * len(words), until=is_terminator, trace=trace)
    assert sum(r.trap for r in trace) == 5 and any(r.cause == CAUSE_FETCH_FAULT for r in trace)
    (want,) = [v for a, v, _ in iss.mmio.writes if a == MMIO_BASE + MR.FW_VERSION.addr]
    await run_core_program(tb, words, 50 * steps, "fetch faults")
    got = await tb.read(R.FW_VERSION)
    assert got == want, f"fetch-fault signature {got:#x}, the ISS's {want:#x}"

    # The interrupt: the timer fires 200 cycles after the program reads TIMESTAMP.
    count = 3000
    handler = [A.csrr(t, "mcause"), A.sw(t, MR.FW_FAULT_CAUSE.addr, mmio),
               A.csrr(t, "mepc"), A.sw(t, MR.FW_FAULT_PC.addr, mmio)]
    handler += A.li(t, MR.WORK_MASK.TIMER.mask) + [A.sw(t, MR.WORK_MASK.addr, mmio), A.mret()]
    words = [A.jal(0, 4 * (1 + len(handler)))] + handler
    words += A.li(mmio, MMIO_BASE) + A.li(t, 4) + [A.csrw("mtvec", t), A.addi(8, 0, 0)]
    words += [A.lw(t, MR.TIMESTAMP.addr, mmio), A.addi(t, t, 200), A.sw(t, MR.TIMER.addr, mmio),
              A.sw(0, MR.WORK_MASK.addr, mmio)]
    words += A.li(t, 1 << 11) + [A.csrs("mie", t), A.csrrsi(0, "mstatus", 8)] + A.li(9, count)
    loop = 4 * len(words)
    words += [A.addi(8, 8, 1), A.bne(8, 9, -4)]
    words += [A.sw(8, MR.FW_VERSION.addr, mmio), A.HALT_INSN]
    await run_core_program(tb, words, 20 * count, "timer interrupt")
    cause, epc = await tb.read(R.FW_FAULT_CAUSE), await tb.read(R.FW_FAULT_PC)
    assert cause == 0x8000_000B, f"mcause {cause:#x}: not the machine external interrupt"
    assert epc in (loop, loop + 4), f"mepc {epc:#x} is not in the counting loop at {loop:#x}"
    assert await tb.read(R.FW_VERSION) == count, "the loop did not run to its end after the mret"
    tb.log.info(f"fetch faults match the ISS; the timer interrupt came at pc {epc:#x}")
    await tb.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))


@cocotb.test()
async def host_registers_hold_what_is_written(dut):
    """Every host register made only of rw fields, except CORE_CTRL and Q_CTRL* (they start the
    core or a queue), walked with a one and a zero through each field bit over a random
    background (bits outside the fields set at random too): each write reads back as written,
    masked to the fields, and a final sweep finds every register holding its last value (no
    write reached another register). Then every register without a writable field (const, ro)
    takes a random write and its complement and must read as before: with the core held, the
    engines idle and the PERF_* counters frozen they all hold still, except TIMESTAMP, which
    counts on. Last, every register is read once and pulse fields must read 0. The core is held
    and the queues are disabled, so the values configure nothing that runs."""
    import random

    tb = ChipTB(dut)
    await _reset(tb)
    rng = random.Random(tb.seed)
    regs = [r for r in R.REGISTERS.values()
            if r.fields and all(f.kind == "rw" for f in r.fields)
            and r.name != "CORE_CTRL" and not r.name.startswith("Q_CTRL")]
    last = {}
    for reg in regs:
        mask = sum(f.mask for f in reg.fields)
        for bit in (b for b in range(32) if mask >> b & 1):
            background = rng.getrandbits(32)
            for level in (1, 0):
                value = (background & ~(1 << bit)) | level << bit
                await tb.write(reg, value)
                got = await tb.read(reg)
                assert got == value & mask, (f"{reg.name} bit {bit} = {level}: wrote {value:#x}, "
                                             f"read {got:#x} (fields {mask:#x})")
                last[reg.name] = got
    for reg in regs:
        got = await tb.read(reg)
        assert got == last[reg.name], f"{reg.name} reads {got:#x}, last written {last[reg.name]:#x}"
    await tb.write(R.PERF_CTRL, R.PERF_CTRL.FREEZE.put(1))
    fixed = [r for r in R.REGISTERS.values() if all(f.kind in ("ro", "const") for f in r.fields)]
    for reg in fixed:
        before = await tb.read(reg)
        junk = rng.getrandbits(32)
        for value in (junk, ~junk & 0xFFFF_FFFF):
            await tb.write(reg, value)
            after = await tb.read(reg)
            if reg is R.TIMESTAMP:
                assert (after - before) & 0xFFFF_FFFF < 1000, f"TIMESTAMP jumped to {after:#x}"
            else:
                assert after == before, f"a write of {value:#x} changed {reg.name}: {before:#x} -> {after:#x}"
            before = after
    await tb.write(R.PERF_CTRL, 0)
    # the rest (strobes, pulses, CORE_CTRL, Q_CTRL*, IRQ_STATUS) read once too: pulses read 0
    for reg in R.REGISTERS.values():
        value = await tb.read(reg)
        pulses = [f.name for f in reg.fields if f.kind == "pulse" and f.get(value)]
        assert not pulses, f"{reg.name} reads {value:#x}: pulse fields {pulses} are not 0"
    tb.log.info(f"{len(regs)} registers, {sum(bin(sum(f.mask for f in r.fields)).count('1') for r in regs)} "
                f"bits walked; writes to {len(fixed)} read-only registers ignored")


@cocotb.test()
async def core_mmio_read_only_registers_ignore_writes(dut):
    """The control core reads every MMIO register, and writes the complement of what it read to
    every one without a writable field: a second read must give the first value again (the
    difference of each is OR-ed into FW_FAULT_TVAL, which must read 0, and FW_VERSION gets the
    number of registers checked). TIMESTAMP, which counts on, takes the write unchecked. With
    the queues disabled and the engines idle nothing else moves them."""
    from golden import rv32_asm as A
    from golden.rv32_iss import MMIO_BASE
    from spec import mmio_registers as MR

    tb = ChipTB(dut)
    await _reset(tb)
    mmio, acc, first, second, t = 20, 21, 5, 6, 7
    words = A.li(mmio, MMIO_BASE) + [A.addi(acc, 0, 0)]
    checked = 0
    for reg in sorted(MR.REGISTERS.values(), key=lambda r: r.addr):
        if not all(f.kind == "ro" for f in reg.fields):
            words += [A.lw(first, reg.addr, mmio)]          # a read, no write
            continue
        words += [A.lw(first, reg.addr, mmio), A.xori(t, first, -1), A.sw(t, reg.addr, mmio),
                  A.lw(second, reg.addr, mmio)]
        if reg is not MR.TIMESTAMP:
            words += [A.R_ENC["xor"](t, first, second), A.R_ENC["or"](acc, acc, t)]
            checked += 1
    words += [A.sw(acc, MR.FW_FAULT_TVAL.addr, mmio), A.addi(t, 0, checked),
              A.sw(t, MR.FW_VERSION.addr, mmio), A.HALT_INSN]
    await run_core_program(tb, words, 20 * len(words), "MMIO read-only writes")
    assert await tb.read(R.FW_VERSION) == checked, "the program did not finish its checks"
    diff = await tb.read(R.FW_FAULT_TVAL)
    assert diff == 0, f"writes changed bits {diff:#x} of read-only MMIO registers"
    tb.log.info(f"{checked} read-only MMIO registers ignored the core's writes")
    await tb.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))


async def _csr_script(csr, clk):
    """A fixed mix of CSR accesses through ``csr`` (a CsrMaster or cocotbext-axi behind its
    interface): back to back, after edge waits, from a timer that expires at a rising edge's
    time (before that edge is evaluated), and a read overlapping a write. Returns per access
    (what, cycles from the script's start to the call, cycles the call took, data read; TIMESTAMP
    reads as the difference from the previous TIMESTAMP read)."""
    from cocotb.triggers import RisingEdge, Timer
    from cocotb.utils import get_sim_time

    from verif.soc_target import CLOCK_NS, FIRST_EDGE_NS

    def cycle():
        t = int(get_sim_time("ns")) - FIRST_EDGE_NS
        return t // CLOCK_NS - (t % CLOCK_NS == 0 and not int(clk.value))

    out, last_ts = [], [None]
    await RisingEdge(clk)
    start = cycle()

    async def access(what, coro):
        c0 = cycle()
        value = await coro
        if what == "ts":
            value, last_ts[0] = (None if last_ts[0] is None else (value - last_ts[0]) & 0xFFFF_FFFF,
                                 value)
        out.append((what, c0 - start, cycle() - c0, value))

    reg = R.BUS_TIMEOUT                 # rw, configures nothing while the engines are idle
    for k in range(3):
        await access("ts", csr.read(R.TIMESTAMP.addr))
    for value in (0x1234, 0xFFFF_0000, 7):
        await access("w", csr.write(reg.addr, value))
        await access("r", csr.read(reg.addr))
        await access("ts", csr.read(R.TIMESTAMP.addr))
    for n in (1, 2, 5):
        await ClockCycles(clk, n)
        await access("ts", csr.read(R.TIMESTAMP.addr))
        await access("w", csr.write(reg.addr, n))
    for n in (1, 3):                    # a timer expiring at a rising edge's time, before it
        await Timer(n * CLOCK_NS, "ns")
        await access("ts", csr.read(R.TIMESTAMP.addr))
        await Timer(n * CLOCK_NS, "ns")
        await access("w", csr.write(reg.addr, n))
    both = [cocotb.start_soon(access("w", csr.write(reg.addr, 99))),
            cocotb.start_soon(access("ts", csr.read(R.TIMESTAMP.addr)))]
    for task in both:
        await task
    await access("r", csr.read(reg.addr))
    return out


@cocotb.test()
async def csr_masters_agree(dut):
    """verif/csr_master.py's CsrMaster (ChipTB's CSR master) against cocotbext-axi's
    AxiLiteMaster on the same pins: the same accesses from the same kinds of call points take
    the same cycles and read the same data, and TIMESTAMP advances by the same amounts between
    reads (so each access reaches the chip at the same cycle relative to its call)."""
    tb = ChipTB(dut)
    assert tb.csr.__class__.__name__ == "CsrMaster"
    await _reset(tb)
    lean = await _csr_script(tb.csr, dut.clk)
    other = CocotbextCsr(dut)          # takes over the pins (its sinks raise READY an edge later)
    await ClockCycles(dut.clk, 4)
    theirs = await _csr_script(other, dut.clk)
    assert lean == theirs, "\n".join(f"{a} != {b}" for a, b in zip(lean, theirs) if a != b)
    tb.log.info(f"{len(lean)} accesses: same cycles and data with both masters "
                f"({sum(1 for a in lean if a[0] != 'w')} reads)")
