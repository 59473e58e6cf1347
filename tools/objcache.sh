#!/bin/sh
# Verilator's OBJCACHE hook (tools/simbuild.py, docs/toolchain.md): the Verilator runtime's sources,
# compiled alike by every simulator build, go through sccache; everything else goes straight to the
# compiler: a design's own files (their precompiled headers exist only as .gch files, which
# sccache cannot preprocess) and cocotb's main, which includes the design's Vtop.h (shared, it
# crashed the simulators of other designs).
for src; do :; done
case "$src" in
    "$VERILATOR_ROOT"/include/*.cpp) exec "$KAKI_SCCACHE" "$@" ;;
esac
exec "$@"
