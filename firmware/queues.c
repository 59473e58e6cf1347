/* Queues: the heads the issue unit leaves to the firmware and queue resets (docs/queues.md
 * "Firmware", steps 2 and 3).
 *
 * The issue unit serves every well-formed head itself: the engine commands, and NOP, BARRIER and
 * the events (every command the table gives no engine; hdl_gen/issue_unit.py refuses to build a
 * table it does not implement), and the queue controller expands well-formed command lists. A head it leaves here is malformed: the firmware decides its
 * status and pops it into the issue unit's window with that status, which fails the queue when
 * its record is written. */
#include "kaki_fw.h"

_Static_assert(DESC_WORD(DESCRIPTOR_OPCODE) == 0 && DESC_WORD(DESCRIPTOR_FLAGS_IRQ) == 0 &&
               DESC_WORD(DESCRIPTOR_FLAGS_RESERVED) == 0, "opcode and flags are in word 0");
_Static_assert(DESC_IN_ONE_WORD(EVENT_EVENT) && DESC_IN_ONE_WORD(EVENT_RESERVED0) &&
               DESC_WORD(EVENT_EVENT) == DESC_WORD(EVENT_RESERVED0), "event index and its reserved bits share a word");
_Static_assert(KAKI_LIST_RESERVED_LSB + KAKI_LIST_RESERVED_W == KAKI_DESC_BITS,
               "the list payload's reserved bits run to the end");
_Static_assert(KAKI_EVENT_RESERVED_LSB % 32 == 0 && KAKI_EVENT_RESERVED_LSB + KAKI_EVENT_RESERVED_W ==
               KAKI_DESC_BITS, "the event payload's reserved tail is whole words to the end");

/* Status of an event payload: RESERVED_BITS, BAD_EVENT or OK (reserved bits checked first, as
 * the engines do). */
static uint32_t event_status(unsigned q)
{
    unsigned base = q * KAKI_DESC_WORDS;
    uint32_t w = MMIO->Q_HEAD[base + DESC_WORD(EVENT_EVENT)];
    if (DESC_GET(EVENT_RESERVED0, w))
        return KAKI_ERR_RESERVED_BITS;
    for (unsigned i = DESC_WORD(EVENT_RESERVED); i < KAKI_DESC_WORDS; i++)
        if (MMIO->Q_HEAD[base + i])
            return KAKI_ERR_RESERVED_BITS;
    return DESC_GET(EVENT_EVENT, w) >= KAKI_EVENTS ? KAKI_ERR_BAD_EVENT : KAKI_ERR_OK;
}

/* Bits [lsb, lsb + width) of queue q's head (width <= 32; the field may straddle two words). */
static uint32_t head_bits(unsigned q, unsigned lsb, unsigned width)
{
    unsigned word = q * KAKI_DESC_WORDS + lsb / 32, shift = lsb % 32;
    uint32_t v = MMIO->Q_HEAD[word] >> shift;
    if (shift && shift + width > 32)
        v |= MMIO->Q_HEAD[word + 1] << (32 - shift);
    return width >= 32 ? v : v & ((1u << width) - 1);
}
#define HEAD_FIELD(q, f) head_bits(q, KAKI_##f##_LSB, KAKI_##f##_W)

/* Status of an EXEC_LIST head: the queue controller expands every well-formed one itself
 * (docs/queues.md "Command lists"), so one here is malformed. Reserved bits first, then the
 * alignment of its two addresses, then its sizes. */
static uint32_t list_status(unsigned q)
{
    for (unsigned lsb = KAKI_LIST_RESERVED_LSB; lsb < KAKI_DESC_BITS; lsb += 32) {
        unsigned left = KAKI_DESC_BITS - lsb;
        if (head_bits(q, lsb, left < 32 ? left : 32))
            return KAKI_ERR_RESERVED_BITS;
    }
    if ((HEAD_FIELD(q, LIST_LIST_ADDR) | HEAD_FIELD(q, LIST_ARGS_ADDR)) % 32)
        return KAKI_ERR_MISALIGNED;
    if (HEAD_FIELD(q, LIST_ENTRIES) == 0 || HEAD_FIELD(q, LIST_ARGS) > KAKI_LIST_ARGS)
        return KAKI_ERR_BAD_SHAPE;
    return KAKI_ERR_OK;
}

/* The status of queue q's head. Check order: opcode, flag bits, then the payload. */
static uint32_t head_status(unsigned q)
{
    uint32_t w0 = MMIO->Q_HEAD[q * KAKI_DESC_WORDS];
    uint32_t op = DESC_GET(DESCRIPTOR_OPCODE, w0);
    if (kaki_op_engine(op) == KAKI_ENGINE_UNKNOWN)
        return KAKI_ERR_BAD_OPCODE;
    if (DESC_GET(DESCRIPTOR_FLAGS_RESERVED, w0))
        return KAKI_ERR_RESERVED_BITS;
    if (op == KAKI_OP_SIGNAL_EVENT || op == KAKI_OP_WAIT_EVENT)
        return event_status(q);
    if (op == KAKI_OP_EXEC_LIST) {
        uint32_t status = list_status(q);
        if (status != KAKI_ERR_OK)
            return status;
    }
    /* A well-formed head the issue unit left here: the hardware and this firmware disagree on
     * the command table, and completing it with any status would hide that. */
    fw_panic(PANIC_HEAD_SERVABLE, w0);
}

int queues_serve(uint32_t work)
{
    uint32_t ready = FIELD_GET(WORK, QREADY, work);
    int n = 0;
    for (unsigned q = 0; ready; q++, ready >>= 1) {
        if (!(ready & 1))
            continue;
        uint32_t status = head_status(q);
        MMIO->Q_POP = FIELD_PUT(Q_POP, QUEUE, 1u << q) | FIELD_PUT(Q_POP, STATUS, status);
        n++;
    }
    return n;
}

int queues_reset(uint32_t work)
{
    uint32_t req = FIELD_GET(WORK, QRESET, work);
    /* The firmware keeps no per-queue state: the hardware completes the reset once the issue
     * unit's window of the queue has drained. */
    if (req)
        MMIO->QRESET_ACK = FIELD_PUT(QRESET_ACK, QUEUE, req);
    return req != 0;
}
