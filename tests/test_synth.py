"""The quick structural synthesis check of `make test` (tools/synth.py), and that it can fail.

The full flow (synth_ecp5, place and route of every configuration) is `make synth`; here only the
4x4 chip goes through elaboration, ``proc``, memory inference and the loop check (~25 s), and tiny
designs show each rule catches what it is for.
"""
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
    assert 20 < res.fmax_mhz < 1000
    assert res.critical_from.endswith(".Q") and res.critical_to, res.critical_path
    assert [step for step in res.critical_path if step[0] == "routing"]
    md = synth.markdown([synth.asdict(res)])
    assert f"{res.fmax_mhz:.1f} | routed" in md
