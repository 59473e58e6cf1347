/* Kaki control-core firmware: boot, report version and readiness, then serve the command queues
 * (docs/queues.md "Firmware service loop").
 *
 * The firmware is the only agent that decides order: it forwards engine commands, runs NOP,
 * BARRIER, SIGNAL_EVENT and WAIT_EVENT itself, retires in queue order and requests completion
 * records. Any unexpected trap, or an inconsistency it detects, is reported through FW_FAULT_*
 * and FW_MSG (with the host interrupt FW_MSG) instead of a silent hang.
 */
#include "kaki_fw.h"

#ifndef KAKI_FW_VERSION
#error "KAKI_FW_VERSION is set by firmware/build.py from pyproject.toml"
#endif

static void __attribute__((noreturn)) fault(uint32_t pc, uint32_t cause, uint32_t tval)
{
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
    /* WORK_MASK as last written (its reset value: no queue masked, the timer off). */
    uint32_t mask = FIELD_PUT(WORK_MASK, TIMER, 1);
    for (;;) {
        uint32_t work = MMIO->WORK;
        int stalled = 0;
        uint32_t blocked = 0;
        int progress = engines_retire(work);
        progress += queues_complete(&stalled);
        progress += queues_reset(work);
        progress += queues_dispatch(work, &blocked);
        progress += engines_watchdog();
        /* Sleep only when nothing can change without an interrupt. Records held back by a full
         * completion writer need polling (the writer frees slots without a WORK bit). */
        if (progress || stalled)
            continue;
        uint32_t want = FIELD_PUT(WORK_MASK, QREADY, blocked) | FIELD_PUT(WORK_MASK, TIMER, 1);
        if (engines_busy()) {
            /* A hung engine raises no WORK bit: wake for the next watchdog check at the latest. */
            int32_t left = engines_until_check();
            if (left <= 0)
                continue;
            MMIO->TIMER = FIELD_PUT(TIMER, CYCLES, FIELD_GET(TIMESTAMP, CYCLES, MMIO->TIMESTAMP) + (uint32_t)left);
            want &= ~FIELD_PUT(WORK_MASK, TIMER, 1);
        }
        if (want != mask) {
            mask = want;
            MMIO->WORK_MASK = mask;
        }
        wfi();
    }
}

int main(void)
{
    MMIO->FW_STATUS = FW_BOOTING;
    MMIO->FW_VERSION = KAKI_FW_VERSION;
    engines_init();
    queues_init();
    MMIO->FW_STATUS = FW_READY;
    /* MEIE lets the work interrupt end WFI; mstatus.MIE stays 0 so it never traps. */
    __asm__ volatile("csrs mie, %0" ::"r"(MIE_MEIE));
    serve();
}
