"""make waves: START/STOP become the trace window of the waves build's main loop (a marked copy of
cocotb's verilator.cpp swapped into the build command); a dump's time bounds and clock period
read back; the GTKWave save file groups signals by block and skips Verilator's $rootio.
The simulator side is cocotb_tests/test_waves_window.py."""
import hashlib
import re

import pytest

import cocotb_tools.config
from tools import simbuild
from tools import waves as W

VCD = """$version test $end
$timescale 1ps $end
 $scope module $rootio $end
  $var wire 1 ! clk $end
 $upscope $end
 $scope module top $end
  $var wire 1 ! clk $end
  $var wire 1 " irq $end
  $scope module soc $end
   $scope module qc $end
    $var wire 2 # fetch_fsm_state [1:0] $end
    $var wire 8 $ scratch [7:0] $end
   $upscope $end
   $scope module control $end
    $scope module core $end
     $var wire 32 % trace_pc [31:0] $end
    $upscope $end
   $upscope $end
  $upscope $end
 $upscope $end
$enddefinitions $end
#0
$dumpvars
0!
0"
b0 #
b0 %
$end
#10000
1!
b1 #
#20000
0!
b100 %
#30000
1!
1"
b10 #
#40000
0!
"""


def test_window_args_are_cycle_times_in_precision_units():
    assert W.trace_window_args(1000, 3000, 10) == ["--trace-start", "10000000",
                                                   "--trace-stop", "30000000"]
    assert W.trace_window_args("1000", "3000", 10, "1ns") == ["--trace-start", "10000",
                                                              "--trace-stop", "30000"]
    assert W.trace_window_args(" 7 ", "", 4, "100ps") == ["--trace-start", "280"]
    assert W.trace_window_args("", "50", 10) == ["--trace-stop", "500000"]
    assert W.trace_window_args("0", "0", 10) == ["--trace-stop", "0"]
    assert W.trace_window_args(None, None, 10) == [] == W.trace_window_args("", "", 10)


@pytest.mark.parametrize("start, stop, clock_ns, precision, message", [
    ("3000", "1000", 10, "1ps", "STOP=1000 is before START=3000"),
    ("-5", "", 10, "1ps", "START=-5 is negative"),
    ("1e3", "", 10, "1ps", "START='1e3' is not a whole number"),
    ("", "x", 10, "1ps", "STOP='x' is not a whole number"),
    ("1", "2", 10, "1fs", "unsupported time unit"),
    ("1", "2", 5, "10ns", "not a whole number of 10ns steps"),
])
def test_window_args_reject_bad_windows(start, stop, clock_ns, precision, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        W.trace_window_args(start, stop, clock_ns, precision)


def test_time_bounds_and_clock_period(tmp_path):
    src = tmp_path / "a.vcd"
    src.write_text(VCD)
    assert W.time_bounds(src) == (0, 40000)
    assert W.timescale_ps(src) == 1
    assert W.clock_period(src) == 20000          # top-level clk "!" rises at 10000 and 30000
    assert W.clock_period(src, name="irq") is None  # rises once only
    assert W.clock_period(src, name="trace_pc") is None  # not in the top scope
    # a long file: the last timestamp is found from the tail
    body = "".join(f"#{t}\n{t % 2}!\nb{t:b} %\n" for t in range(50000, 250000, 5))
    src.write_text(VCD.replace("$timescale 1ps $end", "$timescale 10ns $end") + body)
    assert W.time_bounds(src) == (0, 249995)
    assert W.timescale_ps(src) == 10000
    assert W.clock_period(src) == 20000 * 10000
    src.write_text(VCD.split("#0")[0])
    assert W.time_bounds(src) is None and W.clock_period(src) is None


def test_time_bounds_ignores_a_value_line_cut_before_its_identifier(tmp_path):
    """VCD identifiers may start with '#': the tail read must not take a cut line for a time."""
    for pad in range(8):
        text = VCD + "#50000\n" + "b1 #\n" * 20000 + f"b{'0' * pad} %\n"
        cut = len(text) - (1 << 16)                # where time_bounds' first tail read starts
        if text[cut] == "#" and text[cut - 1] == " ":
            break
    else:
        raise AssertionError("no padding puts the cut before an identifier")
    src = tmp_path / "a.vcd"
    src.write_text(text)
    assert W.time_bounds(src) == (0, 50000)


def test_waves_build_swaps_in_the_window_main():
    cocotb_main = cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"
    cmd = ["verilator", "-cc", "--exe", "--trace", str(cocotb_main), "rtl/a.v"]
    assert simbuild.swap_main(cmd) == ["verilator", "-cc", "--exe", "--trace",
                                       str(simbuild.WINDOW_MAIN), "rtl/a.v"]
    with pytest.raises(RuntimeError, match="verilator.cpp"):
        simbuild.swap_main(["verilator", "rtl/a.v"])


def test_window_main_is_cocotbs_plus_marked_changes():
    """Our main must stay cocotb's: dropping the lines marked "kaki" (and the header note) and
    restoring the one moved open() gives back the installed cocotb's verilator.cpp. Fails when
    cocotb is upgraded and its main changed: re-copy it and re-apply the window."""
    cocotb_main = cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"
    ours = simbuild.WINDOW_MAIN.read_text()
    assert ours.startswith(cocotb_main.read_text().split("\n\n", 1)[0])  # cocotb's license header
    assert "--trace-start" in ours and "tfp->open(traceFile);" in ours and "tfp->close();" in ours
    theirs = cocotb_main.read_text()
    dropped = [ln for ln in theirs.splitlines() if ln not in ours.splitlines()]
    # cocotb's lines that our copy lacks: only the eager open, the old include alignment, the
    # usage line we extended, the unconditional "if (tfp) {" we split and the four callback
    # calls of a time step and the value-change passes after two of them made conditional
    # (call_cbs, the file header)
    assert sorted(ln.strip() for ln in dropped) == sorted([
        "tfp->open(traceFile);", "#include <memory>  // std::unique_ptr",
        '"[--trace-file TRACEFILE]\\n"', '"default)\\n",', "if (tfp) {",
        "VerilatedVpi::callCbs(cbReadWriteSynch);", "VerilatedVpi::callCbs(cbReadOnlySynch);",
        "VerilatedVpi::callCbs(cbNextSimTime);", "VerilatedVpi::callTimedCbs();",
        "settle_value_callbacks();", "settle_value_callbacks();"])
    assert hashlib.sha256(theirs.encode()).hexdigest() == COCOTB_MAIN_SHA256, (
        "cocotb's verilator.cpp changed: re-copy it to tools/harness/verilator_window.cpp")


def test_loop_clock_builds_define_the_clock_for_the_main_loop():
    """The chip's target has its clock made by the main loop: the Verilog define and the half
    period in precision units (10 ns clock, 1 ps precision: 5000), and the main toggles ``clk``
    only when built with that half period; targets without it get no options."""
    soc = simbuild.soc_target(8)
    assert soc.loop_clock and soc.clock_ns == 10
    assert simbuild.loop_clock_args(soc) == ["-DKAKI_LOOP_CLOCK", "-CFLAGS",
                                             "-DKAKI_LOOP_CLOCK_HALF=5000"]
    assert simbuild.loop_clock_args(simbuild.SimTarget("t", "t")) == []
    ours = simbuild.WINDOW_MAIN.read_text()
    toggle = ours[ours.index("if (main_time == nextClockToggle)"):]
    assert "top->clk = !top->clk;" in toggle.split("}", 1)[0]
    assert ours.count("#ifdef KAKI_LOOP_CLOCK_HALF") == 4
    assert "`elsif KAKI_LOOP_CLOCK" in (simbuild.BUILD / "gen" / f"{soc.toplevel}.v").read_text()
    # its fast build makes only the top's ports public (not the wires between chip and memory)
    assert "csr__*" in soc.public and not any(p.startswith(("mem__", "pin_")) or p == "*"
                                              for p in soc.public)


COCOTB_MAIN_SHA256 = "95d2661a31cec21f37e82135bbd4f9c809be1e823e36b094064ad271d4850a88"


def test_gtkw_groups_by_block(tmp_path):
    src = tmp_path / "a.vcd"
    src.write_text(VCD)
    counts = W.gtkw(src, tmp_path / "a.gtkw")
    text = (tmp_path / "a.gtkw").read_text()
    assert counts["queue controller"] == 1 and counts["control core"] == 1 and counts["host ports"] == 2
    assert "top.soc.qc.fetch_fsm_state[1:0]" in text and "scratch" not in text and "$rootio" not in text
    assert text.index("-control core") < text.index("top.soc.control.core.trace_pc[31:0]")


def test_finish_waves_reports_window_gtkw_and_a_wrong_clock(tmp_path, capsys, monkeypatch):
    target = simbuild.SimTarget(name="t", toplevel="top")           # clock_ns=10
    (tmp_path / "dump.vcd").write_text(VCD)                         # its clk has a 20 ns period
    simbuild._finish_waves(tmp_path, target, ["--trace-start", "0"])
    out = capsys.readouterr().out
    assert "cycles 0..4" in out and (tmp_path / "dump.gtkw").exists()
    assert "WARNING: the traced clk has a 20 ns period" in out
    simbuild._finish_waves(tmp_path, simbuild.SimTarget("t", "top", clock_ns=20), ["--trace-stop", "9"])
    assert "WARNING" not in capsys.readouterr().out
    (tmp_path / "dump.vcd").unlink()
    monkeypatch.setenv("KAKI_WAVES_START", "5000")
    simbuild._finish_waves(tmp_path, target, ["--trace-start", "50000000"])
    assert "no dump.vcd: the simulation ended before START=5000" in capsys.readouterr().out
