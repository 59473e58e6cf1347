"""`make sim`: build the chip under Verilator, run the GEMM + epilogue demo, print the report.

    python -m cocotb_tests.sim_demo [--dim 8] [--m 64 --k 64 --n 64] [--seed N] [--waves]
"""
import argparse
import json
import os
import sys
import time

from . import simbuild
from .soc_target import soc_target


def print_report(r, wall):
    macs = r["m"] * r["k"] * r["n"]
    peak = r["dim"] ** 2
    if "phases" not in r:
        print(f"Kaki {r['dim']}x{r['dim']}: GEMM {r['m']}x{r['k']}x{r['n']} did not complete")
        return False
    g = r["phases"]["gemm"]
    total = sum(p["PERF_CYCLES"] for p in r["phases"].values())
    print(f"\nKaki {r['dim']}x{r['dim']}: int8 GEMM {r['m']}x{r['k']}x{r['n']} + bias + requantize "
          f"+ ReLU (seed {r['seed']})")
    print(f"  {'phase':<10}{'cycles':>10}{'busy':>10}{'DMA bytes in':>14}{'DMA bytes out':>15}")
    busy_key = {"load": "PERF_DMA_LOAD_BUSY", "gemm": "PERF_GEMM_BUSY",
                "epilogue": "PERF_VEC_BUSY", "store": "PERF_DMA_STORE_BUSY"}
    for name, p in r["phases"].items():
        print(f"  {name:<10}{p['PERF_CYCLES']:>10}{p[busy_key[name]]:>10}"
              f"{p['PERF_DMA_LOAD_BYTES']:>14}{p['PERF_DMA_STORE_BYTES']:>15}")
    print(f"  {'total':<10}{total:>10}")
    print(f"  PE utilization: {macs / (peak * g['PERF_GEMM_BUSY']):.1%} of the GEMM's busy cycles, "
          f"{macs / (peak * total):.1%} of the whole run (DMA and epilogue not overlapped)")
    print(f"  array occupancy (A rows entering / GEMM busy cycles): "
          f"{g['PERF_GEMM_ACTIVE'] / g['PERF_GEMM_BUSY']:.1%}")
    ok = r["match"]
    print(f"  bit-exact vs golden device model and NumPy reference: {'PASS' if ok else 'FAIL'}"
          f"   ({wall:.1f} s wall)")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=8, choices=(4, 8, 16))
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--waves", action="store_true", help="debug build with a VCD in the run dir")
    args = ap.parse_args(argv)
    if args.waves:
        os.environ["KAKI_WAVES"] = "1"
    t0 = time.monotonic()
    env = {"KAKI_DEMO_M": str(args.m), "KAKI_DEMO_K": str(args.k), "KAKI_DEMO_N": str(args.n)}
    target = soc_target(args.dim)
    try:
        simbuild.run(target, "cocotb_tests.cocotb_sim_demo", seed=args.seed, extra_env=env,
                     tag="sim_demo", repro=lambda seed: f"make sim DIM={args.dim} SEED={seed} WAVES=1")
        failed = None
    except AssertionError as e:
        failed = e
    run_dir = simbuild.last_run_dir()
    report_file = run_dir / "report.json"
    if report_file.exists():
        ok = print_report(json.loads(report_file.read_text()), time.monotonic() - t0)
    else:
        ok = False
    if failed or not ok:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
