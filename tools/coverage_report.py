"""Merge the functional-coverage databases of a regression and list the holes.

    python -m tools.coverage_report [--dir build/coverage/functional] [--out build/coverage]

Every process that sampled coverage (``verif/functional_coverage.py``: pytest workers on
the golden chip model, simulator processes on RTL) left a ``<tag>-<pid>.yml`` database in
``--dir``. They are merged with cocotb-coverage's ``merge_coverage`` into
``<out>/functional.yml``; the report (``<out>/functional.md`` and stdout) gives each coverpoint's
and cross's hit bins and lists every bin never hit (the holes).
"""
import argparse
import ast
import sys
from pathlib import Path

import yaml
from cocotb_coverage.coverage import merge_coverage

from verif.functional_coverage import COVERAGE_DIR

__all__ = ["merge", "holes", "render", "main"]


def merge(files, out):
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


def render(db, files):
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=COVERAGE_DIR)
    ap.add_argument("--out", type=Path, default=COVERAGE_DIR.parent)
    args = ap.parse_args(argv)
    files = sorted(args.dir.glob("*.yml"))
    if not files:
        print(f"no functional coverage databases in {args.dir} (run with KAKI_FUNCOV=1)", file=sys.stderr)
        return 1
    db = merge(files, args.out / "functional.yml")
    text = render(db, files)
    (args.out / "functional.md").write_text(text)
    print(text)
    print(f"merged: {args.out / 'functional.yml'}; report: {args.out / 'functional.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
