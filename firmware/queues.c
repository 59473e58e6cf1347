/* Queues: the descriptors the firmware popped, their completion requests, queue resets and the
 * dispatch decisions (docs/queues.md "Firmware service loop", steps 2 to 4).
 *
 * Per queue, `pending` holds the descriptors with index in [cpl, head): popped (handled by the
 * firmware or forwarded to an engine) but without a completion request yet. Records must be
 * written in queue order, so completion walks this window from `cpl` and stops at the first
 * descriptor that is not done. */
#include "kaki_fw.h"

struct pending {
    uint32_t w0;        /* descriptor word 0: opcode, flags, tag (all the record needs) */
    uint8_t status;     /* ErrorCode once done */
    uint8_t done;
};

struct queue {
    uint32_t head;      /* index of the next descriptor to pop (the hardware's Q_HEAD_INDEX) */
    uint32_t cpl;       /* index of the oldest descriptor without a completion request */
    uint8_t failed;     /* a descriptor failed: dispatch nothing more until the queue is reset */
    /* A head the queue blocked on is looked at again every pass; it cannot change until we pop
     * it (or the queue is reset), so its decoded words are kept instead of read again. */
    uint8_t cached;
    uint8_t cached_status;
    uint32_t cached_w0, cached_event, cached_value;
    struct pending p[KAKI_PENDING];
};

static struct queue qs[KAKI_QUEUES];
static uint32_t events[KAKI_EVENTS];   /* the firmware is EVENT's only writer: a shadow saves reads */
static uint32_t q_wait;                /* shadow of Q_WAIT */
static uint32_t cpl_ready;             /* bit q: queue q may have a done descriptor to complete */

/* The commands the command table gives the firmware to serve, which this firmware implements in
 * dispatch_head(). A table entry without a case here is refused as BAD_OPCODE, never run as NOP. */
static int firmware_serves(uint32_t op)
{
    switch (op) {
    case KAKI_OP_NOP:
    case KAKI_OP_BARRIER:
    case KAKI_OP_SIGNAL_EVENT:
    case KAKI_OP_WAIT_EVENT:
        return 1;
    default:
        return 0;
    }
}

_Static_assert(DESC_WORD(DESCRIPTOR_OPCODE) == 0 && DESC_WORD(DESCRIPTOR_FLAGS_IRQ) == 0 &&
               DESC_WORD(DESCRIPTOR_FLAGS_RESERVED) == 0 && DESC_WORD(DESCRIPTOR_TAG) == 0 &&
               DESC_IN_ONE_WORD(DESCRIPTOR_TAG), "opcode, flags and tag are in word 0");
_Static_assert(DESC_IN_ONE_WORD(EVENT_EVENT) && DESC_IN_ONE_WORD(EVENT_RESERVED0) &&
               DESC_WORD(EVENT_EVENT) == DESC_WORD(EVENT_RESERVED0) && DESC_IN_ONE_WORD(EVENT_VALUE),
               "event index, its reserved bits and the value are read one word each");
_Static_assert(KAKI_EVENT_RESERVED_LSB % 32 == 0 && KAKI_EVENT_RESERVED_LSB + KAKI_EVENT_RESERVED_W ==
               KAKI_DESC_BITS, "the event payload's reserved tail is whole words to the end");

void queues_init(void)
{
    /* A reloaded firmware meets queues whose indices did not restart at 0; with nothing in flight
     * (the host reloads an idle chip) the head index is also the consumer index. */
    for (unsigned q = 0; q < KAKI_QUEUES; q++) {
        qs[q].head = qs[q].cpl = FIELD_GET(Q_HEAD_INDEX, INDEX, MMIO->Q_HEAD_INDEX[q]);
        qs[q].failed = qs[q].cached = 0;
    }
    for (unsigned e = 0; e < KAKI_EVENTS; e++)
        events[e] = MMIO->EVENT[e];
    q_wait = cpl_ready = 0;
}

static void set_wait(unsigned q, int on)
{
    uint32_t w = on ? q_wait | 1u << q : q_wait & ~(1u << q);
    if (w != q_wait) {
        q_wait = w;
        MMIO->Q_WAIT = FIELD_PUT(Q_WAIT, QUEUE, w);
    }
}

void queue_done(uint32_t tag, uint32_t status)
{
    unsigned q = tag >> TAG_QUEUE_SHIFT;
    struct queue *Q = &qs[q];
    struct pending *p = &Q->p[tag & (KAKI_PENDING - 1)];
    p->status = (uint8_t)status;
    p->done = 1;
    cpl_ready |= 1u << q;
    if (status != KAKI_ERR_OK)
        Q->failed = 1;
}

int queues_complete(int *stalled)
{
    uint32_t free = 0;   /* CPL_STATUS.FREE, read when needed; it only grows behind our back */
    int n = 0;
    for (unsigned q = 0; cpl_ready >> q; q++) {
        if (!(cpl_ready >> q & 1))
            continue;
        struct queue *Q = &qs[q];
        for (;;) {
            struct pending *p = &Q->p[Q->cpl & (KAKI_PENDING - 1)];
            if (Q->cpl == Q->head || !p->done) {
                cpl_ready &= ~(1u << q);    /* the next completion of this queue sets it again */
                break;
            }
            if (!free) {
                free = FIELD_GET(CPL_STATUS, FREE, MMIO->CPL_STATUS);
                if (!free) {
                    *stalled = 1;
                    return n;
                }
            }
            free--;
            uint32_t w0 = p->w0, st = p->status;
            MMIO->CPL_TAG = FIELD_PUT(CPL_TAG, TAG, DESC_GET(DESCRIPTOR_TAG, w0));
            MMIO->CPL = FIELD_PUT(CPL, QUEUE, q) | FIELD_PUT(CPL, IRQ, DESC_GET(DESCRIPTOR_FLAGS_IRQ, w0)) |
                        FIELD_PUT(CPL, HALT, st != KAKI_ERR_OK) | FIELD_PUT(CPL, FLAGS, DESC_FLAGS(w0)) |
                        FIELD_PUT(CPL, STATUS, st) | FIELD_PUT(CPL, OPCODE, DESC_GET(DESCRIPTOR_OPCODE, w0));
            p->done = 0;
            Q->cpl++;
            n++;
        }
    }
    return n;
}

int queues_reset(uint32_t work)
{
    uint32_t req = FIELD_GET(WORK, QRESET, work);
    int n = 0;
    for (unsigned q = 0; req; q++, req >>= 1) {
        struct queue *Q = &qs[q];
        /* Acknowledge only once every popped descriptor has its record requested: the hardware
         * then zeroes the indices, and so do we. Forwarded commands still retire meanwhile. */
        if (!(req & 1) || Q->cpl != Q->head)
            continue;
        Q->head = Q->cpl = 0;
        Q->failed = Q->cached = 0;
        set_wait(q, 0);
        MMIO->QRESET_ACK = FIELD_PUT(QRESET_ACK, QUEUE, 1u << q);
        n++;
    }
    return n;
}

/* Validate the head's event payload: OK (with the event and value), RESERVED_BITS or BAD_EVENT. */
static uint32_t event_fields(unsigned q, uint32_t *event, uint32_t *value)
{
    unsigned base = q * KAKI_DESC_WORDS;
    uint32_t w = MMIO->Q_HEAD[base + DESC_WORD(EVENT_EVENT)];
    if (DESC_GET(EVENT_RESERVED0, w))
        return KAKI_ERR_RESERVED_BITS;
    for (unsigned i = DESC_WORD(EVENT_RESERVED); i < KAKI_DESC_WORDS; i++)
        if (MMIO->Q_HEAD[base + i])
            return KAKI_ERR_RESERVED_BITS;
    *event = DESC_GET(EVENT_EVENT, w);
    if (*event >= KAKI_EVENTS)
        return KAKI_ERR_BAD_EVENT;
    *value = MMIO->Q_HEAD[base + DESC_WORD(EVENT_VALUE)];
    return KAKI_ERR_OK;
}

/* Read and check the head of queue q: its word 0, and for events the event and value; returns
 * the status the firmware decides (OK: forward it or run it). Check order: opcode, flag bits,
 * then the payload (reserved bits before the event index, as engines check reserved bits first). */
static uint32_t read_head(unsigned q, struct queue *Q)
{
    uint32_t w0 = MMIO->Q_HEAD[q * KAKI_DESC_WORDS];
    uint32_t op = DESC_GET(DESCRIPTOR_OPCODE, w0);
    uint32_t status = KAKI_ERR_OK;
    Q->cached_w0 = w0;
    int engine = kaki_op_engine(op);
    if (engine == KAKI_ENGINE_UNKNOWN || (engine == KAKI_ENGINE_FIRMWARE && !firmware_serves(op)))
        status = KAKI_ERR_BAD_OPCODE;
    else if (DESC_GET(DESCRIPTOR_FLAGS_RESERVED, w0))
        status = KAKI_ERR_RESERVED_BITS;
    else if (op == KAKI_OP_SIGNAL_EVENT || op == KAKI_OP_WAIT_EVENT)
        status = event_fields(q, &Q->cached_event, &Q->cached_value);
    return status;
}

/* Act on the head of queue q: 1 if it was popped or forwarded, 0 if the queue blocks. */
static int dispatch_head(unsigned q, struct queue *Q)
{
    uint32_t status;
    if (Q->cached) {
        status = Q->cached_status;
    } else {
        /* Act only on the head we expect: until a pop takes effect the hardware may still offer
         * the popped head, which must not be dispatched twice. */
        if (FIELD_GET(Q_HEAD_INDEX, INDEX, MMIO->Q_HEAD_INDEX[q]) != Q->head)
            return 0;
        status = read_head(q, Q);
    }
    uint32_t w0 = Q->cached_w0, event = Q->cached_event, value = Q->cached_value;
    uint32_t op = DESC_GET(DESCRIPTOR_OPCODE, w0);
    struct pending *p = &Q->p[Q->head & (KAKI_PENDING - 1)];

    int engine = kaki_op_engine(op);
    if (status == KAKI_ERR_OK && engine >= 0) {
        unsigned e = (unsigned)engine;
        /* The engine checks the payload itself; forwarding more than its FIFO holds would
         * overflow it, so the queue waits for a retirement instead. */
        if (!engine_has_room(e))
            goto blocked;
        uint32_t tag = q << TAG_QUEUE_SHIFT | (Q->head & TAG_INDEX_MASK);
        p->w0 = w0;
        p->done = 0;
        MMIO->FORWARD = FIELD_PUT(FORWARD, QUEUE, q) | FIELD_PUT(FORWARD, TAG, tag);
        engine_forwarded(e, tag);
        Q->head++;
        Q->cached = 0;
        return 1;
    }
    if (status == KAKI_ERR_OK) {
        switch (op) {
        case KAKI_OP_BARRIER:
            /* "Every earlier descriptor done" is taken as "every earlier record requested", so a
             * record's timestamp orders it before everything the barrier releases. */
            if (Q->cpl != Q->head)
                goto blocked;
            break;
        case KAKI_OP_SIGNAL_EVENT:
            if (Q->cpl != Q->head)
                goto blocked;
            events[event] = value;
            MMIO->EVENT[event] = FIELD_PUT(EVENT, VALUE, value);
            break;
        case KAKI_OP_WAIT_EVENT:
            /* Wrap-safe "reached": the timeline may wrap as long as waiters stay within 2**31. */
            if ((int32_t)(events[event] - value) < 0) {
                set_wait(q, 1);
                goto blocked;
            }
            set_wait(q, 0);
            break;
        default:   /* NOP (firmware_serves() admitted nothing else) */
            break;
        }
    }
    MMIO->Q_POP = FIELD_PUT(Q_POP, QUEUE, 1u << q);
    p->w0 = w0;
    p->status = (uint8_t)status;
    p->done = 1;
    cpl_ready |= 1u << q;
    if (status != KAKI_ERR_OK) {
        /* The record halts the queue when it is written; nothing after it may run. */
        Q->failed = 1;
        set_wait(q, 0);
    }
    Q->head++;
    Q->cached = 0;
    return 1;

blocked:
    Q->cached = 1;
    Q->cached_status = (uint8_t)status;
    return 0;
}

int queues_dispatch(uint32_t work, uint32_t *blocked)
{
    int n = 0;
    for (unsigned q = 0; FIELD_GET(WORK, QREADY, work) >> q; q++) {
        struct queue *Q = &qs[q];
        uint32_t ready = FIELD_PUT(WORK, QREADY, 1u << q);
        while (work & ready) {
            if (Q->failed || Q->head - Q->cpl >= KAKI_PENDING)
                break;
            if (!dispatch_head(q, Q))
                break;
            n++;
            work = MMIO->WORK;
        }
        /* A queue left with a head is blocked (failed, barrier, event, full engine or window):
         * only a retirement or the firmware itself can unblock it, so its head must not keep
         * waking the core. */
        if (work & ready)
            *blocked |= 1u << q;
    }
    return n;
}
