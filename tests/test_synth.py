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
