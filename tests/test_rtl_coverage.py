"""tools/coverage.py rtl: Verilator coverage.dat files from different runs and clones merge
by source position; instances sum; only generated RTL is reported; HTML and merged.dat written."""
from tools import coverage as RC


def entry(f, line, kind, what, count, h="top"):
    key = "".join(f"\x01{k}\x02{v}" for k, v in (("f", f), ("l", line), ("n", 3), ("t", kind),
                                                ("page", f"v_{kind}/m"), ("o", what), ("h", h)))
    return f"C '{key}' {count}"


def write(path, *entries):
    path.write_text("# SystemC::Coverage-3\n" + "\n".join(entries) + "\n")
    return path


def test_merge_summarize_render(tmp_path):
    a = write(tmp_path / "a.dat",
              entry("/clone1/rtl/kaki_soc_8x8.v", 10, "line", "block", 0),
              entry("/clone1/rtl/kaki_soc_8x8.v", 11, "toggle", "x:0->1", 0, h="top.u0"),
              entry("/clone1/rtl/kaki_soc_8x8.v", 11, "toggle", "x:0->1", 4, h="top.u1"),
              entry("/clone1/verif/hdl/kaki_host_mem.v", 5, "line", "block", 0))
    b = write(tmp_path / "b.dat",
              entry("/other/clone/rtl/kaki_soc_8x8.v", 10, "line", "block", 7),
              entry("/other/clone/rtl/kaki_soc_8x8.v", 12, "toggle", "y:1->0", 0))
    points = RC.merge([a, b])
    assert points[("rtl/kaki_soc_8x8.v", 10, 3, "line", "block")] == 7
    assert points[("rtl/kaki_soc_8x8.v", 11, 3, "toggle", "x:0->1")] == 4
    summary = RC.summarize(points)
    assert list(summary) == ["rtl/kaki_soc_8x8.v"], "the testbench's own Verilog is not reported"
    assert summary["rtl/kaki_soc_8x8.v"] == {"line": (1, 1), "branch": (0, 0), "toggle": (1, 2)}
    assert "| **all** | 1/1 (100.0%) | — | 1/2 (50.0%) |" in RC.summary_markdown(summary, 2)
    out = tmp_path / "html"
    # (the Yosys proof of constant points has its own test: not run on the real chip here)
    assert RC.main(["rtl", "--dir", str(tmp_path), "--out", str(out), "--no-constants"]) == 0
    assert "12: y[0] 1-&gt;0" in (out / "file0.html").read_text()
    assert RC.merge([out / "merged.dat"]) == points
    assert RC.main(["rtl", "--dir", str(tmp_path / "none"), "--out", str(out), "--no-constants"]) == 1


def test_toggle_signal_decodes_verilator_names():
    assert RC.toggle_signal("__024232[10]:0->1") == ("$232", 10)
    assert RC.toggle_signal("m___05F1___05Farready:1->0") == ("m__1__arready", 0)
    assert RC.toggle_signal("__024auto__024verilog_backend__02ecc__03a2355__03adump_module__0247:0->1") \
        == ("$auto$verilog_backend.cc:2355:dump_module$7", 0)


CHIP = """module top(a, y);
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  reg kept = 1'h1;
  reg used = 1'h0;
  input a;
  output y;
  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
    if (kept ) begin end
    used = a;
  end
endmodule
module \\top.sub (b);
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  input b;
  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
  end
  assign \\$auto$verilog_backend.cc:2355:dump_module$1  = b;
endmodule
"""


def test_literal_regs_are_the_never_assigned_ones():
    regs = RC.literal_regs(CHIP.splitlines())
    # `used` is assigned; the sub-module's trigger register is driven by an assign
    assert regs == {("top", "$auto$verilog_backend.cc:2355:dump_module$1"): 0, ("top", "kept"): 1}


def test_constant_points_and_net_figures(monkeypatch, tmp_path):
    """Dead branches of literal registers and toggle points of the bits Yosys proves constant are
    left out of the net figure only; the raw figure keeps them."""
    monkeypatch.setattr(RC, "REPO", tmp_path)
    (tmp_path / "rtl").mkdir()
    (tmp_path / "rtl" / "kaki_soc_2x2.v").write_text(CHIP)
    monkeypatch.setattr(RC, "yosys_constants", lambda f: {("top.sub", "b"): [0]})
    f = "rtl/kaki_soc_2x2.v"
    points = {(f, 8, 5, "branch", "if"): 0, (f, 8, 6, "branch", "else"): 9,
              (f, 9, 5, "branch", "if"): 9, (f, 9, 6, "branch", "else"): 0,
              (f, 10, 3, "line", "block"): 9,
              (f, 2, 7, "toggle", "__024auto__024verilog_backend__02ecc__03a2355__03adump_module__0241:0->1"): 0,
              (f, 4, 7, "toggle", "used:0->1"): 0,
              (f, 15, 7, "toggle", "b:0->1"): 0,
              (f, 16, 5, "branch", "if"): 0}
    excluded = RC.constant_points(points)
    assert excluded == {(f, 8, 5, "branch", "if"), (f, 9, 6, "branch", "else"),
                        (f, 2, 7, "toggle", "__024auto__024verilog_backend__02ecc__03a2355__03adump_module__0241:0->1"),
                        (f, 15, 7, "toggle", "b:0->1")}
    raw, net = RC.summarize(points), RC.summarize(points, excluded)
    assert raw[f] == {"line": (1, 1), "branch": (2, 5), "toggle": (0, 3)}
    assert net[f] == {"line": (1, 1), "branch": (2, 3), "toggle": (0, 1)}
    text = RC.summary_markdown(raw, 1, net)
    assert "2/5 (40.0%); 3 non-constant: 66.7%" in text and "0/3 (0.0%); 1 non-constant: 0.0%" in text


def test_goals_are_judged_without_the_constant_points():
    raw = {RC.GOAL_FILE: {"line": (98, 100), "branch": (80, 100), "toggle": (84, 100)}}
    net = {RC.GOAL_FILE: {"line": (98, 100), "branch": (80, 88), "toggle": (84, 100)}}
    lines = RC.goal_lines(raw, net)
    assert "* line: 98.0% (goal 97%: met; raw 98/100 (98.0%))" in lines
    assert "* branch: 90.9% (goal 90%: met; raw 80/100 (80.0%))" in lines
    assert "* toggle: 84.0% (goal 85%: NOT met; raw 84/100 (84.0%))" in lines
    assert RC.goal_lines({"rtl/kaki_soc_4x4.v": raw[RC.GOAL_FILE]}) == [
        f"Goals: `{RC.GOAL_FILE}` was not simulated by these runs."]


def test_yosys_proves_constant_bits(monkeypatch, tmp_path):
    """The bits of a zero extension and of a port the parent ties to a literal are constant (in
    the sub-module too, after flattening); a register that follows an input is not."""
    monkeypatch.setattr(RC, "REPO", tmp_path)
    (tmp_path / "rtl").mkdir()
    (tmp_path / "rtl" / "kaki_soc_2x2.v").write_text("""module kaki_soc_2x2(clk, a, y);
  input clk; wire clk;
  input [1:0] a; wire [1:0] a;
  output [3:0] y; wire [3:0] y;
  wire [3:0] \\$1 ;
  reg [1:0] q = 2'h0;
  always @(posedge clk) q <= a;
  assign \\$1  = { 2'h0, q };
  \\kaki_soc_2x2.sub  sub (.p(3'h5), .o(y));
endmodule
module \\kaki_soc_2x2.sub (p, o);
  input [2:0] p; wire [2:0] p;
  output [3:0] o; wire [3:0] o;
  assign o = { 1'h0, p };
endmodule
""")
    consts = RC.yosys_constants("rtl/kaki_soc_2x2.v", cache=tmp_path / "build" / "c")
    assert consts == {("kaki_soc_2x2", "$1"): [2, 3], ("kaki_soc_2x2", "y"): [0, 1, 2, 3],
                      ("kaki_soc_2x2.sub", "p"): [0, 1, 2], ("kaki_soc_2x2.sub", "o"): [0, 1, 2, 3]}
    # cached: a second call does not run Yosys
    monkeypatch.setattr(RC.subprocess, "run", None)
    assert RC.yosys_constants("rtl/kaki_soc_2x2.v", cache=tmp_path / "build" / "c") == consts
