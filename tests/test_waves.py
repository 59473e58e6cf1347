"""cocotb_tests/waves.py: a VCD cut to a window keeps the header, the values at the start and the
changes inside; the GTKWave save file groups signals by block and skips Verilator's $rootio."""
from cocotb_tests import waves as W

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


def test_window_keeps_start_values_and_inside_changes(tmp_path):
    src, dst = tmp_path / "a.vcd", tmp_path / "w.vcd"
    src.write_text(VCD)
    W.window(src, dst, 15000, 30000)
    text = dst.read_text()
    head, body = text.split("$enddefinitions $end\n")
    assert head + "$enddefinitions $end\n" == VCD.split("#0\n")[0]
    assert body == "#15000\n$dumpvars\n1!\n0\"\nb1 #\nb0 %\n$end\n#20000\n0!\nb100 %\n#30000\n1!\n1\"\nb10 #\n"
    assert W.timescale_ps(src) == 1


def test_gtkw_groups_by_block(tmp_path):
    src = tmp_path / "a.vcd"
    src.write_text(VCD)
    counts = W.gtkw(src, tmp_path / "a.gtkw")
    text = (tmp_path / "a.gtkw").read_text()
    assert counts["queue controller"] == 1 and counts["control core"] == 1 and counts["host ports"] == 2
    assert "top.soc.qc.fetch_fsm_state[1:0]" in text and "scratch" not in text and "$rootio" not in text
    assert text.index("-control core") < text.index("top.soc.control.core.trace_pc[31:0]")
