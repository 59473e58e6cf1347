"""MLIR generic-syntax text for the compiler's IR dumps, and a small structural parser for it.

Every op is one line ``%r = "kaki.op"(%a, %b) {key = value, ...} : (t0, t1) -> t2`` inside a
``"builtin.module"() ({ ... }) {sym_name = "..."} : () -> ()`` so ``mlir-opt
--allow-unregistered-dialect`` reads the dumps. Attribute values: ``true``/``false``, ``N : i64``,
floats as ``F : f64``, strings, ``array<i64: ...>`` for integer vectors.
"""
import re

import numpy as np

__all__ = ["tensor_type", "attr", "op_line", "module", "parse"]

_IDENT = re.compile(r"[^A-Za-z0-9_$.]")


def ssa(name):
    return "%" + _IDENT.sub("_", str(name))


def tensor_type(shape, dtype):
    return "tensor<" + "x".join(str(d) for d in shape) + "x" + {"int8": "i8", "int32": "i32"}.get(dtype, dtype) + ">"


def attr(v):
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return f"{int(v)} : i64"
    if isinstance(v, (float, np.floating)):
        return f"{float(v)!r} : f64"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list, np.ndarray)):
        vals = np.asarray(v).ravel()
        if isinstance(v, np.ndarray) and len(vals) > 1 and vals.dtype.kind in "iu" and (vals == vals[0]).all():
            return f"{int(vals[0])} : i64"          # a per-channel vector with one value
        if vals.dtype.kind in "iub" or len(vals) == 0:
            return "array<i64" + (": " + ", ".join(str(int(x)) for x in vals) if len(vals) else "") + ">"
        return "array<f64: " + ", ".join(repr(float(x)) for x in vals) + ">"
    raise TypeError(f"no MLIR attribute for {v!r}")


def op_line(name, results, operands, attrs, operand_types, result_types):
    head = (", ".join(ssa(r) for r in results) + " = ") if results else ""
    body = f'"{name}"(' + ", ".join(ssa(o) for o in operands) + ")"
    if attrs:
        body += " {" + ", ".join(f"{k.replace('.', '_')} = {attr(v)}" for k, v in attrs.items()) + "}"
    res = result_types[0] if len(result_types) == 1 else "(" + ", ".join(result_types) + ")"
    return f"{head}{body} : ({', '.join(operand_types)}) -> {res}"


def module(name, lines):
    return ('"builtin.module"() ({\n' + "".join(f"  {ln}\n" for ln in lines)
            + f'}}) {{sym_name = "{name}"}} : () -> ()\n')


_OP = re.compile(r'^(?:(?P<res>%[\w$.]+(?:, %[\w$.]+)*) = )?"(?P<op>[\w.]+)"\((?P<args>[^)]*)\)'
                 r'(?: \{(?P<attrs>.*)\})? : \((?P<tin>.*)\) -> (?P<tout>.+)$')


def parse(text):
    """Parse a dump back into ``(module name, [(results, op, operands, attrs text, types)])``.

    Checks the structure every dump must have: the module wrapper, one op per line, SSA values
    defined once and before use with the type they were defined with, operand and type counts that agree. Raises ValueError.
    """
    lines = text.rstrip("\n").split("\n")
    if lines[0] != '"builtin.module"() ({':
        raise ValueError("dump does not start with a builtin.module")
    m = re.fullmatch(r'\}\) \{sym_name = "(.*)"\} : \(\) -> \(\)', lines[-1])
    if not m:
        raise ValueError(f"bad module end {lines[-1]!r}")
    defined, ops = {}, []
    for i, ln in enumerate(lines[1:-1], 2):
        mo = _OP.match(ln.strip())
        if not mo:
            raise ValueError(f"line {i}: not an MLIR generic op: {ln!r}")
        res = mo["res"].split(", ") if mo["res"] else []
        args = [a.strip() for a in mo["args"].split(",") if a.strip()]
        for a in args:
            if a not in defined:
                raise ValueError(f"line {i}: {a} used before its definition")
        tin = [t for t in re.split(r",\s*(?![^<]*>)", mo["tin"]) if t]
        if len(tin) != len(args):
            raise ValueError(f"line {i}: {len(args)} operands but {len(tin)} operand types")
        for a, t in zip(args, tin):
            if defined[a] is not None and defined[a] != t:
                raise ValueError(f"line {i}: {a} has type {defined[a]}, used as {t}")
        for r in res:
            if r in defined:
                raise ValueError(f"line {i}: {r} defined twice")
            defined[r] = mo["tout"] if len(res) == 1 else None
        ops.append((res, mo["op"], args, mo["attrs"] or "", mo["tout"]))
    return m[1], ops
