/* Test image, not the product firmware: checks that the firmware reads the chip's performance
 * counters through PERF_SEL/PERF_VALUE (cocotb_tests/cocotb_chip.py::firmware_reads_perf).
 *
 * It reads PERF_CYCLES around a delay loop (it must advance, by less than 100000), an address
 * that names no counter (must read 0) and PERF_DMA_LOAD_BYTES, which the host made nonzero
 * before releasing the core; one FW_MSG reports the bytes, or 0xBAD0000 | failed check.
 */
#include <stddef.h>
#include "kaki_fw.h"
#include "kaki_regs.h"

#define PERF(name) (offsetof(kaki_regs_t, name))

uint32_t kaki_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval)
{
    MMIO->FW_FAULT_PC = mepc;
    MMIO->FW_FAULT_CAUSE = mcause;
    MMIO->FW_FAULT_TVAL = mtval;
    MMIO->FW_STATUS = FW_FAULT;
    for (;;)
        wfi();
}

static uint32_t perf(uint32_t addr)
{
    MMIO->PERF_SEL = FIELD_PUT(PERF_SEL, ADDR, addr);
    return MMIO->PERF_VALUE;
}

static void send(uint32_t value)
{
    MMIO->FW_MSG = value;
    MMIO->FW_MSG_SEND = FIELD_PUT(FW_MSG_SEND, GO, 1);
}

int main(void)
{
    MMIO->FW_STATUS = FW_BOOTING;
    MMIO->FW_VERSION = KAKI_FW_VERSION;
    MMIO->FW_STATUS = FW_READY;
    uint32_t c0 = perf(PERF(PERF_CYCLES));
    for (volatile int i = 0; i < 100; i++)
        ;
    uint32_t c1 = perf(PERF(PERF_CYCLES));
    if (c1 - c0 == 0 || c1 - c0 > 100000)
        send(0xBAD0001);
    else if (perf(PERF(CMD_SUBMIT)) != 0)
        send(0xBAD0002);
    else
        send(perf(PERF(PERF_DMA_LOAD_BYTES)));
    for (;;)
        wfi();
}
