/* Engines: the in-order list of commands forwarded to each engine, their retirement and the
 * watchdog (docs/queues.md "Firmware service loop", steps 1 and 5).
 *
 * An engine runs its commands in the order they were forwarded and retires them in that order,
 * so the oldest forwarded command is always the one a RETIRE entry (or a watchdog reset) ends.
 * The list holds only tags: a tag names the queue and the pending slot of its descriptor. */
#include "kaki_fw.h"

struct engine {
    uint32_t first;     /* slot of the oldest forwarded command */
    uint32_t count;     /* forwarded, not retired */
    uint32_t since;     /* mcycle of the last retirement, or of becoming busy */
    uint32_t tag[KAKI_ENGINE_FIFO_DEPTH];
};
_Static_assert((KAKI_ENGINE_FIFO_DEPTH & (KAKI_ENGINE_FIFO_DEPTH - 1)) == 0, "slots wrap with a mask");

static struct engine eng[KAKI_ENGINES];
static uint32_t busy;          /* bit e: engine e holds forwarded commands */
static uint32_t next_check;    /* mcycle of the next watchdog check */

void engines_init(void)
{
    for (unsigned e = 0; e < KAKI_ENGINES; e++)
        eng[e].first = eng[e].count = 0;
    busy = 0;
}

int engine_has_room(unsigned e) { return eng[e].count < KAKI_ENGINE_FIFO_DEPTH; }

int engines_busy(void) { return busy != 0; }

int32_t engines_until_check(void) { return (int32_t)(next_check - read_mcycle()); }

void engine_forwarded(unsigned e, uint32_t tag)
{
    struct engine *en = &eng[e];
    en->tag[(en->first + en->count) & (KAKI_ENGINE_FIFO_DEPTH - 1)] = tag;
    /* The watchdog measures from when the engine became busy, not from an old retirement. */
    if (en->count++ == 0) {
        en->since = read_mcycle();
        busy |= 1u << e;
    }
}

/* The oldest forwarded command of engine e is finished with `status`. */
static void engine_pop(unsigned e, uint32_t status)
{
    struct engine *en = &eng[e];
    queue_done(en->tag[en->first], status);
    en->first = (en->first + 1) & (KAKI_ENGINE_FIFO_DEPTH - 1);
    if (--en->count == 0)
        busy &= ~(1u << e);
    en->since = read_mcycle();
}

/* Pop every entry of engine e's retire FIFO; returns how many. */
static int retire_drain(unsigned e)
{
    int n = 0;
    for (;;) {
        uint32_t r = MMIO->RETIRE[e];
        if (!FIELD_GET(RETIRE, VALID, r))
            return n;
        MMIO->RETIRE_POP = FIELD_PUT(RETIRE_POP, ENGINE, 1u << e);
        struct engine *en = &eng[e];
        /* A retirement the firmware cannot match means its view of the engine is wrong; going on
         * would complete the wrong descriptors, so stop and report. */
        if (!en->count)
            fw_panic(PANIC_RETIRE_EMPTY, r);
        if (en->tag[en->first] != FIELD_GET(RETIRE, TAG, r))
            fw_panic(PANIC_RETIRE_TAG, r);
        engine_pop(e, FIELD_GET(RETIRE, ERROR, r));
        n++;
    }
}

int engines_retire(uint32_t work)
{
    uint32_t ready = FIELD_GET(WORK, RETIRE, work);
    int n = 0;
    for (unsigned e = 0; ready; e++, ready >>= 1)
        if (ready & 1)
            n += retire_drain(e);
    return n;
}

/* Reset engine e alone (each DMA channel is an engine of its own: the other channel's command
 * runs on) and fail the command it held. */
static void watchdog_reset(unsigned e)
{
    MMIO->ENGINE_RESET = FIELD_PUT(ENGINE_RESET, ENGINE, 1u << e);
    /* Retirements that made it into the FIFO before the reset belong to the oldest commands;
     * after them, the oldest command left is the one the reset forgot (the engine starts the
     * next command of its FIFO as soon as it retires one, so it is never idle with work). */
    retire_drain(e);
    if (eng[e].count)
        engine_pop(e, KAKI_ERR_WATCHDOG);
}

int engines_watchdog(void)
{
    if (!busy)
        return 0;
    /* Checking every pass would cost more than the dispatch itself; checking every 1/16 of the
     * limit finds a hung engine between WATCHDOG.CYCLES and 17/16 of it. */
    uint32_t now = read_mcycle();
    if ((int32_t)(now - next_check) < 0)
        return 0;
    uint32_t limit = FIELD_GET(WATCHDOG, CYCLES, MMIO->WATCHDOG);
    next_check = now + (limit >> 4) + 1;
    int n = 0;
    for (unsigned e = 0; e < KAKI_ENGINES; e++) {
        /* Unsigned difference: correct across the wrap of the low mcycle word. */
        if (eng[e].count && now - eng[e].since >= limit) {
            watchdog_reset(e);
            n++;
        }
    }
    return n;
}
