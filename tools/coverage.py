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

``all`` (``make coverage``) runs both with their default directories.
"""
import argparse
import ast
import html
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from cocotb_coverage.coverage import merge_coverage

from verif.functional_coverage import COVERAGE_DIR as FUNCTIONAL_DIR

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "build" / "coverage" / "verilator"

__all__ = ["merge_functional", "holes", "render_functional", "functional_main",
           "parse", "merge", "summarize", "render", "rtl_main", "main"]


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


def rtl_main(args):
    """Merge and render the Verilator coverage (``args.dir``, ``args.out``); 0 on success."""
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
    args = ap.parse_args(argv)
    if args.step == "all" and (args.dir or args.out):
        ap.error("--dir/--out need one step: functional or rtl")
    status = 0
    for name in STEPS if args.step == "all" else [args.step]:
        run, d, o = STEPS[name]
        status |= run(argparse.Namespace(dir=args.dir or d, out=args.out or o))
    return status


if __name__ == "__main__":
    sys.exit(main())
