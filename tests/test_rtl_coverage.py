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
    assert RC.main(["rtl", "--dir", str(tmp_path), "--out", str(out)]) == 0
    assert "12: y:1-&gt;0" in (out / "file0.html").read_text()
    assert RC.merge([out / "merged.dat"]) == points
    assert RC.main(["rtl", "--dir", str(tmp_path / "none"), "--out", str(out)]) == 1
