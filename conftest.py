"""Repository-wide pytest plugin: regression sharding and the failure/summary report.

* Tests marked ``slow`` run only under ``make regress`` (``KAKI_REGRESS=1``); ``make test``
  reports them as skipped, with the reason.
* ``--shard i/n`` keeps the i-th (1-based) of n interleaved slices of the collected tests, sorted
  by node id, so n CI machines split one regression without overlap or gaps (every machine
  collects the same list). An empty shard exits with pytest's code 5, which ``make`` treats as a
  failure.
* Every failing test is listed at the end with its seed and the one command that reruns it (the
  ``SEED=`` and ``rerun`` text our tests put in their output and failure messages).
* ``--seeds N`` runs every simulator test (marker ``sim``) N times, with seeds SEED+0 .. SEED+N-1
  (SEED from the environment, else random): seeds x array configurations in one regression.
* ``--regress-summary PATH`` also writes a Markdown table per test file (passed / failed / skipped,
  wall seconds) and the failures with their repro commands (``make regress`` uses it).
"""
import os
import random
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

_SEED = re.compile(r"SEED=(\d+)")
_REPRO = re.compile(r"rerun with waves: (make waves [^;\n]+)|\(rerun: ([^)\n]+)\)")


def pytest_addoption(parser):
    group = parser.getgroup("kaki")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run only shard I of N (1-based; interleaved over the sorted node ids)")
    group.addoption("--regress-summary", default=None, metavar="PATH",
                    help="write the regression summary (Markdown) to PATH")
    group.addoption("--seeds", type=_positive_int, default=1, metavar="N",
                    help="run every simulator test with N seeds (SEED, SEED+1, ...)")


def pytest_generate_tests(metafunc):
    n = metafunc.config.getoption("--seeds")
    if n > 1 and metafunc.definition.get_closest_marker("sim"):
        metafunc.parametrize("kaki_seed_round", range(n), ids=[f"seed+{k}" for k in range(n)],
                             indirect=True)


_BASE_SEED = []


@pytest.fixture(autouse=True)
def kaki_seed_round(request, monkeypatch):
    """With --seeds: SEED = base + round for this run of a simulator test (simbuild reads SEED
    per run). Autouse, so that --seeds can parametrize it on any simulator test."""
    if not hasattr(request, "param"):
        return None
    if not _BASE_SEED:
        _BASE_SEED.append(int(os.environ.get("SEED") or random.SystemRandom().randrange(2**31)))
    monkeypatch.setenv("SEED", str(_BASE_SEED[0] + request.param))
    return request.param


def _positive_int(text):
    """--seeds (make regress SEEDS=): a positive integer."""
    import argparse
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"SEEDS={text!r}: must be a positive integer")
    return int(text)


def parse_shard(text):
    m = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. --shard 2/4")
    return int(m.group(1)), int(m.group(2))


def shard_items(items, i, n):
    """The items of shard ``i`` of ``n`` (and the rest), interleaved over sorted node ids."""
    order = sorted(items, key=lambda it: it.nodeid)
    keep = {id(it) for it in order[i - 1::n]}
    return [it for it in items if id(it) in keep], [it for it in items if id(it) not in keep]


def regress_enabled():
    """``make regress`` (``KAKI_REGRESS`` set to anything but 0)."""
    return os.environ.get("KAKI_REGRESS", "0") not in ("", "0")


#: test files whose tests build a simulator, run a solver or synthesize: run first, so the
#: quick tests fill the end of a parallel run instead of one long test keeping a worker alone
HEAVY_FILES = ("test_formal.py", "test_synth.py", "test_generated.py", "test_lint.py")


def _heavy(item):
    return item.get_closest_marker("sim") is not None or item.path.name in HEAVY_FILES


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not _heavy(item))        # stable: file order otherwise
    if not regress_enabled():
        slow = pytest.mark.skip(reason="long-running: make regress (KAKI_REGRESS=1) only")
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(slow)
    text = config.getoption("--shard")
    if not text:
        return
    try:
        i, n = parse_shard(text)
    except ValueError as e:
        raise pytest.UsageError(str(e))
    keep, drop = shard_items(items, i, n)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


class RegressReport:
    """Plugin: per-test outcome and duration; for failures the seed and the repro command."""

    def __init__(self, config):
        self.config = config
        self.tests = {}
        self.t0 = time.monotonic()

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(report.nodeid, dict(outcome="passed", duration=0.0, text=""))
        entry["duration"] += report.duration
        if report.failed or (report.skipped and entry["outcome"] == "passed"):
            entry["outcome"] = "failed" if report.failed else "skipped"
        if report.failed:      # the failure message first: the traceback also shows source text
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", "")
            entry["text"] += "\n".join(str(x) for x in (crash, report.capstdout, report.capstderr,
                                                         report.longreprtext))

    def failures(self):
        """[(node id, seed or "-", repro command)] of the failed tests."""
        out = []
        for node, e in sorted(self.tests.items()):
            if e["outcome"] != "failed":
                continue
            seed, repro = _SEED.search(e["text"]), _REPRO.search(e["text"])
            if repro:
                cmd = next(g for g in repro.groups() if g)
            else:
                cmd = (f"SEED={seed.group(1)} " if seed else "") + \
                    f".venv/bin/python -m pytest -p no:xdist '{node}'"
            out.append((node, seed.group(1) if seed else "-", cmd.strip()))
        return out

    def by_file(self):
        rows = defaultdict(lambda: dict(passed=0, failed=0, skipped=0, seconds=0.0))
        for node, e in self.tests.items():
            r = rows[node.split("::")[0]]
            r[e["outcome"]] += 1
            r["seconds"] += e["duration"]
        return dict(sorted(rows.items()))

    def markdown(self):
        rows = self.by_file()
        tot = {k: sum(r[k] for r in rows.values()) for k in ("passed", "failed", "skipped")}
        lines = [f"# Regression summary: {tot['passed']} passed, {tot['failed']} failed, "
                 f"{tot['skipped']} skipped in {time.monotonic() - self.t0:.0f} s", "",
                 "| test file | passed | failed | skipped | test seconds |", "|---|---|---|---|---|"]
        lines += [f"| `{f}` | {r['passed']} | {r['failed']} | {r['skipped']} | {r['seconds']:.0f} |"
                  for f, r in rows.items()]
        fails = self.failures()
        if fails:
            lines += ["", "## Failures (seed, one-line repro)", "", "| test | seed | repro |",
                      "|---|---|---|"]
            lines += [f"| `{n}` | {s} | `{c}` |" for n, s, c in fails]
        return "\n".join(lines) + "\n"

    def pytest_terminal_summary(self, terminalreporter):
        fails = self.failures()
        if fails:
            terminalreporter.section("failing tests: seed and repro command")
            for node, seed, cmd in fails:
                terminalreporter.write_line(f"{node}  SEED={seed}\n    {cmd}")
        path = self.config.getoption("--regress-summary")
        if path:
            text = self.markdown()
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
            terminalreporter.section("regression summary")
            terminalreporter.write(text)
            terminalreporter.write_line(f"written to {path}")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):      # the xdist controller (or a plain run) reports
        config.pluginmanager.register(RegressReport(config), "kaki-regress-report")
