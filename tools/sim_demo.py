"""`make sim`: compile small int8 models, run them driver -> firmware -> RTL under Verilator,
check them bit-exactly against the golden device model and the NumPy reference, print a report.

    python -m tools.sim_demo [--dim 8] [--model mlp|conv|all|torch_mlp|torch_conv]
                                    [--seed N] [--waves]
                                    [--trace build/trace.json]

Report columns (per layer = the commands whose note starts with the layer's name):
  predicted  cost model (compiler/cost.py): the layer's busiest engine or firmware work, whichever
             is larger (the pipelined lower bound the tiler minimises); "serial" = sum of all
  measured   completion-record TIMESTAMPs: last record of the layer minus last record of the
             previous layer (the run start for the first)
  PE util    MACs / (dim^2 * measured cycles)
  DMA in/out KiB the layer's DMA descriptors (program); the total line is the PERF counters
Engine busy cycles and DMA bytes are the PERF_* counters, cleared just before Device.run.
Dispatch overhead = run cycles (last completion record) minus the busiest engine's busy cycles,
i.e. the time no engine work explains (firmware dispatch, event round trips, record writes).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from compiler.models import MODELS, TORCH_MODELS

from . import simbuild
from verif.soc_target import soc_target
from firmware.build import shared_elf as firmware_elf


def _pct(x):
    return f"{x:6.1%}"


def print_report(r, wall):
    ok = bool(r.get("models")) and r.get("pass_", False)
    print(f"\nKaki {r['dim']}x{r['dim']}: compiled int8 models, driver -> firmware -> RTL "
          f"(seed {r['seed']})")
    for m in r.get("models", []):
        p = m["perf"]
        print(f"\n  model {m['model']}: {m['commands']} descriptors ({m['engine_commands']} engine "
              f"commands) on queues {m['queues']}; {m['macs']:,} MACs")
        print(f"  {'layer':<12}{'M x K x N':>16}{'cmds':>6}{'predicted':>11}{'measured':>10}"
              f"{'meas/pred':>10}{'PE util':>9}{'DMA in':>9}{'out KiB':>8}")
        for L in m["layers"]:
            shape = "x".join(str(v) for v in L["shape"])
            print(f"  {L['layer']:<12}{shape:>16}{L['commands']:>6}{L['predicted']:>11}"
                  f"{L['measured']:>10}{L['measured'] / max(L['predicted'], 1):>10.2f}"
                  f"{_pct(L['pe_util']) if L['pe_util'] <= 1 else 'overlap':>9}"
                  f"{L['dma_in'] / 1024:>9.1f}{L['dma_out'] / 1024:>8.1f}")
        print(f"  {'total':<12}{'':>16}{m['commands']:>6}{m['predicted']:>11}{m['last_record']:>10}"
              f"{m['last_record'] / max(m['predicted'], 1):>10.2f}{_pct(m['pe_util_run']):>9}"
              f"{m['dma_in'] / 1024:>9.1f}{m['dma_out'] / 1024:>8.1f}")
        print("  (a layer's measured span runs from the previous layer's last completion record to its "
              "own; layers overlap, so compare the totals)")
        print(f"  predicted serial (no overlap): {m['predicted_serial']} cycles; "
              f"host-observed run (TIMESTAMP around Device.run): {m['total']} cycles")
        pe = m["predicted_engines"]
        busy = [("GEMM", "PERF_GEMM_BUSY", "gemm"), ("DMA load", "PERF_DMA_LOAD_BUSY", "dma_load"),
                ("DMA store", "PERF_DMA_STORE_BUSY", "dma_store"), ("vector", "PERF_VEC_BUSY", "vector")]
        print("  engine busy cycles, measured (PERF) / predicted: " + ", ".join(
            f"{n} {p[k]} / {pe.get(e, 0)}" for n, k, e in busy))
        print(f"  PE utilization: {m['pe_util_gemm']:.1%} of GEMM busy cycles, "
              f"{m['pe_util_run']:.1%} of the run")
        print(f"  DMA bytes (PERF): in {m['dma_in']:,}, out {m['dma_out']:,} "
              f"(program: {m['dma_in_expected']:,} / {m['dma_out_expected']:,})")
        print(f"  dispatch overhead: {m['overhead']} cycles not covered by the busiest engine = "
              f"{m['overhead_per_desc']:.0f} per descriptor; {m['cycles_per_desc']:.0f} cycles per "
              f"descriptor overall (cost model charges {m['predicted_firmware']} firmware cycles)")
        print(f"  queue event-wait cycles (PERF_Q_EVENT_STALL): "
              f"{', '.join(f'q{q} ' + str(p[f'PERF_Q_EVENT_STALL{q}']) for q in m['queues'])}")
        res = lambda d: "PASS" if not d else f"FAIL ({d})"          # noqa: E731
        print(f"  bit-exact vs golden device model: {res(m['vs_golden'])}; vs NumPy: "
              f"{res(m['vs_numpy'])}; golden vs NumPy: {res(m['golden_vs_numpy'])}")
        bad = {k: v for k, v in m["degenerate"].items() if v}
        if bad:
            print(f"  warning: degenerate outputs {bad}")
    print(f"\n  overall: {'PASS' if ok else 'FAIL'}   ({wall:.1f} s wall)")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=8, choices=(4, 8, 16))
    ap.add_argument("--model", default="all", choices=MODELS + TORCH_MODELS + ("all",),
                    help="all = " + ", ".join(MODELS) + "; the torch models need the torch extra")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--waves", action="store_true", help="debug build with a VCD in the run dir")
    ap.add_argument("--trace", default=None, help="write a Chrome/Perfetto trace JSON here")
    args = ap.parse_args(argv)
    if args.waves:
        os.environ["KAKI_WAVES"] = "1"
    t0 = time.monotonic()
    names = list(MODELS) if args.model == "all" else [args.model]
    env = {"KAKI_FW_ELF": str(firmware_elf()), "KAKI_DEMO_MODELS": ",".join(names)}
    trace = Path(args.trace).resolve() if args.trace else None
    if trace:
        trace.parent.mkdir(parents=True, exist_ok=True)
        env["KAKI_DEMO_TRACE"] = str(trace)
    extra = f" TRACE={args.trace}" if args.trace else ""
    try:
        simbuild.run(soc_target(args.dim), "tools.cocotb_sim_demo", seed=args.seed,
                     extra_env=env, tag="sim_demo",
                     repro=lambda seed: f"make sim DIM={args.dim} MODEL={args.model} SEED={seed} "
                                        f"WAVES=1{extra}")
        failed = None
    except AssertionError as e:
        failed = e
    report_file = simbuild.last_run_dir() / "report.json"
    ok = False
    if report_file.exists():
        ok = print_report(json.loads(report_file.read_text()), time.monotonic() - t0)
        print(f"  report: {report_file.relative_to(simbuild.REPO)}")
        if trace and trace.exists():
            print(f"  trace: {trace} (open in https://ui.perfetto.dev)")
    if failed or not ok:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
