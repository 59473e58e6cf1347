"""Bit-exact NumPy golden models of Kaki, written from ``docs/numerics.md`` and the descriptor
docstrings in ``hdl_gen/descriptor.py`` -- independently of the RTL generators.

:mod:`golden.ops` holds the references: GEMM, the vector-epilogue stages and the DMA byte copies.
"""
