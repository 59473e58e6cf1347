/* Kaki control-core firmware: boot, report version and readiness, then serve.
 *
 * The command-queue controller this firmware will serve is not in the chip yet; until it is,
 * the service loop sleeps in WFI and any unexpected trap is reported through FW_FAULT_* so the
 * host sees it instead of a silent hang.
 */
#include "kaki_fw.h"

#ifndef KAKI_FW_VERSION
#error "KAKI_FW_VERSION is set by firmware/build.py from pyproject.toml"
#endif

uint32_t kaki_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval)
{
    if (mcause & MCAUSE_INTERRUPT)
        return mepc;            /* no interrupt source is routed to the core yet */
    MMIO->FW_FAULT_PC = mepc;
    MMIO->FW_FAULT_CAUSE = mcause;
    MMIO->FW_FAULT_TVAL = mtval;
    MMIO->FW_STATUS = FW_FAULT;
    for (;;)
        wfi();
}

int main(void)
{
    MMIO->FW_STATUS = FW_BOOTING;
    MMIO->FW_VERSION = KAKI_FW_VERSION;
    MMIO->FW_STATUS = FW_READY;
    for (;;)
        wfi();
}
