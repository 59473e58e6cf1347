/* Kaki firmware: shared definitions. Register layouts come from the generated headers. */
#ifndef KAKI_FW_H
#define KAKI_FW_H
#include <stdint.h>
#include "kaki_mmio.h"

/* Base of the MMIO space in the control core's memory map (docs/control_core.md). */
#define KAKI_MMIO_BASE 0x20000000u
#define MMIO ((volatile kaki_mmio_t *)KAKI_MMIO_BASE)

/* FW_STATUS.STATE values (kaki_mmio.rdl). */
enum fw_state { FW_RESET = 0, FW_BOOTING = 1, FW_READY = 2, FW_FAULT = 3 };

#define MCAUSE_INTERRUPT 0x80000000u

static inline void wfi(void) { __asm__ volatile("wfi"); }

uint32_t kaki_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval);
#endif
