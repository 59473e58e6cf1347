#!/bin/sh
# Verilator's OBJCACHE hook (tools/simbuild.py, docs/toolchain.md): the Verilator runtime's sources,
# compiled alike by every simulator build, go through sccache; a design's own files go straight to
# the compiler (their precompiled headers exist only as .gch files, which sccache cannot preprocess).
for src; do :; done
case "$src" in
    "$VERILATOR_ROOT"/include/*.cpp | */cocotb/share/lib/verilator/*.cpp) exec "$KAKI_SCCACHE" "$@" ;;
esac
exec "$@"
