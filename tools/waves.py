"""Waveform helpers for ``make waves``: the simulator's trace window and a GTKWave save file.

* :func:`trace_window_args` turns ``START``/``STOP`` (clock cycles) into the ``--trace-start`` /
  ``--trace-stop`` options (simulation time) of the waves build's main loop
  (``tools/harness/verilator_window.cpp``), which opens the VCD at the window's start and
  closes it at its end: the file's size depends on the window, not on the run.
* :func:`gtkw` writes a ``.gtkw`` save file with the signals grouped by block (queue controller,
  DMA channels, GEMM / PE array, vector unit, control core pc and instruction, the host ports),
  found by their module scope and name in the VCD header.
* :func:`time_bounds` and :func:`clock_period` read back a dump's first/last timestamps and its
  clock period, to report the window in cycles and to catch a clock that is not the assumed one.
"""
import os
import re
from pathlib import Path

__all__ = ["trace_window_args", "gtkw", "scopes", "time_bounds", "clock_period", "GROUPS"]

#: group name -> (module scope below the top, full match; signal-name pattern); the first match
#: wins. Struct members (sub-scopes of a module) are left out.
GROUPS = (
    ("control core", r"soc\.control(\.core)?", r"^(trace_pc|trace_insn|trace_valid|pc|sleeping|irq)$"),
    ("queue controller", r"soc\.qc", r"(fsm_state|_valid$|_ready$|index|bad|busy)"),
    ("DMA channels", r"soc\.dma", r"(fsm_state|busy|error|__valid$|__ready$)"),
    ("GEMM / PE array", r"soc\.gemm(\.\w*array\w*)?", r"(fsm_state|busy|__valid$|__ready$|error)"),
    ("vector unit", r"soc\.vec", r"(fsm_state|busy|__valid$|__ready$|error)"),
    ("host ports", r"", r"^(clk|rst|irq|csr__\w*(valid|ready|addr)|host_\w*(valid|ready))$"),
)
MAX_PER_GROUP = 40
_PS = {"s": 10**12, "ms": 10**9, "us": 10**6, "ns": 1000, "ps": 1}


def unit_ps(unit):
    """Picoseconds in a time unit such as ``"1ps"``, ``"10ns"`` (at least 1 ps)."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|ms|us|ns|ps)\s*", unit)
    if not m:
        raise ValueError(f"unsupported time unit {unit!r} (need 1 ps or coarser)")
    return int(m.group(1)) * _PS[m.group(2)]


def _cycle(name, text):
    if text is None or str(text).strip() == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number of clock cycles") from None
    if value < 0:
        raise ValueError(f"{name}={value} is negative")
    return value


def trace_window_args(start, stop, clock_ns, precision="1ps"):
    """Main-loop options tracing clock cycles ``start``..``stop`` (strings or ints; empty/None =
    from the beginning / to the end): cycle ``c`` is simulation time ``c * clock_ns``, given in
    units of the simulator's time ``precision``. No window gives ``[]`` (the whole run)."""
    start, stop = _cycle("START", start), _cycle("STOP", stop)
    if start is not None and stop is not None and stop < start:
        raise ValueError(f"STOP={stop} is before START={start}")
    per_cycle = clock_ns * 1000 / unit_ps(precision)
    if per_cycle != int(per_cycle):
        raise ValueError(f"a {clock_ns} ns clock is not a whole number of {precision} steps")
    args = []
    if start:
        args += ["--trace-start", str(start * int(per_cycle))]
    if stop is not None:
        args += ["--trace-stop", str(stop * int(per_cycle))]
    return args


def _header(lines):
    out = []
    for line in lines:
        out.append(line)
        if "$enddefinitions" in line:
            break
    return out


def scopes(vcd):
    """[(full signal name, width)] from the header of ``vcd``."""
    path, out = [], []
    with open(vcd) as f:
        for line in _header(f):
            tok = line.split()
            if tok[:1] == ["$scope"]:
                path.append(tok[2])
            elif tok[:1] == ["$upscope"]:
                path.pop()
            elif tok[:1] == ["$var"]:
                width, name = int(tok[2]), tok[4]
                rng = tok[5] if len(tok) > 6 and tok[5].startswith("[") else ""
                out.append((".".join(path + [name]) + rng, width))
    return out


def timescale_ps(vcd):
    """Picoseconds per VCD time unit."""
    with open(vcd) as f:
        text = "".join(_header(f))
    m = re.search(r"\$timescale\s*(\d+\s*[munp]?s)", text)
    return unit_ps(m.group(1)) if m else 1


def time_bounds(vcd):
    """(first, last) timestamp of ``vcd`` in VCD time units, or None for a dump with no time
    step. Reads the header and the file's tail only, so it is cheap on large files."""
    first = None
    with open(vcd, "rb") as f:
        for line in f:
            if line.startswith(b"#"):
                first = int(line[1:])
                break
        if first is None:
            return None
        size = f.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            f.seek(max(0, size - chunk))
            tail = f.read()
            lines = tail.split(b"\n")
            if size > chunk:
                lines = lines[1:]          # the first line may be cut
            stamps = [ln for ln in lines if ln.startswith(b"#")]
            if stamps:
                return first, int(stamps[-1][1:])
            chunk *= 4


def clock_period(vcd, name="clk", max_lines=1_000_000):
    """Picoseconds between the first two rising edges of the top-level ``name`` in ``vcd``, or
    None when it is not traced or toggles fewer than twice in the first ``max_lines`` lines."""
    ident, depth, now, rises = None, 0, 0, []
    with open(vcd) as f:
        for line in f:
            tok = line.split()
            if tok[:1] == ["$scope"]:
                depth += 1
            elif tok[:1] == ["$upscope"]:
                depth -= 1
            elif tok[:1] == ["$var"] and ident is None and depth == 1 and tok[2] == "1" \
                    and tok[4] == name:
                ident = tok[3]             # in the top module's scope or Verilator's $rootio
            elif tok[:1] == ["$enddefinitions"]:
                break
        if ident is None:
            return None
        for i, line in enumerate(f):
            if i >= max_lines:
                return None
            if line.startswith("#"):
                now = int(line[1:])
            elif line.rstrip("\n") == "1" + ident:
                rises.append(now)
                if len(rises) == 2:
                    return (rises[1] - rises[0]) * timescale_ps(vcd)
    return None


def gtkw(vcd, dst):
    """Write a GTKWave save file for ``vcd``: one group per block of :data:`GROUPS`."""
    groups = {name: [] for name, _, _ in GROUPS}
    for full, width in scopes(vcd):
        scope, _, leaf = full.rpartition(".")
        leaf = leaf.split("[")[0]
        inner = scope.split(".", 1)[1] if "." in scope else ""
        if scope.startswith("$"):             # Verilator's $rootio copies of the top's ports
            continue
        for name, scope_pat, sig_pat in GROUPS:
            if re.fullmatch(scope_pat, inner) and re.search(sig_pat, leaf):
                if len(groups[name]) < MAX_PER_GROUP:
                    groups[name].append((full, width))
                break
    lines = [f'[dumpfile] "{Path(vcd).resolve()}"', "[timestart] 0"]
    for name, sigs in groups.items():
        if not sigs:
            continue
        lines += ["@800200", f"-{name}"]
        for full, width in sigs:
            lines += ["@22" if width > 1 else "@28", full]
        lines += ["@1000200", f"-{name}"]
    Path(dst).write_text("\n".join(lines) + "\n")
    return {n: len(s) for n, s in groups.items()}
