"""Waveform helpers for ``make waves``: cut a VCD to a cycle window and write a GTKWave save file.

* :func:`window` copies the header of a VCD, then at the window's start one ``$dumpvars`` block
  with every signal's value at that time, then the changes inside the window — a file GTKWave
  opens like any other, whose size depends on the window, not on the run.
* :func:`gtkw` writes a ``.gtkw`` save file with the signals grouped by block (queue controller,
  DMA channels, GEMM / PE array, vector unit, control core pc and instruction, the host ports),
  found by their module scope and name in the VCD header.
"""
import re
from pathlib import Path

__all__ = ["window", "gtkw", "scopes", "GROUPS"]

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


def _header(lines):
    out = []
    for line in lines:
        out.append(line)
        if "$enddefinitions" in line:
            break
    return out


def _ident(change):
    change = change.rstrip("\n")
    if change[:1] in "bBrR":
        return change.split()[-1]
    return change[1:]


def window(src, dst, start, stop):
    """Copy VCD ``src`` to ``dst`` keeping times in [start, stop] (VCD time units)."""
    with open(src) as f, open(dst, "w") as out:
        out.writelines(_header(f))
        values, now, started = {}, 0, False
        for line in f:
            if line.startswith("#"):
                now = int(line[1:])
                if now > stop:
                    break
                if now >= start and not started:
                    out.write(f"#{start}\n$dumpvars\n" + "".join(values.values()) + "$end\n")
                    started = True
                if started and now > start:
                    out.write(line)
                continue
            if line.startswith("$") or not line.strip():
                continue
            if started and now > start:
                out.write(line)
            else:
                values[_ident(line)] = line if line.endswith("\n") else line + "\n"
        if not started:
            out.write(f"#{start}\n$dumpvars\n" + "".join(values.values()) + "$end\n")


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
    text = "".join(_header(open(vcd)))
    m = re.search(r"\$timescale\s*(\d+)\s*([munpf]?s)", text)
    if not m:
        return 1
    return int(m.group(1)) * {"s": 10**12, "ms": 10**9, "us": 10**6, "ns": 1000, "ps": 1, "fs": 1e-3}[m.group(2)]


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
