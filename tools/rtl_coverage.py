"""Merge the Verilator code coverage of a regression and render it as HTML.

    python -m tools.rtl_coverage [--dir build/coverage/verilator] [--out build/coverage/rtl]

Every simulator run of a ``COVERAGE=1`` regression (``make coverage``) leaves its ``coverage.dat``
(Verilator's ``SystemC::Coverage-3`` text format) in ``--dir`` (tools/simbuild.py). Points
are merged by source position and kind — summed over runs and over the instances of a module, so
a toggle counts as covered if any instance toggled it — and reported for the generated RTL only
(``rtl/*.v``, the chip; ``build/gen/*.v``, the block-test harnesses converted from the same
``hdl_gen/`` sources). Writes ``<out>/merged.dat`` (readable by ``verilator_coverage``),
``<out>/summary.md`` and ``<out>/index.html`` with one page per source file: every line with its
hit count (red: never run) and the toggle points never seen.
"""
import argparse
import html
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "build" / "coverage" / "verilator"
KINDS = ("line", "branch", "toggle")
_ENTRY = re.compile(r"^C '(.*)' (\d+)$")

__all__ = ["parse", "merge", "summarize", "render", "main"]


def _fields(key):
    out = {}
    for part in key.split("\x01"):
        if "\x02" in part:
            k, v = part.split("\x02", 1)
            out[k] = v
    return out


def _relative(path):
    """Repository-relative source path (runs may come from different clones)."""
    m = re.search(r"(?:^|/)((?:rtl|build/gen|cocotb_tests/hdl)/[^/]+)$", path)
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


def summarize(points):
    """{file: {kind: (covered, total)}} for the reported files."""
    out = defaultdict(lambda: {k: [0, 0] for k in KINDS})
    for (file, _l, _n, kind, _o), count in points.items():
        if _reported(file) and kind in KINDS:
            cell = out[file][kind]
            cell[0] += count > 0
            cell[1] += 1
    return {f: {k: tuple(v) for k, v in kinds.items()} for f, kinds in sorted(out.items())}


def _pct(c, t):
    return f"{c}/{t} ({c / t:.1%})" if t else "—"


def summary_markdown(summary, runs):
    tot = {k: [sum(s[k][i] for s in summary.values()) for i in (0, 1)] for k in KINDS}
    lines = [f"# RTL code coverage (Verilator) from {runs} simulator run(s)", "",
             "| | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS),
             "| **all** | " + " | ".join(_pct(*tot[k]) for k in KINDS) + " |"]
    lines += [f"| `{f}` | " + " | ".join(_pct(*s[k]) for k in KINDS) + " |" for f, s in summary.items()]
    return "\n".join(lines) + "\n"


def _page(file, points):
    src = REPO / file
    text = src.read_text(errors="replace").splitlines() if src.exists() else []
    line_hits = defaultdict(list)
    holes = []
    for (f, line, _n, kind, what), count in sorted(points.items()):
        if f != file:
            continue
        if kind in ("line", "branch"):
            line_hits[line].append(count)
        elif kind == "toggle" and count == 0:
            holes.append(f"{line}: {what}")
    rows = []
    for i, code in enumerate(text, 1):
        hits = line_hits.get(i)
        cls = "" if hits is None else ("miss" if min(hits) == 0 else "hit")
        shown = "" if hits is None else str(min(hits))
        rows.append(f'<tr class="{cls}"><td>{i}</td><td>{shown}</td><td><pre>{html.escape(code)}</pre></td></tr>')
    return (f"<html><head><meta charset='utf-8'><title>{file}</title><style>"
            "td{font-family:monospace;padding:0 6px} pre{margin:0} .miss{background:#fcc}"
            " .hit{background:#cfc}</style></head><body>"
            f"<h1>{html.escape(file)}</h1><p><a href='index.html'>index</a></p>"
            f"<h2>Toggle points never seen ({len(holes)})</h2><pre>{html.escape(chr(10).join(holes[:5000]))}</pre>"
            f"<h2>Source (line and branch hit counts; red: never executed)</h2><table>{''.join(rows)}</table>"
            "</body></html>")


def render(points, summary, out, runs):
    out.mkdir(parents=True, exist_ok=True)
    index = ["<html><head><meta charset='utf-8'><title>RTL coverage</title></head><body>",
             f"<h1>RTL code coverage from {runs} simulator runs</h1><table border=1><tr><th>file</th>"
             + "".join(f"<th>{k}</th>" for k in KINDS) + "</tr>"]
    for i, (file, s) in enumerate(summary.items()):
        page = f"file{i}.html"
        (out / page).write_text(_page(file, points))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR.parent / "rtl")
    args = ap.parse_args(argv)
    files = sorted(args.dir.glob("*.dat"))
    if not files:
        print(f"no coverage.dat files in {args.dir} (run the simulator tests with COVERAGE=1)",
              file=sys.stderr)
        return 1
    points = merge(files)
    summary = summarize(points)
    render(points, summary, args.out, len(files))
    write_dat(points, args.out / "merged.dat")
    text = summary_markdown(summary, len(files))
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"HTML: {args.out / 'index.html'}; merged: {args.out / 'merged.dat'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
