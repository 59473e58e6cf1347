"""Every ``@cocotb.test()`` is run by some wrapper: a cocotb test defined but never run fails here.

The cocotb tests are found by reading the sources (``simbuild.cocotb_tests_in``: no simulator):
every ``cocotb_tests/cocotb_*.py`` and every module under ``tools/`` and ``verif/`` that defines
one. What runs them is declared by the runners in a module-level ``COCOTB_RUNS`` mapping
(``{cocotb module: test names, or simbuild.ALL for the whole module}``): every
``cocotb_tests/test_*.py`` wrapper that calls ``simbuild.run`` must declare it, and a tool whose CLI
runs its own cocotb tests (``tools/bench.py``, ``make bench``) declares it too. ``simbuild.run``
refuses, at run time, a test its caller's ``COCOTB_RUNS`` does not declare, so the declaration is
what the wrappers run.
"""
import importlib
import sys
import textwrap

import pytest

from tools import simbuild

REPO = simbuild.REPO


def defined_tests(root, tests_pkg="cocotb_tests", libs=("tools", "verif")):
    """{dotted module: [names of its @cocotb.test() functions]} under ``root``."""
    files = sorted((root / tests_pkg).glob("cocotb_*.py"))
    for lib in libs:
        files += sorted((root / lib).rglob("*.py"))
    out = {}
    for f in files:
        names = simbuild.cocotb_tests_in(f.read_text())
        if names:
            out[".".join(f.relative_to(root).with_suffix("").parts)] = names
    return out


def declared_runs(root, tests_pkg="cocotb_tests", libs=("tools",)):
    """({cocotb module: set of names run, or ALL}, [problems]) from the runners' ``COCOTB_RUNS``."""
    runs, problems = {}, []
    wrappers = sorted((root / tests_pkg).glob("test_*.py"))
    tools = [f for lib in libs for f in sorted((root / lib).rglob("*.py"))]
    for f in wrappers + tools:
        text = f.read_text()
        is_wrapper = f in wrappers and "simbuild.run(" in text
        if not is_wrapper and "COCOTB_RUNS" not in text:
            continue
        name = ".".join(f.relative_to(root).with_suffix("").parts)
        decl = getattr(importlib.import_module(name), "COCOTB_RUNS", None)
        if decl is None:
            if is_wrapper:
                problems.append(f"{name} calls simbuild.run but declares no COCOTB_RUNS")
            continue
        for module, names in decl.items():
            if names == simbuild.ALL or runs.get(module) == simbuild.ALL:
                runs[module] = simbuild.ALL
            else:
                runs.setdefault(module, set()).update(names)
    return runs, problems


def unrun(defined, runs):
    """{module: [tests defined but run by no runner]}."""
    out = {}
    for module, names in defined.items():
        done = runs.get(module, set())
        missing = [] if done == simbuild.ALL else [n for n in names if n not in done]
        if missing:
            out[module] = missing
    return out


def stale(defined, runs):
    """Declared runs of modules or tests that do not exist."""
    out = []
    for module, names in runs.items():
        if module not in defined:
            out.append(f"{module} (no such cocotb module)")
        elif names != simbuild.ALL:
            out += [f"{module}.{n}" for n in sorted(set(names) - set(defined[module]))]
    return out


def test_every_cocotb_test_is_run():
    defined = defined_tests(REPO)
    assert "cocotb_tests.cocotb_chip" in defined and "tools.bench" in defined
    runs, problems = declared_runs(REPO)
    assert not problems, problems
    missing = unrun(defined, runs)
    assert not missing, "cocotb tests defined but never run (add them to a wrapper's COCOTB_RUNS " \
        "and run them): " + "; ".join(f"{m}: {', '.join(n)}" for m, n in sorted(missing.items()))
    assert not stale(defined, runs), f"COCOTB_RUNS names what is not defined: {stale(defined, runs)}"


def test_discovery_reads_decorators_only():
    src = textwrap.dedent('''
        import cocotb
        @cocotb.test()
        async def a(dut): pass
        @cocotb.test
        async def b(dut): pass
        @cocotb.test(timeout_time=5, timeout_unit="us")
        async def c(dut): pass
        async def helper(dut): pass
        @other.test()
        async def d(dut): pass
        class K:
            @cocotb.test()
            async def e(self, dut): pass
    ''')
    assert simbuild.cocotb_tests_in(src) == ["a", "b", "c"]
    assert "random_gemms" in simbuild.cocotb_tests("cocotb_tests.cocotb_chip")
    assert simbuild.cocotb_tests("tools.bench") == ["bench", "decode", "costmodel", "control"]


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A temporary package with a cocotb module of three tests and wrappers that run two."""
    pkg = tmp_path / "planted_cocotb"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cocotb_demo.py").write_text(textwrap.dedent('''
        import cocotb
        @cocotb.test()
        async def first(dut): pass
        @cocotb.test()
        async def second(dut): pass
        @cocotb.test()
        async def forgotten(dut): pass
    '''))
    (pkg / "test_demo.py").write_text(textwrap.dedent('''
        from tools import simbuild
        COCOTB_RUNS = {"planted_cocotb.cocotb_demo": ("first",)}
        def test_first():
            simbuild.run(None, "planted_cocotb.cocotb_demo", testcase="first")
    '''))
    (pkg / "test_more.py").write_text(textwrap.dedent('''
        from tools import simbuild
        COCOTB_RUNS = {"planted_cocotb.cocotb_demo": ["second"]}
        def test_second():
            simbuild.run(None, "planted_cocotb.cocotb_demo", testcase="second")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, pkg
    for name in [m for m in sys.modules if m.startswith("planted_cocotb")]:
        del sys.modules[name]


def test_planted_unrun_test_is_caught(planted):
    root, pkg = planted
    defined = defined_tests(root, "planted_cocotb", libs=())
    assert defined == {"planted_cocotb.cocotb_demo": ["first", "second", "forgotten"]}
    runs, problems = declared_runs(root, "planted_cocotb", libs=())
    assert not problems
    assert unrun(defined, runs) == {"planted_cocotb.cocotb_demo": ["forgotten"]}
    # a wrapper running the whole module covers it
    (pkg / "test_all.py").write_text("from tools import simbuild\n"
                                     "COCOTB_RUNS = {'planted_cocotb.cocotb_demo': simbuild.ALL}\n"
                                     "def f():\n    simbuild.run(None, 'x')\n")
    runs, _ = declared_runs(root, "planted_cocotb", libs=())
    assert unrun(defined, runs) == {}


def test_wrapper_without_declaration_and_stale_names_are_caught(planted):
    root, pkg = planted
    (pkg / "test_undeclared.py").write_text(
        "from tools import simbuild\ndef test_x():\n    simbuild.run(None, 'planted_cocotb.cocotb_demo')\n")
    (pkg / "test_stale.py").write_text(
        "COCOTB_RUNS = {'planted_cocotb.cocotb_demo': ('renamed',), 'planted_cocotb.gone': ('x',)}\n")
    runs, problems = declared_runs(root, "planted_cocotb", libs=())
    assert problems == ["planted_cocotb.test_undeclared calls simbuild.run but declares no COCOTB_RUNS"]
    defined = defined_tests(root, "planted_cocotb", libs=())
    assert stale(defined, runs) == ["planted_cocotb.cocotb_demo.renamed", "planted_cocotb.gone (no such cocotb module)"]


def test_run_refuses_undeclared_or_unknown_tests(planted, monkeypatch):
    """simbuild.run checks its caller's COCOTB_RUNS and the module's tests before building."""
    root, pkg = planted
    monkeypatch.setattr(simbuild, "build", lambda *a, **k: pytest.fail("must not build"))
    caller = {"__name__": "w", "COCOTB_RUNS": {"planted_cocotb.cocotb_demo": ("first",)}}
    with pytest.raises(AssertionError, match="not in its COCOTB_RUNS"):
        simbuild._check_declared(caller, "planted_cocotb.cocotb_demo", ["second"])
    with pytest.raises(AssertionError, match="declare simbuild.ALL"):
        simbuild._check_declared(caller, "planted_cocotb.cocotb_demo", [])
    with pytest.raises(AssertionError, match="does not declare it"):
        simbuild._check_declared(caller, "planted_cocotb.other", ["first"])
    simbuild._check_declared(caller, "planted_cocotb.cocotb_demo", ["first"])
    with pytest.raises(AssertionError, match="defines no @cocotb.test"):
        simbuild.run(simbuild.SimTarget("t", "t"), "planted_cocotb.cocotb_demo", testcase="nope")
    # called from a wrapper (its globals): test_more declares only "second"
    mod = importlib.import_module("planted_cocotb.test_more")
    with pytest.raises(AssertionError, match="not in its COCOTB_RUNS"):
        exec("simbuild.run(simbuild.SimTarget('t', 't'), 'planted_cocotb.cocotb_demo', "
             "testcase='first')", dict(vars(mod)))
