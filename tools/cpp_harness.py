"""Build and run the bare Verilator C++ harness (``tools/harness/replay.cpp``) of a
SimTarget: the same Verilog sources and Verilator options as the fast cocotb build
(``simbuild._FAST_ARGS`` and the target's own, e.g. ``--timing``; default C++ optimisation), but
no VPI, no cocotb and no public signals other than the host-memory array the target makes public
(the harness stores the trace's backdoor word writes straight into it).
The one difference in the Verilog: ``KAKI_EXT_CLOCK`` is defined, so ``clk`` is an input of the
testbench top and the harness toggles it (two ``eval()`` per cycle) instead of the top's ``#5``
clock generator that the cocotb build runs on.

The build is cached under ``build/cpp/<target>`` keyed by a hash of the sources, the options and
``replay.cpp`` (like :func:`simbuild.build`).
"""
import hashlib
import json
import subprocess
import time
from pathlib import Path

from filelock import FileLock

from . import simbuild

from . import toolchain

HARNESS = Path(__file__).resolve().parent / "harness" / "replay.cpp"


def _args(target, bdir):
    return [toolchain.verilator_bin(), "--cc", "--exe", "--build", "-j", "2", "--prefix", "Vtop",
            "--top-module", target.toplevel, "--Mdir", str(bdir), "-o", "replay",
            *simbuild._FAST_ARGS, *target.build_args, "-DKAKI_EXT_CLOCK",
            "-CFLAGS", f"-DKAKI_HOST_MEM={target.toplevel}__DOT__host__DOT__mem",
            str(simbuild.WAIVERS), *[str(s) for s in target.sources], str(HARNESS)]


def build(target):
    """Compile the harness for ``target`` unless an identical build exists; return the binary."""
    bdir = simbuild.BUILD / "cpp" / target.name
    bdir.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    for src in [*target.sources, simbuild.WAIVERS, HARNESS]:
        h.update(str(src).encode())
        h.update(Path(src).read_bytes())
    h.update(repr(_args(target, "X")[1:]).encode())
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
            r = subprocess.run(_args(target, bdir), stdout=f, stderr=subprocess.STDOUT, cwd=bdir)
        if r.returncode:
            raise RuntimeError(f"C++ harness build failed, see {log}")
        stamp_file.write_text(stamp)
        print(f"[cpp_harness] built {target.name} in {time.monotonic() - t0:.1f} s")
    return bdir / "replay"


def replay(binary, trace, workdir, issue_delay=1):
    """Run the harness on ``trace`` in ``workdir``; returns its JSON result (a dict)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(binary), str(Path(trace).resolve()), str(issue_delay)], cwd=workdir,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])
