"""The command descriptor: the single source of the command table (:data:`COMMANDS`: opcodes, the
engine serving each, payloads), error codes and every field layout.

A descriptor is 256 bits (8 little-endian 32-bit words): what the host writes into a command ring
(or the ``CMD`` staging registers) and the queue controller fetches. ``spec/descriptors.py`` (driver,
golden models, compiler, tests), the firmware's ``kaki_desc.h`` and ``docs/descriptors.md`` are
generated from this module by ``make rtl``.

Address units: ``host_addr`` and host strides are bytes; scratchpad (``spad``) and accumulator
(``acc``) addresses and strides are rows (a scratchpad row is ``dim`` int8, an accumulator row
``dim`` int32).
"""
import types
from dataclasses import dataclass

from amaranth.lib import data, enum

DESCRIPTOR_BITS = 256
DESCRIPTOR_WORDS = DESCRIPTOR_BITS // 32
PAYLOAD_BITS = 224


class ErrorCode(enum.Enum, shape=8):
    """Why a command failed; 0 means success. Reported in ``ERROR_INFO`` and completion records."""
    OK = 0
    BAD_OPCODE = 1        #: opcode not implemented
    RESERVED_BITS = 2     #: a reserved descriptor bit is set
    BAD_SHAPE = 3         #: a size field is zero or inconsistent (e.g. row_bytes+col_offset > row, DMA_PEER add without acc)
    LOCAL_RANGE = 4       #: a scratchpad/accumulator row address falls outside the memory
    HOST_RANGE = 5        #: a host address falls outside the AXI address space
    AXI_SLVERR = 6        #: the host memory answered SLVERR
    AXI_DECERR = 7        #: the host memory answered DECERR
    BAD_SHIFT = 8         #: a requantization shift is outside 0..63
    CMD_OVERFLOW = 9      #: a command was submitted while the engine's command FIFO was full
    WINDOW = 10           #: a DMA host range falls outside the queue's DMA window
    MISALIGNED = 11       #: a queue's ring base (32 B), completion base (16 B) or ring size is invalid
    RING_OVERFLOW = 12    #: the doorbell put the producer more than the ring size ahead of the consumer
    WATCHDOG = 13         #: the engine made no progress for WATCHDOG.CYCLES cycles and was reset
    BAD_EVENT = 14        #: the event index is outside the chip's event counters
    DIRECT_SUBMIT = 15    #: CMD_SUBMIT while the control core runs (the firmware owns dispatch then)
    BUS_TIMEOUT = 16      #: host memory left a request or response unanswered for BUS_TIMEOUT.CYCLES cycles
    BAD_LIST = 17         #: a command list entry is malformed: a patch outside its descriptor or argument table, or a nested EXEC_LIST
    LINK_TIMEOUT = 18     #: DMA_PEER: the chip-to-chip link failed (the peer returned no credit for LINK_TIMEOUT.CYCLES cycles; sticky until LINK_CTRL.RETRAIN) or the chip has no link


class DescFlags(data.Struct):
    """Per-descriptor flags."""
    irq: 1            #: completion record + interrupt: raise the queue's completion interrupt when this command retires
    reserved: 7


class DmaCmd(data.Struct):
    """DMA_LOAD / DMA_STORE payload: a 3D strided copy between host memory and a local memory.

    For ``p < planes`` and ``r < rows``, host row ``host_addr + p*host_plane_stride +
    r*host_row_stride`` (``row_bytes`` bytes, any alignment) pairs with local row ``local_addr +
    p*local_plane_stride + r*local_row_stride``. Loads write the whole local row: ``col_offset``
    zero bytes, the ``row_bytes`` data bytes, then zeros to the end of the row (zero padding).
    Stores write ``row_bytes`` bytes taken from byte ``col_offset`` of the local row.
    ``row_bytes == 0`` is legal: a load then writes all-zero rows (padding rows), a store writes
    nothing. ``rows`` and ``planes`` must be nonzero.
    """
    host_addr: 48           #: first byte of the first host row
    host_row_stride: 32     #: bytes between host rows
    host_plane_stride: 32   #: bytes between host planes
    local_addr: 20          #: first local row
    local_row_stride: 16    #: local rows between rows
    local_plane_stride: 20  #: local rows between planes
    row_bytes: 8            #: bytes per row (0..local row bytes - col_offset)
    col_offset: 8           #: byte offset in the local row (leading zero padding on loads)
    rows: 16                #: rows per plane, >= 1
    planes: 16              #: planes, >= 1
    acc: 1              #: local memory is the accumulator (else the scratchpad)
    reserved: 7


class GemmCmd(data.Struct):
    """GEMM payload: ``C[m, n] (+)= sum_k A[m, k] * B[k, n]`` over ``k_tiles`` × ``n_tiles`` tiles,
    for each of ``batches_m1 + 1`` batch items (e.g. attention heads).

    A k-tile ``kt`` row ``i`` is scratchpad row ``a_addr + kt*a_kt_stride + i`` (``i < m``) and holds
    ``A[i, kt*dim:(kt+1)*dim]``. B tile ``(kt, nt)`` row ``kk`` is scratchpad row ``b_addr +
    nt*b_nt_stride + kt*dim + kk`` and holds ``B[kt*dim+kk, nt*dim:(nt+1)*dim]``. With
    ``b_transpose`` the scratchpad holds B transposed, in the A layout (Q·Kᵀ reads K as stored):
    scratchpad row ``b_addr + kt*b_nt_stride + nt*dim + j`` holds column ``nt*dim + j`` of B tile
    ``(kt, nt)``, ``B[kt*dim:(kt+1)*dim, nt*dim + j]`` (``b_nt_stride`` then steps k-tiles). C tile
    ``nt`` row ``i`` is accumulator row ``c_addr + nt*c_nt_stride + i``. With ``accumulate`` clear
    the first k-tile overwrites C; with it set every k-tile adds (K-tiling across commands). Edges
    are zero padded by the DMA loads. Batch item ``h`` is the same GEMM with ``a_addr``,
    ``b_addr`` and ``c_addr`` moved by ``h`` times ``a_batch_stride``, ``b_batch_stride`` and
    ``c_batch_stride``.
    """
    a_addr: 20
    b_addr: 20
    c_addr: 20
    m: 16
    k_tiles: 12
    n_tiles: 12
    a_kt_stride: 20
    b_nt_stride: 20
    c_nt_stride: 20
    accumulate: 1
    b_transpose: 1        #: the scratchpad holds B transposed (B's columns as rows, the A layout)
    batches_m1: 8         #: batch items - 1 (0: one GEMM)
    a_batch_stride: 16    #: scratchpad rows between the A operands of consecutive batch items
    b_batch_stride: 16    #: scratchpad rows between the B operands of consecutive batch items
    c_batch_stride: 16    #: accumulator rows between the C results of consecutive batch items
    reserved: 6


class VecOps(data.Struct):
    """Which epilogue stages a VECTOR command runs (requantization always runs)."""
    bias: 1       #: add the per-channel int32 bias row (wrapping int32 add)
    relu: 1       #: clamp the int8 result below at the zero point
    add: 1        #: saturating int8 add of the residual scratchpad rows
    maxred: 1     #: reduce all rows to one row by elementwise max
    reserved: 4


class VecCmd(data.Struct):
    """VECTOR payload: ``rows`` accumulator rows from ``src_addr`` -> int8 scratchpad rows at ``dst_addr``.

    Per-channel parameters are accumulator rows: ``bias_addr`` (int32 bias), ``mult_addr`` (int32
    multiplier) and ``shift_addr`` (right shift 0..63). ``res_addr`` is the first residual scratchpad
    row when ``ops.add`` is set. See docs/numerics.md for the exact arithmetic.
    """
    src_addr: 20
    dst_addr: 20
    rows: 16
    bias_addr: 20
    mult_addr: 20
    shift_addr: 20
    res_addr: 20
    zero_point: 8     #: output zero point, two's complement int8
    ops: VecOps
    reserved: 4


class SoftmaxCmd(data.Struct):
    """SOFTMAX payload: ``rows`` logical rows of ``length`` int8 logits -> int8 probabilities
    (scale 1/127, docs/numerics.md "Softmax").

    Element ``j`` of row ``r`` is lane ``j % dim`` of scratchpad row ``src_addr + (j // dim) *
    seg_stride + r`` (a row is ``ceil(length / dim)`` segments stored like a GEMM A operand); the
    result goes to the same place under ``dst_addr``, lanes past ``length`` written as 0. With
    ``causal`` element ``j`` of row ``r`` takes part only when ``j <= r + mask_offset`` (others
    are written as 0). ``dst`` may equal ``src`` (in place).
    """
    src_addr: 20
    dst_addr: 20
    rows: 16              #: logical rows, >= 1
    length: 16            #: elements per row, >= 1
    seg_stride: 20        #: scratchpad rows between a row's segments
    mult: 16              #: round(input scale * log2(e) * 2^16)
    causal: 1
    mask_offset: 16       #: position of the first row (causal mask)
    reserved: 99


class NormCmd(data.Struct):
    """LAYERNORM / RMSNORM payload: ``rows`` logical rows of ``length`` (<= 4096) int8 channels,
    normalized, scaled by per-channel ``gamma`` (int32 lanes of accumulator rows ``gamma_addr +
    j // dim``) and, for LayerNorm, shifted by ``beta`` (``beta_addr + j // dim``); requantized
    with ``shift`` and ``out_zero_point`` (docs/numerics.md "LayerNorm and RMSNorm"). Rows are
    laid out as for SOFTMAX.
    """
    src_addr: 20
    dst_addr: 20
    rows: 16
    length: 16            #: channels, 1..4096
    seg_stride: 20
    gamma_addr: 20        #: first accumulator row of gamma
    beta_addr: 20         #: first accumulator row of beta (LAYERNORM only)
    shift: 6
    in_zero_point: 8      #: two's complement int8
    out_zero_point: 8     #: two's complement int8
    eps_mant: 16          #: epsilon = eps_mant * 2^eps_exp, in steps^2 with 32 fraction bits
    eps_exp: 6
    reserved: 48


class LutCmd(data.Struct):
    """LUT payload: ``y = table[x + 128]`` on ``rows`` logical rows of ``length`` int8 elements
    (laid out as for SOFTMAX). The table is 256 int8 entries in the ``256 / dim`` scratchpad rows
    from ``table_addr`` (entry ``k`` in lane ``k % dim`` of row ``table_addr + k // dim``), read
    at the start of the command."""
    src_addr: 20
    dst_addr: 20
    rows: 16
    length: 16
    seg_stride: 20
    table_addr: 20
    reserved: 112


class EmulCmd(data.Struct):
    """EMUL payload: the elementwise product of two int8 tensors of the same layout (as for
    SOFTMAX, operands at ``a_addr`` and ``b_addr``), requantized: ``y = clamp(round_half_up((a -
    a_zero_point) * (b - b_zero_point) * mult, shift) + out_zero_point)``."""
    a_addr: 20
    b_addr: 20
    dst_addr: 20
    rows: 16
    length: 16
    seg_stride: 20
    mult: 16
    shift: 6
    a_zero_point: 8
    b_zero_point: 8
    out_zero_point: 8
    reserved: 66


class EventCmd(data.Struct):
    """SIGNAL_EVENT / WAIT_EVENT payload: a 32-bit timeline semaphore.

    SIGNAL_EVENT waits until every earlier command of its queue has completed, then sets event
    counter ``event`` to ``value``. WAIT_EVENT holds back every later command of its queue until
    the counter has reached ``value``, compared wrap-safe: reached when ``(int32)(counter -
    value) >= 0``, so a timeline may wrap as long as waiters stay within 2**31 of the counter.
    """
    event: 8            #: event counter index (< CAP_QUEUES.EVENTS)
    reserved0: 24
    value: 32           #: SIGNAL: the new counter value; WAIT: the value to reach
    reserved: 160


class PeerCmd(data.Struct):
    """DMA_PEER payload: send ``rows`` rows of a local memory over the chip-to-chip link to the
    next chip of the ring (docs/cluster_hw.md).

    Local rows ``local_addr .. local_addr + rows - 1`` of the scratchpad (or the accumulator with
    ``acc``) are written, in order, to rows ``peer_addr ..`` of the same memory of chip ``dest``
    (the chip at the other end of this chip's link: the receiver refuses any other index), or
    with ``add`` (accumulator only) added into them, lane by lane, wrapping int32 (the receiver
    reads, adds and writes each row: a ring all-reduce's reduce step). With
    ``signal`` the peer's event counter ``event`` is set to ``value`` after its last row is
    written (a WAIT_EVENT on the peer orders its work after the data, as SIGNAL_EVENT does for
    local work). The command completes when its last beat has entered the link; it fails with
    LINK_TIMEOUT when the link failed before or during it (the rows then went nowhere). Every
    chip of a cluster has the same memories, so both row ranges are checked here (LOCAL_RANGE).
    """
    local_addr: 20      #: first local row read
    peer_addr: 20       #: first row written in the peer's memory
    rows: 16            #: rows, >= 1 (one link packet)
    acc: 1              #: both memories are the accumulator (else the scratchpad)
    add: 1              #: add the rows into the peer's accumulator rows (wrapping int32; needs ``acc``)
    signal: 1           #: set the peer's event counter ``event`` to ``value`` after the last row
    dest: 4             #: the peer's chip index (its CHIP_ID strap)
    reserved0: 1
    event: 8            #: the peer's event counter (< CAP_QUEUES.EVENTS), with ``signal``
    value: 32           #: the value it is set to, with ``signal``
    reserved: 120


class ListCmd(data.Struct):
    """EXEC_LIST payload: run the command list at ``list_addr`` as if its entries were queued here.

    The queue controller loads the ``args`` 32-bit words of the argument table, then fetches the
    ``entries`` entries one after the other, applies each entry's patches and hands the patched
    descriptors to the issue unit in list order, in place of this descriptor. A list entry is a
    32-byte descriptor whose ``flags`` byte holds :class:`ListEntryFlags`; an entry with
    ``patches`` > 0 is followed by a 32-byte block of :class:`PatchWord` (the first ``patches``
    words are used). Entries complete silently; this descriptor's completion record follows
    the last of them (docs/queues.md "Command lists").

    A **looped** list (``loops_m1`` > 0, the device-side tile loop of Gemmini's ``LOOP_WS``) runs
    its entries ``loops_m1 + 1`` times; its argument table is followed (at the next 32-byte
    boundary) by ``args`` **stride** words, and after each pass every argument ``+=`` its stride
    (mod 2**32), so a patched field walks ``base + pass × stride``.
    """
    list_addr: 32       #: host byte address of the first entry (32-byte aligned)
    entries: 16         #: number of entries, 1..65535
    args_addr: 32       #: host byte address of the argument table (32-byte aligned)
    args: 6             #: argument words, 0..LIST_ARGS
    loops_m1: 16        #: passes over the entries - 1 (0: run them once)
    reserved: 122


class ListEntryFlags(data.Struct):
    """The flags byte of a command-list entry (its descriptor is pushed with ``patches`` 0)."""
    irq: 1              #: as DescFlags.irq (a failing entry's record carries it)
    patches: 3          #: patch words in the 32-byte block that follows the entry, 0..LIST_PATCHES
    reserved: 4


class PatchWord(data.Struct):
    """One patch of a command-list entry: field bits ``[pos, pos + width)`` of the descriptor
    ``+=`` argument ``arg`` (zero-extended, the sum taken mod 2**width: carries leave the field).

    Legal when ``pos >= 32`` (opcode, flags and tag are not patched), ``pos + width <= 256``,
    ``pos % 32 + width <= 64`` and ``arg`` < the list's ``args``; anything else is BAD_LIST.
    """
    pos: 8              #: lowest bit of the field in the 256-bit descriptor
    width_m1: 6         #: field width - 1
    reserved0: 2
    arg: 5              #: argument table index
    reserved: 11


#: Argument words an EXEC_LIST may load, and patch words a list entry may carry.
LIST_ARGS = 32
LIST_PATCHES = 7


class Payload(data.Union):
    raw: PAYLOAD_BITS
    dma: DmaCmd
    gemm: GemmCmd
    vec: VecCmd
    event: EventCmd
    softmax: SoftmaxCmd
    norm: NormCmd
    lut: LutCmd
    emul: EmulCmd
    exec_list: ListCmd
    peer: PeerCmd


class Engine(enum.Enum, shape=3):
    """The units that execute commands behind the dispatcher, each with its own command FIFO.

    An engine's value is its index everywhere one is needed: the dispatcher's FIFOs, the
    firmware's RETIRE registers, the ``IRQ_STATUS``/``DONE_*``/``PERF_*`` registers named after
    it (kaki_regs.rdl keeps those names in step; ``tests/test_commands.py`` checks it).
    """
    DMA_LOAD = 0    #: the DMA engine's load channel (host memory -> on-chip memory)
    DMA_STORE = 1   #: the DMA engine's store channel (on-chip memory -> host memory)
    GEMM = 2        #: the GEMM sequencer and the PE array
    VEC = 3         #: the vector unit (quantized epilogue)
    SFU = 4         #: the special-function unit (softmax, norms, lookup tables, multiply)


@dataclass(frozen=True)
class Command:
    """One row of :data:`COMMANDS`: an opcode, who serves it, its payload and what it does.

    ``engine`` is None for commands the control core's firmware serves itself (ordering and
    events); ``payload`` names the :class:`Payload` member that holds its fields, or None.
    """
    name: str
    opcode: int
    engine: "Engine | None"
    payload: "str | None"
    doc: str


#: The command set: the single source of opcodes, the engine serving each, and payloads. Python,
#: C and docs/descriptors.md are generated from it (``make rtl``); the dispatcher routes by it.
COMMANDS = (
    Command("NOP", 0, None, None, "does nothing; retires in queue order"),
    Command("DMA_LOAD", 1, Engine.DMA_LOAD, "dma", "host memory -> scratchpad/accumulator"),
    Command("DMA_STORE", 2, Engine.DMA_STORE, "dma", "scratchpad/accumulator -> host memory"),
    Command("GEMM", 3, Engine.GEMM, "gemm", "PE array: acc (+)= A x B"),
    Command("VECTOR", 4, Engine.VEC, "vec", "vector unit epilogue: acc rows -> int8 scratchpad rows"),
    Command("SIGNAL_EVENT", 5, None, "event",
            "after every earlier command of the queue completed: event := value"),
    Command("WAIT_EVENT", 6, None, "event",
            "later commands of the queue wait until event >= value (wrap-safe)"),
    Command("BARRIER", 7, None, None,
            "later commands of the queue wait until every earlier one completed"),
    Command("SOFTMAX", 8, Engine.SFU, "softmax",
            "row softmax of int8 logits (optional causal mask) -> int8 probabilities"),
    Command("LAYERNORM", 9, Engine.SFU, "norm", "LayerNorm of int8 rows with gamma, beta -> int8"),
    Command("RMSNORM", 10, Engine.SFU, "norm", "RMSNorm of int8 rows with gamma -> int8"),
    Command("LUT", 11, Engine.SFU, "lut", "int8 -> int8 table lookup (GELU, SiLU, ...)"),
    Command("EMUL", 12, Engine.SFU, "emul", "elementwise int8 x int8 product, requantized"),
    Command("EXEC_LIST", 13, None, "exec_list",
            "run a command list from host memory, patched from an argument table; completes after its entries"),
    Command("DMA_PEER", 14, Engine.DMA_STORE, "peer",
            "scratchpad/accumulator rows -> the next chip's memory over the link, written or added (+ its event)"),
)


def make_opcode_enum(commands=COMMANDS):
    """The ``Opcode`` enum (8-bit shape) of a command table."""
    def body(ns):
        ns["__doc__"] = "What a descriptor asks for (the rows of :data:`COMMANDS`)."
        for c in commands:
            ns[c.name] = c.opcode
    return types.new_class("Opcode", (enum.Enum,), {"shape": 8}, body)


Opcode = make_opcode_enum()


def check_commands(commands=COMMANDS):
    """Reject a malformed command table: duplicate names or values, unknown payloads."""
    names = [c.name for c in commands]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ValueError(f"COMMANDS: duplicate name {dup}")
    by_value = {}
    for c in commands:
        if c.opcode in by_value:
            raise ValueError(f"COMMANDS: duplicate opcode {c.opcode} ({by_value[c.opcode]} and {c.name})")
        by_value[c.opcode] = c.name
    members = {name for name, _ in data.Layout.cast(Payload)} - {"raw"}
    for c in commands:
        if not 0 <= c.opcode < 256:
            raise ValueError(f"COMMANDS: {c.name} opcode {c.opcode} does not fit in 8 bits")
        if c.payload is not None and c.payload not in members:
            raise ValueError(f"COMMANDS: {c.name} payload {c.payload!r} is not one of {sorted(members)}")
        if c.engine is not None and not isinstance(c.engine, Engine):
            raise ValueError(f"COMMANDS: {c.name} engine {c.engine!r} is not an Engine")


def engine_opcodes(engine, commands=COMMANDS):
    """Opcode values the ``engine`` serves."""
    return tuple(c.opcode for c in commands if c.engine == engine)


class Descriptor(data.Struct):
    """One 256-bit command descriptor."""
    opcode: Opcode
    flags: DescFlags
    tag: 16            #: software tag, echoed in completion records
    payload: Payload


class CompletionRecord(data.Struct):
    """What the device writes to host memory when a queued command retires (16 bytes).

    Records are written in the queue's order: the record of descriptor ``index`` goes to
    ``Q_CPL_BASE + 16 + 16 * (index mod ring entries)`` and is followed by the consumer index
    write-back at ``Q_CPL_BASE`` (see docs/queues.md).
    """
    index: 32           #: descriptor index in the queue (free-running, not wrapped)
    opcode: 8           #: the descriptor's opcode
    status: 8           #: ErrorCode, 0 = success
    queue: 8            #: the queue the descriptor came from
    flags: 8            #: the descriptor's flags byte
    tag: 16             #: the descriptor's tag
    item: 16            #: EXEC_LIST: 1 + the run position (pass × entries + entry, mod 2**16) of the first item that failed (0: none)
    timestamp: 32       #: PERF-independent cycle counter when the record was queued for writing


RECORD_BITS = 128
assert data.Layout.cast(CompletionRecord).size == RECORD_BITS


for _layout in (DmaCmd, GemmCmd, VecCmd, EventCmd, ListCmd):
    assert data.Layout.cast(_layout).size <= PAYLOAD_BITS, _layout
assert data.Layout.cast(ListEntryFlags).size == data.Layout.cast(DescFlags).size
assert data.Layout.cast(PatchWord).size == 32
assert data.Layout.cast(Descriptor).size == DESCRIPTOR_BITS
check_commands()
