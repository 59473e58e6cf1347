"""The whole chip's testbench top: the committed rtl/kaki_soc_<N>x<N>.v + the host memory model
(``tools.simbuild.soc_target`` turns it into a simulator build).

The testbench top (``kaki_tb_soc_<N>x<N>``) is generated here from the AXI signatures: it exposes
the chip's CSR port and IRQ line, wires the chip's AXI4 master to ``kaki_host_mem``, and passes the
model's configuration/backdoor ports through with the prefix ``host_``.

The clock ``clk`` is not a cocotb clock (two VPI timer callbacks and signal writes per cycle,
which capped the whole-chip simulation at ~0.6 of bare Verilator). Three ways, by Verilog define:

* ``KAKI_LOOP_CLOCK`` (the simulator builds, ``SimTarget.loop_clock``): ``clk`` is an input that
  the simulator's main loop inverts every half period, before evaluating that time step
  (tools/harness/verilator_window.cpp); no Verilator timing scheduler. Python sees ``clk`` for
  edge awaits as before;
* neither define: the top makes ``clk`` itself (``always #5``, a ``--timing`` build), with the
  same edges. This was the simulator builds' clock; Verilator's timing scheduler costs ~8 % more
  instructions per cycle than the loop's clock (idle chip, callgrind);
* ``KAKI_EXT_CLOCK``: ``clk`` is an input and the chip's CSR outputs go straight to the ports, for
  the bare C++ harness (tools/harness/replay.cpp), which toggles the clock itself.

With the clock made outside Python, cocotb's ``RisingEdge(clk)`` callbacks run after the design
evaluated the edge, so Python would read the registers' *new* values; a cocotb clock toggles
before the evaluation and Python reads the old ones, which is what cocotbext-axi's handshake
logic assumes. (It saw READY of the cycle after a handshake: it re-offered accepted requests and
would have taken a READY that rose after the edge for an acceptance — the pin monitor of
bus_agents.py caught the re-offers.) So the chip's CSR outputs reach the top's ports through a
copy taken at the falling edge: at a rising edge Python reads what the chip drove just before it.
Python's own writes land after the edge either way (cocotb applies them in the ReadWrite phase;
verif/csr_master.py writes at once, right after the edge).
The bus monitors watch the chip's pins themselves (``pin_csr__*``).
"""
from pathlib import Path

from amaranth.lib import wiring

from hdl_gen import regmap
from hdl_gen.axi import Axi4LiteSignature, Axi4Signature

_HDL = Path(__file__).resolve().parent / "hdl"
HOST_MEM_V = _HDL / "kaki_host_mem.v"
HOST_WORDS = 1 << 17          # 1 MiB of 64-bit words
HOST_MEM_PUBLIC = _HDL / "kaki_host_mem_public.vlt"
CLOCK_NS = 10                 # clock period of the testbench top
#: Time of rising edge 0 (the clock starts low): rising edge k is at FIRST_EDGE_NS + k * CLOCK_NS.
FIRST_EDGE_NS = CLOCK_NS // 2

# The host memory model's control ports: (name, width expression, direction from the model).
_HOST_CTRL = [("cfg_latency", 8, "input"), ("cfg_stall", 8, "input"), ("cfg_seed", 32, "input"),
              ("cfg_err_base", "A", "input"), ("cfg_err_limit", "A", "input"),
              ("cfg_err_resp", 2, "input"), ("cfg_max_len", 8, "input"),
              ("cfg_bh_base", "A", "input"), ("cfg_bh_limit", "A", "input"), ("cfg_bh_mode", 2, "input"),
              ("bd_load", 1, "input"), ("bd_dump", 1, "input"), ("bd_fname", 1024, "input"),
              ("bd_lo", 32, "input"), ("bd_hi", 32, "input"),
              ("st_prot_err", 8, "output"), ("st_ar_count", 32, "output"),
              ("st_aw_count", 32, "output"), ("st_rd_max_out", 8, "output"),
              ("st_bh_count", 32, "output"), ("st_bh_time", 32, "output"), ("st_bh_parked", 8, "output")]


#: AXI handshake signals of the chip's ``mem`` port copied to ``mon_<name>`` outputs of the tb top,
#: so tests can time the chip's bus traffic (dispatch overhead) without a debug build.
MONITORED = ("arvalid", "arready", "arid", "rvalid", "rready", "rlast", "rid",
             "awvalid", "awready", "awid", "bvalid", "bready", "bid")


#: The pin monitors (verif/bus_agents.py) sleep on ``mon_<bus>_busy`` (any VALID
#: of the bus high) and then read, per clock, the VALID and READY of every channel packed in
#: ``mon_<bus>_hs`` ({valid, ready} per channel, the first channel in the top bits), and the payload
#: of a channel whose VALID is high packed in ``mon_<bus>_<channel>`` (the fields below, the first
#: in the top bits): continuous assigns of the pins, one read instead of one per signal (~4 µs each).
MONITOR_FIELDS = {
    "csr": {"aw": ("addr",), "w": ("data", "strb"), "ar": ("addr",), "b": ("resp",), "r": ("data", "resp")},
    "mem": {"aw": ("id", "addr", "len", "size", "burst"), "w": ("data", "strb", "last"),
            "ar": ("id", "addr", "len", "size", "burst"), "b": ("id", "resp"),
            "r": ("id", "data", "resp", "last")},
}
HANDSHAKES = ("aw", "w", "ar", "b", "r")


#: the testbench top's signals Python touches (Verilator ``public_flat_rw`` patterns of the fast
#: build, ``SimTarget.public``): its ports. The wires between the chip and the host memory model
#: (``mem__*``, ``pin_csr__*``) stay private: public, they cost ~3 % more instructions per cycle
#: (Verilator evaluates them apart). Python finds the mem port's widths with :func:`mem_signature`.
PUBLIC = ("clk", "rst", "irq", "csr__*", "host_*", "mon_*")


def mem_signature(dut):
    """The chip's ``mem`` port signature (``Axi4Signature``) read from the testbench top's ports:
    the address width of the host model's configuration ports, the data width of its words (a
    public array), the ID width of the monitor copies."""
    return Axi4Signature(len(dut.host_cfg_err_base), len(dut.host.mem[0]), len(dut.mon_arid))


def monitor_ports(bus, sig, fields):
    """The packed monitor copies of a bus with flat AXI signature ``sig``: {port name: width}
    (``mon_<bus>_hs``, ``mon_<bus>_busy``, one ``mon_<bus>_<channel>`` per channel of ``fields``,
    e.g. ``MONITOR_FIELDS["mem"]``), as the chip's testbench top declares them."""
    widths = {n: w for n, w, _ in _members(sig)}
    ports = {f"mon_{bus}_hs": 2 * len(HANDSHAKES), f"mon_{bus}_busy": 1}
    ports.update({f"mon_{bus}_{ch}": sum(widths[ch + f] for f in flds) for ch, flds in fields.items()})
    return ports


def monitor_values(bus, pins, fields):
    """The same copies as Amaranth values, for an Amaranth testbench top: {port name: value}, from
    ``pins`` (signature member name -> the bus's signal). Packed like the Verilog concatenations of
    :func:`_monitor_wires` (the first signal in the top bits), which is what
    :class:`verif.axi_checker.PackedSampler` reads."""
    from amaranth import Cat

    def packed(names):                  # Verilog {a, b, ...}: Cat puts its first operand lowest
        return Cat(*(pins[n] for n in reversed(names)))
    out = {f"mon_{bus}_hs": packed([f"{c}{h}" for c in HANDSHAKES for h in ("valid", "ready")]),
           f"mon_{bus}_busy": packed([f"{c}valid" for c in HANDSHAKES]).any()}
    out.update({f"mon_{bus}_{ch}": packed([ch + f for f in flds]) for ch, flds in fields.items()})
    return out


def signature_widths(sig):
    """{member name: width} of a flat AXI signature (PackedSampler's ``widths``)."""
    return {n: w for n, w, _ in _members(sig)}


def _members(sig):
    """(name, width, is_manager_output) of a flat AXI signature."""
    return [(name, m.shape.width if hasattr(m.shape, "width") else int(m.shape),
             m.flow == wiring.Out) for name, m in sig.members.items()]


def _decl(direction, width, name):
    return f"    {direction} wire {'' if width == 1 else f'[{width - 1}:0] '}{name}"


def tb_verilog(cfg):
    top = f"kaki_tb_soc_{cfg.name}"
    csr = Axi4LiteSignature(regmap.addr_bits())
    mem = Axi4Signature(cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits)
    ports = ["    input wire rst", "    output wire irq"]
    ports += [_decl("input" if out else "output", w, f"csr__{n}") for n, w, out in _members(csr)]
    ports += [_decl(d, cfg.axi_addr_bits if w == "A" else w, f"host_{n}") for n, w, d in _HOST_CTRL]
    widths = signature_widths(mem)
    ports += [_decl("output", widths[n], f"mon_{n}") for n in MONITORED]
    for bus, bsig in (("csr", csr), ("mem", mem)):
        ports += [_decl("output", w, n) for n, w in monitor_ports(bus, bsig, MONITOR_FIELDS[bus]).items()]
    wires = [f"    wire {'' if w == 1 else f'[{w - 1}:0] '}{bus}__{n};"
             for bus, sig in (("mem", mem), ("pin_csr", csr)) for n, w, _ in _members(sig)]
    soc_conn = [".clk(clk)", ".rst(rst)", ".irq(irq)"]
    soc_conn += [f".csr__{n}(pin_csr__{n})" for n, _, _ in _members(csr)]
    soc_conn += [f".mem__{n}(mem__{n})" for n, _, _ in _members(mem)]
    mem_conn = [".clk(clk)", ".rst(rst)"] + [f".s__{n}(mem__{n})" for n, _, _ in _members(mem)]
    mem_conn += [f".{n}(host_{n})" for n, _, _ in _HOST_CTRL]
    params = (f"#(.DATA_W({cfg.axi_data_bits}), .ADDR_W({cfg.axi_addr_bits}), "
              f".ID_W({cfg.axi_id_bits}), .WORDS({HOST_WORDS}))")
    sep = ",\n        "
    return (f"// Generated by verif/soc_target.py: testbench top, not part of the chip.\n"
            f"module {top} (\n`ifdef KAKI_EXT_CLOCK\n    input wire clk,\n`elsif KAKI_LOOP_CLOCK\n"
            f"    input wire clk,\n`endif\n"
            + ",\n".join(ports) + "\n);\n"
            f"`ifndef KAKI_EXT_CLOCK\n`ifndef KAKI_LOOP_CLOCK\n    reg clk = 1'b0;\n"
            f"    always #{CLOCK_NS // 2} clk = ~clk;\n`endif\n`endif\n"
            + "\n".join(wires) + "\n"
            f"    kaki_soc_{cfg.name} soc (\n        {sep.join(soc_conn)}\n    );\n"
            f"    kaki_host_mem {params} host (\n        {sep.join(mem_conn)}\n    );\n"
            + _csr_ports(csr)
            + "".join(f"    assign mon_{n} = mem__{n};\n" for n in MONITORED)
            + "".join(_monitor_wires(bus) for bus in MONITOR_FIELDS)
            + "endmodule\n")


def _csr_ports(csr):
    """The CSR port: manager signals straight in; the chip's outputs through the falling-edge
    copy (module docstring), or straight out for the bare C++ harness's external clock."""
    out = "".join(f"    assign pin_csr__{n} = csr__{n};\n" for n, _, mine in _members(csr) if mine)
    chip = [(n, w) for n, w, mine in _members(csr) if not mine]
    vec = lambda w: "" if w == 1 else f"[{w - 1}:0] "
    return (out + "`ifdef KAKI_EXT_CLOCK\n"
            + "".join(f"    assign csr__{n} = pin_csr__{n};\n" for n, _ in chip)
            + "`else\n"
            + "".join(f"    reg {vec(w)}pre_csr__{n} = 0;\n    assign csr__{n} = pre_csr__{n};\n"
                      for n, w in chip)
            + "    always @(negedge clk) begin\n"
            + "".join(f"        pre_csr__{n} <= pin_csr__{n};\n" for n, _ in chip)
            + "    end\n`endif\n")


def _monitor_wires(bus):
    pins = {"csr": "pin_csr", "mem": "mem"}[bus]
    hs = ", ".join(f"{pins}__{c}valid, {pins}__{c}ready" for c in HANDSHAKES)
    busy = " | ".join(f"{pins}__{c}valid" for c in HANDSHAKES)
    out = f"    assign mon_{bus}_hs = {{{hs}}};\n    assign mon_{bus}_busy = {busy};\n"
    for ch, fields in MONITOR_FIELDS[bus].items():
        out += f"    assign mon_{bus}_{ch} = {{{', '.join(f'{pins}__{ch}{f}' for f in fields)}}};\n"
    return out
