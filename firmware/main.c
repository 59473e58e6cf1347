/* Kaki control-core firmware: boot, report version and readiness, enable the issue unit, then
 * keep the policy the hardware leaves to it (docs/queues.md "Firmware"): hung engines, queue
 * resets and the heads the issue unit does not serve (malformed descriptors).
 *
 * Engine commands, events and barriers never pass through here. Any unexpected trap, or an
 * inconsistency the firmware detects, is reported through FW_FAULT_* and FW_MSG (with the host
 * interrupt FW_MSG) instead of a silent hang, and stops the issue unit.
 */
#include "kaki_fw.h"

#ifndef KAKI_FW_VERSION
#error "KAKI_FW_VERSION is set by firmware/build.py from pyproject.toml"
#endif

static void __attribute__((noreturn)) fault(uint32_t pc, uint32_t cause, uint32_t tval)
{
    /* Nothing new is issued without the firmware's supervision; commands already issued
     * still retire and get their records. */
    MMIO->ISSUE = 0;
    MMIO->FW_FAULT_PC = pc;
    MMIO->FW_FAULT_CAUSE = cause;
    MMIO->FW_FAULT_TVAL = tval;
    MMIO->FW_STATUS = FW_FAULT;
    /* The host learns of the fault by interrupt (IRQ_STATUS.FW_MSG), not only by polling. */
    MMIO->FW_MSG = cause;
    MMIO->FW_MSG_SEND = FIELD_PUT(FW_MSG_SEND, GO, 1);
    /* Nothing may wake the core any more: only the host's reload restarts it. */
    __asm__ volatile("csrw mie, zero");
    for (;;)
        wfi();
}

void fw_panic(uint32_t cause, uint32_t tval)
{
    /* The call site: the instruction before the return address. */
    fault((uint32_t)(uintptr_t)__builtin_return_address(0) - 4, cause, tval);
}

uint32_t kaki_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval)
{
    /* mstatus.MIE stays 0, so the work interrupt only ends WFI and never traps; should one be
     * taken anyway, resuming is harmless. */
    if (mcause & MCAUSE_INTERRUPT)
        return mepc;
    fault(mepc, mcause, mtval);
}

static void __attribute__((noreturn)) serve(void)
{
    for (;;) {
        uint32_t work = MMIO->WORK;
        int progress = engines_watchdog(work);
        progress += queues_reset(work);
        progress += queues_serve(work);
        /* Each action above clears the WORK bit it served; sleep once a pass finds none. */
        if (!progress)
            wfi();
    }
}

int main(void)
{
    MMIO->FW_STATUS = FW_BOOTING;
    MMIO->FW_VERSION = KAKI_FW_VERSION;
    MMIO->FW_STATUS = FW_READY;
    MMIO->ISSUE = FIELD_PUT(ISSUE, ENABLE, 1);
    /* MEIE lets the work interrupt end WFI; mstatus.MIE stays 0 so it never traps. */
    __asm__ volatile("csrs mie, %0" ::"r"(MIE_MEIE));
    serve();
}
