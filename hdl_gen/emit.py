"""Amaranth → Verilog conversion with deterministic output (no absolute source paths)."""
from amaranth.back import verilog


def to_verilog(component, name):
    """Verilog text of ``component`` with top module ``name``; identical on every machine."""
    return verilog.convert(component, name=name, emit_src=False)
