"""The repository pytest plugin (conftest.py): --shard splits without overlap or gaps, an empty
shard is not green, failures are listed with seed and repro, --regress-summary writes the table."""
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).resolve().parent.parent / "conftest.py").read_text()
TESTS = """
import pytest

@pytest.mark.parametrize("i", range(7))
def test_many(i):
    pass

def test_fails_with_seed():
    print("[demo] SEED=4242 (rerun: SEED=4242 make test PYTEST_ARGS=-kdemo)")
    assert False, "boom"

def test_fails_in_sim():
    raise AssertionError("cocotb tests failed: x (SEED=77); rerun with waves: make waves "
                         "TEST=cocotb_tests/test_x.py::test_y SEED=77; log dir /tmp/x")

def test_fails_plainly():
    assert 1 == 2
"""


@pytest.fixture
def demo(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_demo=TESTS)
    return pytester


def _ran(result):
    return {r.nodeid for r in result.getreports("pytest_runtest_logreport") if r.when == "call"}


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_shards_partition_the_tests(demo, n):
    shards = [_ran(demo.inline_run(f"--shard={i}/{n}")) for i in range(1, n + 1)]
    everything = _ran(demo.inline_run())
    assert set().union(*shards) == everything and len(everything) == 10
    assert sum(map(len, shards)) == len(everything), "a test ran in two shards"


def test_empty_shard_exits_5_and_bad_spec_is_a_usage_error(demo):
    assert demo.runpytest("--shard=11/12", "-k", "many").ret == pytest.ExitCode.NO_TESTS_COLLECTED
    res = demo.runpytest("--shard=3/2")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--shard '3/2': expected I/N with 1 <= I <= N*"])


def test_failures_listed_with_seed_and_repro_and_summary_written(demo, tmp_path):
    summary = tmp_path / "summary.md"
    res = demo.runpytest(f"--regress-summary={summary}")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines([
        "*failing tests: seed and repro command*",
        "*test_fails_in_sim  SEED=77", "*make waves TEST=cocotb_tests/test_x.py::test_y SEED=77",
        "*test_fails_plainly  SEED=-", "*.venv/bin/python -m pytest -p no:xdist*test_fails_plainly*",
        "*test_fails_with_seed  SEED=4242", "*SEED=4242 make test PYTEST_ARGS=-kdemo",
    ])
    text = summary.read_text()
    assert text.startswith("# Regression summary: 7 passed, 3 failed, 0 skipped")
    assert "| `test_demo.py` | 7 | 3 | 0 |" in text
    assert "| `test_demo.py::test_fails_with_seed` | 4242 | `SEED=4242 make test PYTEST_ARGS=-kdemo` |" in text


def test_seeds_repeat_simulator_tests_with_consecutive_seeds(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    sim: simulator test\n")
    pytester.makepyfile(test_seeds="""
import os, pytest

@pytest.mark.sim
def test_sim():
    print("seed", os.environ["SEED"])

def test_fast():
    pass
""")
    res = pytester.runpytest("--seeds=3", "-s", "-v")
    res.assert_outcomes(passed=4)
    res.stdout.fnmatch_lines(["*test_sim?seed+0?*", "*test_sim?seed+2?*"])
    seeds = [int(line.split()[-1]) for line in res.stdout.lines if " seed " in line]
    assert len(seeds) == 3 and seeds == list(range(seeds[0], seeds[0] + 3))
