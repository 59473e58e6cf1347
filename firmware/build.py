"""Build the control-core firmware with the clang inside the `ziglang` wheel (`make firmware`).

    python -m firmware.build [--out build/firmware/kaki_fw.elf]

The firmware version comes from pyproject.toml (one source), passed as KAKI_FW_VERSION.
"""
import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

FW = Path(__file__).resolve().parent
REPO = FW.parent
ELF = REPO / "build" / "firmware" / "kaki_fw.elf"
SOURCES = [FW / "start.S", FW / "main.c", FW / "queues.c", FW / "engines.c"]
CFLAGS = ["-target", "riscv32-freestanding-none", "-mcpu=generic_rv32+m", "-O2", "-g", "-fomit-frame-pointer", "-flto",
          "-ffreestanding", "-nostdlib", "-fno-builtin", "-Wall", "-Wextra", "-Werror",
          "-std=c11"]


def version():
    """(major, minor, patch) of the project, and its packed 32-bit form."""
    text = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    major, minor, patch = (int(x) for x in text.split("."))
    return (major, minor, patch), (major << 16) | (minor << 8) | patch


def build(out=ELF, sources=None):
    """Compile and link the firmware (or, with ``sources``, a test image from start.S and those C
    files); return the ELF path. Raises RuntimeError with clang's output. The ELF is linked
    beside ``out`` and renamed onto it, so a simulator opening ``out`` (another process, while
    this one rebuilds it) reads the old image or the new one, never a missing or partial file."""
    out = Path(out)
    sources = SOURCES if sources is None else [FW / "start.S", *sources]
    out.parent.mkdir(parents=True, exist_ok=True)
    _, packed = version()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, f"-DKAKI_FW_VERSION={packed:#x}",
           f"-I{FW / 'include'}", f"-I{FW}", "-T", str(FW / "link.ld"), "-o", str(tmp),
           *map(str, sources)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"firmware build failed:\n{' '.join(cmd)}\n{res.stdout}{res.stderr}")
    os.replace(tmp, out)
    return out


def locked_build(out=ELF, sources=None):
    """:func:`build` under the one build-wide file lock, so pytest-xdist workers and tools that
    build the firmware (or a test image) at the same time never read a half-written ELF."""
    from filelock import FileLock

    lock = REPO / "build" / "firmware.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        return build(out, sources)


def shared_elf():
    """The firmware ELF at :data:`ELF`, built under the lock (see :func:`locked_build`)."""
    return locked_build()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ELF))
    args = ap.parse_args(argv)
    path = build(args.out)
    print(f"built {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
