/* Engines: the watchdog policy (docs/queues.md "Firmware", step 1).
 *
 * The hardware measures how long each engine has held a command without retiring one and raises
 * WORK.HUNG at WATCHDOG.CYCLES; the firmware decides to reset the engine. The reset retires the
 * command the engine was running with WATCHDOG (the issue unit completes it); the commands behind
 * it stay in the engine's FIFO and run. Each DMA channel is an engine of its own. */
#include "kaki_fw.h"

int engines_watchdog(uint32_t work)
{
    uint32_t hung = FIELD_GET(WORK, HUNG, work);
    if (hung)
        MMIO->ENGINE_RESET = FIELD_PUT(ENGINE_RESET, ENGINE, hung);
    return hung != 0;
}
