"""`make accuracy`: the special functions' error against float64, in output steps (LSB), beside
the goals of docs/numerics.md.

    python -m tools.accuracy [--seed 1] [--cases 400]

The cases and references are :mod:`verif.special_accuracy`'s (the same the tests gate on):
random rows of every population (uniform, normal, equal, nearly equal, one dominant value,
-128 everywhere) at lengths 1 to 4096 for softmax and the norms, every int8 code for GELU and
SiLU, every pair of codes for the multiply. Exit status 1 when a goal is missed.
"""
import argparse
import sys

from verif.special_accuracy import measure

#: (max, mean) goals in LSB; None: no goal for that figure.
GOALS = {"softmax": (1.0, 0.25), "softmax (causal)": (1.0, 0.25), "layer_norm": (1.0, None),
         "rms_norm": (1.0, None), "gelu": (1.0, None), "silu": (1.0, None), "mul": (1.0, None)}


def table(result):
    lines = ["| op | max error (LSB) | goal | mean error (LSB) | goal | elements |",
             "|---|---|---|---|---|---|"]
    for op, (worst, mean, n) in result.items():
        gmax, gmean = GOALS[op]
        lines.append(f"| {op} | {worst:.3f} | <= {gmax} | {mean:.3f} | "
                     f"{'<= ' + str(gmean) if gmean is not None else '-'} | {n:,} |")
    return "\n".join(lines)


def missed(result):
    return [op for op, (worst, mean, _) in result.items()
            if worst > GOALS[op][0] or (GOALS[op][1] is not None and mean > GOALS[op][1])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=400, help="random cases per row op")
    args = ap.parse_args(argv)
    result = measure(args.seed, cases=args.cases)
    print(f"special-function accuracy against float64 (seed {args.seed}, {args.cases} cases per "
          f"row op; rerun: python -m tools.accuracy --seed {args.seed} --cases {args.cases})")
    print(table(result))
    bad = missed(result)
    if bad:
        print(f"goal missed: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
