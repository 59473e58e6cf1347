"""The command table (hdl_gen/descriptor.py ``COMMANDS``) is the one definition of the opcodes, the
engine serving each and the chip constants: what ``make rtl`` generates from a changed table, the
rejection of malformed tables, and the per-engine registers and chip constants kept in step with it."""
import dataclasses
import re
import sys

import pytest

from hdl_gen import descriptor as D
from hdl_gen import generate as G
from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import COMMANDS, Command, Engine, check_commands
from spec import chip
from spec import descriptors as SD
from spec import mmio_registers as M
from spec import registers as R
from spec.capabilities import Capabilities
from spec.commands import PAYLOAD_FIELDS, decode, encode

#: The real table plus an engine opcode served by an existing engine and a firmware-served one.
DUMMY = COMMANDS + (Command("DUMMY", 200, Engine.GEMM, "gemm", "test: a second GEMM opcode"),
                    Command("FW_DUMMY", 201, None, None, "test: served by the firmware"))


def _exec_descriptors_py(table):
    ns = {"__name__": "generated_descriptors"}
    sys.modules["generated_descriptors"] = type(sys)("generated_descriptors")   # for @dataclass
    try:
        exec(compile(G.descriptors_py(table), "<spec/descriptors.py>", "exec"), ns)
    finally:
        del sys.modules["generated_descriptors"]
    return ns


# ---------------------------------------------------------------- (a) a new row reaches every output

def test_new_opcode_reaches_generated_python():
    ns = _exec_descriptors_py(DUMMY)
    op, eng = ns["Opcode"], ns["Engine"]
    assert op.DUMMY == 200 and op.FW_DUMMY == 201
    row = ns["COMMANDS"][op.DUMMY]
    assert row.engine == eng.GEMM and row.fields == ns["GEMM_FIELDS"] and "second GEMM" in row.doc
    assert ns["COMMANDS"][op.FW_DUMMY].engine is None and ns["COMMANDS"][op.FW_DUMMY].fields == {}
    assert op.DUMMY in ns["ENGINE_OPCODES"] and op.GEMM in ns["ENGINE_OPCODES"]
    assert op.FW_DUMMY in ns["FIRMWARE_OPCODES"] and op.DUMMY not in ns["FIRMWARE_OPCODES"]
    # the real table generates what spec/descriptors.py holds
    real = _exec_descriptors_py(COMMANDS)
    assert {o.name: o.value for o in real["Opcode"]} == {o.name: o.value for o in SD.Opcode}
    assert {(int(o), None if c.engine is None else c.engine.name) for o, c in real["COMMANDS"].items()} \
        == {(int(o), None if c.engine is None else c.engine.name) for o, c in SD.COMMANDS.items()}


def test_new_opcode_reaches_c_header():
    h = G.descriptors_header(DUMMY)
    assert "#define KAKI_OP_DUMMY 200" in h and "#define KAKI_OP_FW_DUMMY 201" in h
    assert "case KAKI_OP_DUMMY: return KAKI_ENGINE_GEMM;" in h
    assert "case KAKI_OP_FW_DUMMY: return KAKI_ENGINE_FIRMWARE;" in h
    assert f"#define KAKI_ENGINES {len(Engine)}" in h


def _c_checks(table):
    """A C test image: main() returns 0 if kaki_op_engine() maps every opcode of ``table`` to its
    engine, else bit i for the i-th row that is wrong (bit 30: an unknown opcode, bit 29: count)."""
    used = {c.opcode for c in table}
    unknown = next(v for v in range(255, -1, -1) if v not in used)
    lines = ['#include "kaki_desc.h"',
             "unsigned kaki_trap(unsigned cause, unsigned pc, unsigned tval)",
             "{ (void)cause; (void)pc; (void)tval; for (;;) {} }",
             "int main(void)", "{", "    int bad = 0;"]
    for i, c in enumerate(table):
        want = f"KAKI_ENGINE_{c.engine.name}" if c.engine is not None else "KAKI_ENGINE_FIRMWARE"
        lines.append(f"    _Static_assert(KAKI_OP_{c.name} == {c.opcode}, \"KAKI_OP_{c.name}\");")
        lines.append(f"    if (kaki_op_engine(KAKI_OP_{c.name}) != {want}) bad |= 1 << {i};")
    lines += [f"    if (kaki_op_engine({unknown}) != KAKI_ENGINE_UNKNOWN) bad |= 1 << 30;",
              f"    if (KAKI_ENGINES != {len(Engine)}) bad |= 1 << 29;", "    return bad;", "}", ""]
    return "\n".join(lines)


def test_new_opcode_compiles_and_runs_in_c(tmp_path):
    """The generated header compiles with the firmware's clang (firmware/build.py) and
    kaki_op_engine() answers for every row, checked by running the image on the RV32 ISS."""
    pytest.importorskip("ziglang")
    from firmware.build import build
    from golden.rv32_iss import RV32ISS
    from spec.firmware_image import FirmwareImage

    assert len(DUMMY) < 29
    (tmp_path / "kaki_desc.h").write_text(G.descriptors_header(DUMMY))   # found before firmware/include
    src = tmp_path / "check_table.c"
    src.write_text(_c_checks(DUMMY))
    iss = RV32ISS(FirmwareImage.from_elf(build(tmp_path / "check_table.elf", sources=[src])).imem)
    iss.run(100_000)
    assert iss.sleeping, "main() did not return"
    assert iss.regs[10] == 0, f"kaki_op_engine() wrong for rows {iss.regs[10]:#x} of {[c.name for c in DUMMY]}"


def test_new_opcode_reaches_markdown():
    md = G.descriptors_markdown(DUMMY)
    assert "| 200 | `DUMMY` | GEMM | `gemm` | test: a second GEMM opcode |" in md
    assert "| 201 | `FW_DUMMY` | *firmware* | — | test: served by the firmware |" in md


def test_dispatcher_routes_two_opcodes_to_one_engine(monkeypatch):
    """With DUMMY in the table the dispatcher queues it for the GEMM engine, like GEMM, and
    refuses the firmware-served FW_DUMMY with BAD_OPCODE."""
    from amaranth.sim import Simulator

    from hdl_gen import dispatcher as DP
    monkeypatch.setattr(DP, "engine_opcodes", lambda engine: D.engine_opcodes(engine, DUMMY))
    dut = DP.Dispatcher()
    rejects, queued = {}, []

    async def bench(ctx):
        for opcode in (SD.Opcode.GEMM, 200, SD.Opcode.DMA_LOAD, 201):
            ctx.set(dut.desc, opcode)
            ctx.set(dut.submit, 1)
            rejects[int(opcode)] = (ctx.get(dut.reject.done), ctx.get(dut.reject.error).value)
            await ctx.tick()
        ctx.set(dut.submit, 0)
        for e in Engine:
            ctx.set(getattr(dut, DP.port_name(e)).ready, 1)
        for _ in range(8):
            for e in Engine:
                port = getattr(dut, DP.port_name(e))
                if ctx.get(port.valid):
                    queued.append((e.name, int(ctx.get(port.payload.desc.opcode.as_value()))))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert rejects[200] == rejects[SD.Opcode.GEMM] == rejects[SD.Opcode.DMA_LOAD] == (0, 0), rejects
    assert rejects[201] == (1, D.ErrorCode.BAD_OPCODE.value), rejects
    assert sorted(queued) == [("DMA_LOAD", 1), ("GEMM", 3), ("GEMM", 200)], queued


# ---------------------------------------------------------------- (b) malformed tables

@pytest.mark.parametrize("row,culprit", [
    (Command("GEMM", 200, Engine.GEMM, "gemm", "duplicate name"), r"duplicate name \['GEMM'\]"),
    (Command("OTHER", 3, Engine.GEMM, "gemm", "duplicate value"), r"duplicate opcode 3 \(GEMM and OTHER\)"),
    (Command("ODD", 200, Engine.GEMM, "matrix", "unknown payload"), r"ODD payload 'matrix'"),
    (Command("BIG", 256, Engine.GEMM, "gemm", "too large"), r"BIG opcode 256 does not fit"),
    (Command("NEG", -1, None, None, "negative"), r"NEG opcode -1 does not fit"),
    (Command("WHO", 200, 2, "gemm", "engine by number"), r"WHO engine 2 is not an Engine"),
])
def test_malformed_table_is_rejected(row, culprit):
    table = COMMANDS + (row,)
    for check in (check_commands, G.descriptors_py, G.descriptors_header, G.descriptors_markdown):
        with pytest.raises(ValueError, match=culprit):
            check(table)


# ---------------------------------------------------------------- (c) per-engine registers

def test_engines_match_between_hdl_gen_and_spec():
    assert [(e.name, e.value) for e in SD.Engine] == [(e.name, e.value) for e in Engine]
    assert [e.value for e in Engine] == list(range(len(Engine)))


@pytest.mark.parametrize("engine", list(Engine), ids=lambda e: e.name)
def test_every_engine_has_its_registers(engine):
    n, e = engine.name, engine.value
    for reg in (f"DONE_{n}", f"PERF_{n}_BUSY", f"PERF_{n}_FULL"):
        assert reg in R.REGISTERS, f"kaki_regs.rdl has no {reg}"
    assert getattr(R.STATUS, f"{n}_BUSY").lsb == e, f"STATUS.{n}_BUSY is not bit {e}"
    for reg in (R.IRQ_STATUS, R.IRQ_ENABLE):
        assert getattr(reg, f"{n}_DONE").lsb == e, f"{reg.name}.{n}_DONE is not bit {e}"
    for field in (M.WORK.HUNG, M.ENGINE_RESET.ENGINE):    # the firmware's watchdog, per engine
        assert e < field.width, f"kaki_mmio.rdl has no bit {e} in {field.name}"


def test_engine_bit_vectors_cover_every_engine():
    for field in (M.WORK.HUNG, M.ENGINE_RESET.ENGINE):
        assert field.width == len(Engine)
    for f in R.DEBUG_HANG.fields:           # fault injection is per engine, by name and bit
        assert f.lsb == Engine[f.name].value


# ---------------------------------------------------------------- (d) chip constants

def test_spec_chip_matches_kaki_config():
    cfg = KakiConfig()
    assert chip.DEFAULTS == {f.name: getattr(cfg, f.name) for f in dataclasses.fields(KakiConfig)}
    assert (chip.QUEUES, chip.EVENTS, chip.FIFO_DEPTH, chip.PREFETCH, chip.CPL_DEPTH, chip.RETIRE_DEPTH,
            chip.INFLIGHT) == (cfg.queues, cfg.events, cfg.fifo_depth, cfg.prefetch, cfg.cpl_depth,
                               cfg.retire_depth, cfg.inflight)


def test_register_map_sized_for_the_chip_constants():
    assert sum(1 for n in R.REGISTERS if re.fullmatch(r"Q_RING_BASE\d+", n)) == chip.QUEUES
    assert sum(1 for n in R.REGISTERS if re.fullmatch(r"EVENT\d+", n)) == chip.EVENTS
    assert R.IRQ_STATUS.QUEUE_CPL.width == R.IRQ_STATUS.QUEUE_ERROR.width == chip.QUEUES


def test_golden_chip_reports_the_chip_constants():
    from golden.chip_model import ChipModel

    caps = Capabilities.default()
    assert (caps.queues, caps.fifo_depth) == (chip.QUEUES, chip.FIFO_DEPTH)
    q = R.CAP_QUEUES.decode(ChipModel(caps).read(R.CAP_QUEUES))
    assert q == {"QUEUES": chip.QUEUES, "FIFO_DEPTH": chip.FIFO_DEPTH, "PREFETCH": chip.PREFETCH,
                 "EVENTS": chip.EVENTS}


# ---------------------------------------------------------------- (e) codec

@pytest.mark.parametrize("opcode", list(SD.Opcode), ids=lambda o: o.name)
def test_encode_decode_round_trip(opcode):
    row = SD.COMMANDS[opcode]
    assert PAYLOAD_FIELDS[opcode] is row.fields
    fields = {}
    for k, (name, (_, width)) in enumerate(sorted(row.fields.items())):
        if not name.split(".")[-1].startswith("reserved"):
            fields[name] = (0x9E3779B97F4A7C15 * (k + 1) >> 7) & ((1 << width) - 1)
    words = encode(opcode, irq=True, tag=0xBEEF, **fields)
    d = decode(words)
    assert d["opcode"] is opcode and d["tag"] == 0xBEEF and d["flags.irq"] == 1
    assert {k: d[k] for k in fields} == fields
    assert set(d) == set(SD.DESCRIPTOR_FIELDS) | set(row.fields)
