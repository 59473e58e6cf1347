"""The quick structural synthesis check of `make test` (tools/synth.py), and that it can fail.

The full flow (synth_ecp5, place and route of every configuration) is `make synth`; here only the
4x4 chip goes through elaboration, ``proc``, memory inference and the loop check (~25 s), and tiny
designs show each rule catches what it is for.
"""
import argparse
import json
import re

import pytest

from tools import synth

SRAM = (synth.REPO / "rtl" / f"{synth.SRAM_MODULE}.v").read_text()


def _tiny(tmp_path, name, body, srams=0):
    top = f"tiny_{name}"
    text = f"module {top}(input clk, input [3:0] a, input en, output reg [3:0] q, output [3:0] y);\n{body}\nendmodule\n"
    return synth.Target(f"test_{name}", top, {f"{synth.SRAM_MODULE}.v": SRAM, f"{top}.v": text}, "", srams, tmp_path)


def test_chip_4x4_structure():
    res = synth.synthesize(synth.Target.for_dim(4), full=False)
    assert res.srams_in_bram == synth.Target.for_dim(4).srams > 0


def test_latch_is_an_error(tmp_path):
    target = _tiny(tmp_path, "latch", "always @* if (en) q = a;\nassign y = a;")
    with pytest.raises(synth.SynthError, match="(?i)latch"):
        synth.synthesize(target, full=False)


def test_combinational_loop_is_an_error(tmp_path):
    target = _tiny(tmp_path, "loop", "wire [3:0] b = y ^ a;\nassign y = b + 1;\nalways @(posedge clk) q <= y;")
    with pytest.raises(synth.SynthError, match="(?i)loop"):
        synth.synthesize(target, full=False)


def test_sram_macro_outside_block_ram_is_an_error(tmp_path):
    # A 16x4 macro fits distributed RAM, which memory_libmap prefers: the rule must reject it.
    body = (f"{synth.SRAM_MODULE} #(.WIDTH(4), .DEPTH(16), .AW(4)) m (.clk(clk), .ren(en), .raddr(a), "
            ".rdata(y), .wen(en), .waddr(a), .wdata(a));\nalways @(posedge clk) q <= a;")
    with pytest.raises(synth.SynthError, match="not in block RAM"):
        synth.synthesize(_tiny(tmp_path, "lutram", body, srams=1), full=False)


def test_place_and_route_reports_the_routed_clock_and_path(tmp_path):
    # A registered 16x16 multiply-accumulate: small enough to route in seconds, with a DSP path.
    body = ("reg [3:0] ra, rb; reg [15:0] acc;\nalways @(posedge clk) begin ra <= a; rb <= {a[1:0], a[3:2]};"
            " acc <= acc + ra * rb; q <= acc[15:12]; end\nassign y = acc[3:0];")
    target = _tiny(tmp_path, "mac", body)
    res = synth.synthesize(target)
    assert res.luts > 0 and res.ffs >= 24
    synth.place_and_route(target, res, budget_s=600, seed=1)
    assert res.timing == "routed", res.timing
    log = (tmp_path / target.config / "pnr.log").read_text()
    assert re.search(r"routing clock net \S+ using global \d+", log), "the clock is not on a global network"
    # nextpnr routes it there alone: no path of the report starts with clock skew from the fabric
    assert "clk-skew" not in log
    assert 20 < res.fmax_mhz < 1000
    assert res.critical_from.endswith(".Q") and res.critical_to, res.critical_path
    assert [step for step in res.critical_path if step[0] == "routing"]
    md = synth.markdown([synth.asdict(res)])
    assert f"{res.fmax_mhz:.1f} | routed" in md


@pytest.mark.slow   # synthesis of a design of its own: make regress
def test_high_fanout_enable_is_put_on_a_global_network(tmp_path, monkeypatch):
    # A registered enable of 64 flip-flops: with the threshold at 32 it gets a DCCA of its own.
    body = ("reg go; reg [63:0] r;\nalways @(posedge clk) begin go <= a[0] ^ a[1]; "
            "if (go) r <= {r[59:0], a}; q <= r[63:60] ^ r[3:0]; end\nassign y = r[35:32];")
    monkeypatch.setattr(synth, "GLOBAL_MIN_FANOUT", 32)
    target = _tiny(tmp_path, "fanout", body)
    res = synth.synthesize(target)
    assert [net for net, _ in res.global_nets] == ["go"], res.global_nets
    assert res.global_nets[0][1] >= 64
    synth.place_and_route(target, res, budget_s=600, seed=1)
    assert res.timing == "routed", res.timing
    log = (tmp_path / target.config / "pnr.log").read_text()
    assert len(re.findall(r"routing clock net \S+ using global \d+", log)) == 2, "clock and enable on globals"


def test_promotion_leaves_small_and_port_driven_nets_alone():
    cell = lambda t, ins, outs: {"type": t, "port_directions": {**{p: "input" for p in ins},
                                                                **{p: "output" for p in outs}},
                                 "connections": {**ins, **outs}}
    cells = {"drv": cell("LUT4", {"A": [2]}, {"Z": [3]})}
    cells |= {f"ff{i}": cell("TRELLIS_FF", {"CE": [3], "LSR": [2], "DI": [2]}, {"Q": [10 + i]}) for i in range(8)}
    netlist = {"modules": {"top": {"ports": {"rst": {"direction": "input", "bits": [2]}}, "cells": cells,
                                   "netnames": {"rst": {"bits": [2]}, "en": {"bits": [3]}}}}}
    assert synth.promote_fanout(netlist, "top", min_fanout=9) == []
    assert synth.promote_fanout(netlist, "top", limit=0, min_fanout=1) == []    # --globals 0
    assert synth.promote_fanout(netlist, "top", min_fanout=8) == [("en", 8)]   # not rst: a port drives it
    mod = netlist["modules"]["top"]
    dcca = next(c for c in mod["cells"].values() if c["type"] == "DCCA")
    assert dcca["connections"]["CLKI"] == [3] and cells["drv"]["connections"]["Z"] == [3]
    assert all(cells[f"ff{i}"]["connections"]["CE"] == dcca["connections"]["CLKO"] for i in range(8))


def test_block_of_the_chip_is_a_target_of_its_own():
    chip = synth.Target.for_dim(4)
    assert {"control", "gemm", "vec", "dma", "qc"} <= set(chip.blocks())
    block = chip.block("control")
    assert block.top == f"{chip.top}.control" and block.config == f"{chip.config}.control"
    assert block.srams is None                       # counted from the mapping log instead
    assert f"synth_ecp5 -top \\{block.top}" in synth.yosys_script(block, full=True)
    with pytest.raises(synth.SynthError, match=r"no block 'nope' in kaki_soc_4x4: choose one of .*control"):
        chip.block("nope")


def test_keep_cuts_the_other_blocks_out(tmp_path):
    # Two blocks: a wide multiplier (cut out) and a counter (kept); the top's glue adds their outputs.
    blocks = {"mul": "reg [31:0] p; always @(posedge clk) p <= {a, a, a, a, a, a, a, a} * {a, a, a, a, a, a, a, a}; "
                     "assign y = p[31:28];",
              "cnt": "reg [3:0] c; always @(posedge clk) c <= c + a; assign y = c;"}
    top = "tiny_keep"
    text = "".join(f"module \\{top}.{n} (input clk, input [3:0] a, output [3:0] y);\n{b}\nendmodule\n"
                   for n, b in blocks.items())
    text += (f"module {top}(input clk, input [3:0] a, output reg [3:0] q);\nwire [3:0] m, c;\n"
             f"\\{top}.mul mul (.clk(clk), .a(a), .y(m));\n\\{top}.cnt cnt (.clk(clk), .a(a), .y(c));\n"
             "always @(posedge clk) q <= m + c;\nendmodule\n")
    chip = synth.Target("test_keep", top, {f"{top}.v": text}, "", 0, tmp_path)
    assert chip.blocks() == ["cnt", "mul"]
    kept = chip.keep(("cnt",))
    assert kept.cut == ("mul",) and kept.config == "test_keep.keep-cnt" and kept.srams is None
    script = synth.yosys_script(kept, full=True)
    assert f"blackbox \\{top}.mul" in script and f"expose -evert t:\\{top}.mul" in script
    res = synth.synthesize(kept)
    assert res.dsps == 0 and res.ffs >= 8             # the multiplier is gone, counter and q are left
    netlist = json.loads((tmp_path / kept.config / f"{top}.json").read_text())
    ports = netlist["modules"][top]["ports"]
    assert any(name.startswith("mul.") for name in ports), sorted(ports)   # its pins are top ports now
    with pytest.raises(synth.SynthError, match=r"\['nope'\] not blocks of tiny_keep: choose among cnt, mul"):
        chip.keep(("nope",))


def test_critical_path_folds_by_signal():
    path = [("clk-to-q", 0.5, "core.ir_TRELLIS_FF_Q.Q"), ("routing", 1.0, "core.x_LUT4_Z.A"),
            ("logic", 0.25, "core.x_LUT4_Z.F"), ("routing", 0.0, "core.x_CCU2C_COUT$CCU2_COMB0.FCI"),
            ("logic", 0.5, "$nextpnr_CCU2C_3$CCU2_COMB0.F"), ("routing", 0.75, "$nextpnr_CCU2C_4$CCU2_COMB1.A"),
            ("setup", 0.0, "core.y_TRELLIS_FF_Q.M")]
    assert synth.path_summary(path) == [("core.ir", 0.5, 1), ("core.x", 1.25, 3),
                                         ("nextpnr carry", 1.25, 2), ("core.y", 0.0, 1)]


def test_collect_reads_an_earlier_runs_folder(tmp_path, monkeypatch):
    chip = synth.Target.for_dim(4)
    moved = synth.Target(chip.config, chip.top, chip.sources, chip.variant, chip.srams, tmp_path)
    monkeypatch.setattr(synth.Target, "for_dim", classmethod(lambda cls, dim: moved))
    with pytest.raises(synth.SynthError, match=r"4x4: no synthesis in .* to collect: run make synth"):
        synth.collect(4)
    d = tmp_path / "4x4"
    d.mkdir()
    cells = {"LUT4": 10, "CCU2C": 2, "TRELLIS_FF": 7, "DP16KD": chip.srams, "MULT18X18D": 1}
    (d / "stat.json").write_text(synth.json.dumps({"modules": {f"\\{chip.top}": {"num_cells_by_type": cells}}}))
    (d / "synth.log").write_text("".join(f"mapping memory top.m{i}.macro.mem via $__DP16KD_\n"
                                         for i in range(chip.srams)))
    (d / "pnr.log").write_text("Info: Max frequency for clock 'clk': 31.50 MHz (FAIL at 50.00 MHz)\n")
    res = synth.collect(4)
    assert (res.luts, res.ffs, res.fmax_mhz, res.timing) == (14, 7, 31.5, "placed")


def _two_multipliers(tmp_path, soft_mul=()):
    """A top whose blocks ``\\<top>.hard`` and ``\\<top>.soft`` each hold one registered 8x8 multiply."""
    top = "tiny_mul"
    block = ("reg [7:0] ra, rb; reg [15:0] p; always @(posedge clk) begin ra <= {ra[3:0], a}; rb <= {a, rb[7:4]}; "
             "p <= $signed(ra) * $signed(rb); end assign y = p[15:12] ^ p[3:0];")
    text = "".join(f"module \\{top}.{n} (input clk, input [3:0] a, output [3:0] y);\n{block}\nendmodule\n"
                   for n in ("hard", "soft"))
    text += (f"module {top}(input clk, input [3:0] a, output reg [3:0] q);\nwire [3:0] h, s;\n"
             f"\\{top}.hard hard (.clk(clk), .a(a), .y(h));\n\\{top}.soft soft (.clk(clk), .a(a), .y(s));\n"
             "always @(posedge clk) q <= h ^ s;\nendmodule\n")
    return synth.Target("test_mul", top, {f"{top}.v": text}, "", 0, tmp_path,
                        soft_mul=tuple(f"{top}.{b}" for b in soft_mul))


@pytest.mark.slow   # synthesis of a design of its own: make regress
def test_soft_multipliers_leave_the_dsps_to_the_other_blocks(tmp_path):
    assert synth.synthesize(_two_multipliers(tmp_path)).dsps == 2
    res = synth.synthesize(_two_multipliers(tmp_path, ("soft",)))
    assert res.dsps == 1 and res.lut4 > 20          # one multiplier is logic now
    sixteen = synth.Target.for_dim(16)
    assert sixteen.soft_mul == ("kaki_soc_16x16.gemm.array",) and "in LUTs" in sixteen.variant


def test_a_design_larger_than_the_device_is_reported_not_placed(tmp_path, monkeypatch):
    monkeypatch.setitem(synth.DEVICE, "MULT18X18D", 1)
    target = _two_multipliers(tmp_path)
    res = synth.synthesize(target)
    assert res.overflow == {"MULT18X18D": (2, 1)}
    synth.place_and_route(target, res, budget_s=60, seed=1)
    assert res.timing == "none: does not fit the LFE5U-85F (2 MULT18X18D of 1)" and res.fmax_mhz == 0
    assert "| — | none: does not fit" in synth.markdown([synth.asdict(res)])
    # nextpnr's own verdict (LUTs are only counted by it): its utilisation lines over 100 %
    (tmp_path / "pnr.log").write_text("Info: \t          TRELLIS_FF:   39283/  83640    46%\n"
                                      "Info: \t        TRELLIS_COMB:  123465/  83640   147%\n"
                                      "ERROR: Unable to place cell 'x', no BELs remaining\n")
    res = synth.read_timing(tmp_path, synth.Result("16x16", "", "LFE5U-85F-6"), False, "")
    assert res.timing == "none: does not fit the LFE5U-85F (123,465 TRELLIS_COMB of 83,640)"


@pytest.mark.slow   # synthesis of a design of its own: make regress
def test_fpga_variant_with_other_memory_sizes_is_a_target_of_its_own():
    target = synth.Target.for_dim(8, synth._rows("spad_bank_rows=1024,acc_bank_rows=512"))
    assert target.config == "8x8-spad_bank_rows1024-acc_bank_rows512"
    assert target.variant == "spad_bank_rows=1024 (rtl/: 4096), acc_bank_rows=512 (rtl/: 4096)"
    soc = target.sources["kaki_soc_8x8.v"]
    assert ".DEPTH(32'd1024)" in soc and ".DEPTH(32'd512)" in soc and ".DEPTH(32'd4096)" in soc  # IMEM
    for bad in ("spad_bank_rows=1000", "dim=4", "acc_bank_rows"):
        with pytest.raises(argparse.ArgumentTypeError, match="power of two|FIELD=N"):
            synth._rows(bad)
