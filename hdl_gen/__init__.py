"""Amaranth 0.5 sources of the Kaki accelerator RTL.

`python -m hdl_gen.generate` (`make rtl`) writes the Verilog in `rtl/` and every artifact derived
from the single sources kept here (register map, descriptor format).
"""
