"""Python side of ``verif/hdl/kaki_host_mem.v``: backdoor load/dump and run-time configuration
(latency, stalls, an error window, a black hole that does not answer).

The model's bulk backdoor is ``$readmemh``/``$writememh`` on a file, triggered by a one-cycle pulse
(one clock edge per transfer, whatever the size), so tests never touch the memory word by word.
Files are written in the simulator's working directory (the cocotb test directory). When the build
makes the model's storage array public and its handle is given (``mem=``), small transfers instead
read or write its words over VPI, at once: no file round trip and no simulated time (a driver
polling completion records and pushing descriptors makes hundreds of them). A VPI write lands
between two clock edges, a file load at a clock edge.

Usage::

    hm = HostMemory(dut, prefix="hm_")          # ports hm_cfg_latency, hm_bd_load, ...
    hm.configure(latency=8, stall=0.2, seed=7)  # before reset: the seed loads while rst is high
    await hm.load(0x1003, b"...")               # any byte address and length
    data = await hm.read(0x1003, 100)           # -> bytes
"""
import os

import numpy as np
from cocotb.handle import _GPISetAction
from cocotb.triggers import FallingEdge, RisingEdge

__all__ = ["HostMemory"]

#: Largest transfer done word by word over VPI (~2-3 µs a word, measured) rather than by one
#: $readmemh/$writememh file round trip (1-4 ms and 1.5 clock cycles whatever the size).
VPI_WORDS = 512

#: the GPI action of ``cocotb.handle.Immediate``: the write takes effect at once (vpiNoDelay)
_NO_DELAY = _GPISetAction.NO_DELAY.value

_PORTS = ("cfg_latency", "cfg_stall", "cfg_seed", "cfg_err_base", "cfg_err_limit", "cfg_err_resp",
          "cfg_max_len", "cfg_bh_base", "cfg_bh_limit", "cfg_bh_mode", "bd_load", "bd_dump",
          "bd_fname", "bd_lo", "bd_hi", "st_prot_err", "st_ar_count", "st_aw_count",
          "st_rd_max_out", "st_bh_count", "st_bh_time", "st_bh_parked")

PROT_ERR_BITS = {
    0: "AR burst crosses 4 KiB", 1: "AW burst crosses 4 KiB", 2: "AxSIZE is not the full width",
    3: "AxBURST is not INCR", 4: "AxLEN above the maximum", 5: "WLAST on the wrong beat",
    6: "AxADDR not beat-aligned", 7: "VALID dropped or payload changed before READY",
}


class HostMemory:
    """Backdoor and configuration of one ``kaki_host_mem`` instance.

    Parameters
    ----------
    dut : cocotb handle holding the model's control ports (the model itself, or a wrapper that
        exposes them with ``prefix``).
    prefix : str
        Prefix of the control port names (``prefix + "cfg_latency"`` …).
    clk : handle, optional
        The model's clock (default ``dut.clk``).
    data_bytes : int
        AXI data width in bytes (``DATA_W/8``).
    words : int
        ``WORDS`` parameter of the instance; addresses wrap modulo ``words * data_bytes``.
    name : str
        Base name of the hex files used for the backdoor.
    mem : handle, optional
        The model's storage array ``mem``, public in the build: transfers of up to
        :data:`VPI_WORDS` words then use it.
    """

    def __init__(self, dut, prefix="", *, clk=None, data_bytes=8, words=131072,
                 name="kaki_host_mem", fname_bits=1024, mem=None):
        self.clk = dut.clk if clk is None else clk
        self.mem = mem
        self._raw = {}
        self.data_bytes = data_bytes
        self.words = words
        self.size = words * data_bytes
        self.p = {n: getattr(dut, prefix + n) for n in _PORTS}
        self.fname = f"{name}_{os.getpid()}.hex"
        if len(self.fname) > fname_bits // 8:
            raise ValueError(f"backdoor file name {self.fname!r} longer than {fname_bits // 8} characters")
        self._fname_value = int.from_bytes(self.fname.encode(), "big")

    # ------------------------------------------------------------------------- configuration
    def configure(self, *, latency=2, stall=0.0, seed=1, max_len=255):
        """Set every run-time input (the seed takes effect at the next reset) and close the error
        window and the black hole."""
        self.set_latency(latency)
        self.set_backpressure(stall)
        self.p["cfg_seed"].value = seed & 0xFFFFFFFF
        self.p["cfg_max_len"].value = max_len
        self.clear_error_window()
        self.clear_blackhole()
        self.p["bd_load"].value = 0
        self.p["bd_dump"].value = 0
        self.p["bd_fname"].value = self._fname_value
        self.p["bd_lo"].value = 0
        self.p["bd_hi"].value = 0

    def set_latency(self, cycles):
        """Cycles from an AR handshake to the first R beat of that burst (the model's minimum is 2)."""
        self.p["cfg_latency"].value = int(cycles)

    def set_backpressure(self, prob):
        """Stall probability per cycle on AR/AW/W ready and R/B valid: a float in [0, 1) or an int /256."""
        v = int(round(prob * 256)) if isinstance(prob, float) else int(prob)
        self.p["cfg_stall"].value = max(0, min(255, v))

    def set_seed(self, seed):
        """LFSR seed; loaded while the model's reset is high."""
        self.p["cfg_seed"].value = seed & 0xFFFFFFFF

    def set_max_len(self, max_len):
        """Largest AxLEN the protocol checker accepts (``max_burst_beats - 1``)."""
        self.p["cfg_max_len"].value = max_len

    def set_error_window(self, base, limit, resp=2):
        """Beats overlapping [base, limit) answer ``resp`` (2 = SLVERR, 3 = DECERR); writes there are dropped."""
        if resp not in (2, 3):
            raise ValueError(f"resp must be 2 (SLVERR) or 3 (DECERR), not {resp!r}")
        self.p["cfg_err_base"].value = base
        self.p["cfg_err_limit"].value = limit
        self.p["cfg_err_resp"].value = resp

    def clear_error_window(self):
        self.p["cfg_err_base"].value = 0
        self.p["cfg_err_limit"].value = 0
        self.p["cfg_err_resp"].value = 0

    def set_blackhole(self, base, limit, *, refuse=False, swallow=True):
        """Make [base, limit) a subordinate that does not answer: bursts whose beats overlap it are
        refused (``refuse``: AR/AW READY held low while offered) and/or accepted and parked
        (``swallow``: no R beats or B until :meth:`clear_blackhole`; written data dropped). Later
        bursts of a parked burst's ID wait behind it; other IDs are served."""
        if not 0 <= base < limit:
            raise ValueError(f"black hole [{base:#x}, {limit:#x}) is empty or negative")
        if not (refuse or swallow):
            raise ValueError("a black hole must refuse or swallow (or both)")
        self.p["cfg_bh_base"].value = base
        self.p["cfg_bh_limit"].value = limit
        self.p["cfg_bh_mode"].value = int(refuse) | int(swallow) << 1

    def clear_blackhole(self):
        """Close the black hole: refused bursts are accepted, parked ones answered (OKAY, reads
        with the memory's data now), each after the earlier bursts of its ID."""
        self.p["cfg_bh_mode"].value = 0
        self.p["cfg_bh_base"].value = 0
        self.p["cfg_bh_limit"].value = 0

    # ------------------------------------------------------------------------- status
    @property
    def prot_err(self):
        """Sticky protocol-violation flags (see :data:`PROT_ERR_BITS`)."""
        return int(self.p["st_prot_err"].value)

    def prot_err_text(self):
        v = self.prot_err
        return ", ".join(t for b, t in PROT_ERR_BITS.items() if v >> b & 1) or "none"

    @property
    def ar_count(self):
        return int(self.p["st_ar_count"].value)

    @property
    def aw_count(self):
        return int(self.p["st_aw_count"].value)

    @property
    def rd_max_outstanding(self):
        return int(self.p["st_rd_max_out"].value)

    @property
    def bh_count(self):
        """Bursts the black hole parked, plus requests it started refusing."""
        return int(self.p["st_bh_count"].value)

    @property
    def bh_time(self):
        """Cycle (since the model's reset) of the latest black-hole event of :attr:`bh_count`."""
        return int(self.p["st_bh_time"].value)

    @property
    def bh_parked(self):
        """Bursts parked now (reads and writes)."""
        return int(self.p["st_bh_parked"].value)

    # ------------------------------------------------------------------------- backdoor
    async def _pulse(self, name):
        await FallingEdge(self.clk)
        self.p[name].value = 1
        await RisingEdge(self.clk)      # the model runs $readmemh/$writememh at this edge
        await FallingEdge(self.clk)
        self.p[name].value = 0

    async def _dump_words(self, w0, w1):
        """Words w0..w1 (inclusive, no wrap) as a uint8 array of (w1-w0+1)*data_bytes bytes."""
        self.p["bd_lo"].value = w0
        self.p["bd_hi"].value = w1
        await self._pulse("bd_dump")
        with open(self.fname) as f:
            lines = [ln.strip() for ln in f]
        lines = [ln for ln in lines if ln and not ln.startswith(("@", "//"))]
        if len(lines) != w1 - w0 + 1:
            raise RuntimeError(f"$writememh gave {len(lines)} words, expected {w1 - w0 + 1}")
        width = 2 * self.data_bytes
        be = np.frombuffer(bytes.fromhex("".join(ln.rjust(width, "0") for ln in lines)), np.uint8)
        return be.reshape(-1, self.data_bytes)[:, ::-1].reshape(-1)

    def _word(self, w):
        """The simulator object of word ``w`` of ``mem`` (cached): its raw GPI handle, read and
        written below without cocotb's value objects (a driver run reads thousands of words;
        ``handle.value`` costs several times the VPI access itself)."""
        h = self._raw.get(w)
        if h is None:
            h = self._raw[w] = self.mem[w]._handle
        return h

    def _peek_words(self, w0, w1):
        """Words w0..w1 (inclusive, no wrap) read over VPI, as :meth:`_dump_words` returns them."""
        word = self._word
        vals = [word(w).get_signal_val_binstr() for w in range(w0, w1 + 1)]
        try:
            ints = [int(v, 2) for v in vals]
        except ValueError:           # X or Z bits (a 4-state simulator): as cocotb resolves them
            ints = [self.mem[w].value.to_unsigned() for w in range(w0, w1 + 1)]
        db = self.data_bytes
        if db in (4, 8):
            return np.array(ints, dtype=f"<u{db}").view(np.uint8)
        return np.frombuffer(b"".join(v.to_bytes(db, "little") for v in ints), np.uint8)

    def _poke_words(self, w0, data):
        """Write whole words from w0 (no wrap) over VPI, at once: the next clock edge sees them
        (what ``handle.value = Immediate(v)`` does, without cocotb's value objects)."""
        db = self.data_bytes
        fmt = f"0{8 * db}b"
        data = np.ascontiguousarray(data)
        if db in (4, 8):
            values = data.view(f"<u{db}").tolist()
        else:
            values = [int.from_bytes(row.tobytes(), "little") for row in data.reshape(-1, db)]
        for i, v in enumerate(values):
            self._word(w0 + i).set_signal_val_binstr(_NO_DELAY, format(v, fmt))

    def _by_vpi(self, w0, w1):
        return self.mem is not None and w1 - w0 < VPI_WORDS

    async def _get_words(self, w0, w1):
        return self._peek_words(w0, w1) if self._by_vpi(w0, w1) else await self._dump_words(w0, w1)

    async def _put_words(self, w0, data):
        if self._by_vpi(w0, w0 + len(data) // self.data_bytes - 1):
            self._poke_words(w0, data)
        else:
            await self._load_words(w0, data)

    async def _load_words(self, w0, data):
        """Write whole words from word index w0 (no wrap); ``data`` is uint8, a multiple of data_bytes."""
        db = self.data_bytes
        hexed = np.ascontiguousarray(data.reshape(-1, db)[:, ::-1]).tobytes().hex().encode()
        rows = np.frombuffer(hexed, dtype=f"S{2 * db}")
        with open(self.fname, "wb") as f:
            f.write(b"@%x\n" % w0)
            f.write(b"\n".join(rows.tolist()))
            f.write(b"\n")
        await self._pulse("bd_load")

    @staticmethod
    def _as_bytes(data):
        if isinstance(data, np.ndarray):
            return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        return np.frombuffer(bytes(data), dtype=np.uint8)

    def _segments(self, addr, nbytes):
        """Split [addr, addr+nbytes) at the wrap point: (start, offset into data, length)."""
        addr %= self.size
        out, off = [], 0
        while off < nbytes:
            n = min(nbytes - off, self.size - addr)
            out.append((addr, off, n))
            off += n
            addr = 0
        return out

    async def load(self, addr, data):
        """Write ``data`` (bytes-like, or an ndarray taken as its raw little-endian bytes) at byte ``addr``."""
        buf = self._as_bytes(data)
        db = self.data_bytes
        for a, off, n in self._segments(addr, len(buf)):
            w0, w1 = a // db, (a + n - 1) // db
            words = np.zeros((w1 - w0 + 1) * db, dtype=np.uint8)
            head, tail = a - w0 * db, (w1 + 1) * db - (a + n)
            if head:
                words[:db] = await self._get_words(w0, w0)
            if tail and (w1 != w0 or not head):
                words[-db:] = await self._get_words(w1, w1)
            words[head:head + n] = buf[off:off + n]
            await self._put_words(w0, words)

    async def read(self, addr, nbytes):
        """``nbytes`` bytes from byte ``addr`` (wrapping modulo the memory size)."""
        db = self.data_bytes
        out = bytearray()
        for a, _off, n in self._segments(addr, nbytes):
            w0, w1 = a // db, (a + n - 1) // db
            words = await self._get_words(w0, w1)
            out += words[a - w0 * db:a - w0 * db + n].tobytes()
        return bytes(out)
