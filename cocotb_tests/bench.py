"""`make bench`: PE utilization of the GEMM datapath against problem size, on the RTL chip.

Writes build/bench.json and prints a table. Utilization is useful MACs / (dim^2 x GEMM busy
cycles) measured by the chip's own performance counters.
"""
import argparse
import json
import shutil
import sys

from . import simbuild
from .soc_target import soc_target


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=8, choices=(4, 8, 16))
    ap.add_argument("--sizes", default="32,64,128,256")
    args = ap.parse_args(argv)
    simbuild.run(soc_target(args.dim), "cocotb_tests.cocotb_bench", seed=1,
                 extra_env={"KAKI_BENCH_SIZES": args.sizes}, tag="bench",
                 repro=lambda seed: "make bench")
    out = simbuild.BUILD / "bench.json"
    shutil.copy(simbuild.last_run_dir() / "bench.json", out)
    data = json.loads(out.read_text())
    print(f"\nKaki {data['dim']}x{data['dim']} GEMM datapath (operands already on chip)")
    print(f"  {'size':>6}{'GEMM cycles':>13}{'PE utilization':>16}{'sim cycles/s':>14}")
    for r in data["results"]:
        print(f"  {r['size']:>6}{r['gemm_busy_cycles']:>13}{r['pe_utilization']:>16.1%}"
              f"{r['sim_cycles_per_s']:>14.0f}")
    print(f"  written to {out.relative_to(simbuild.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
