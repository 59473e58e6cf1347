/* Kaki firmware: shared definitions. Register layouts, the command table and the chip constants
 * come from the generated headers (kaki_mmio.h from hdl_gen/kaki_mmio.rdl, kaki_desc.h from
 * hdl_gen/descriptor.py, kaki_chip.h from hdl_gen/config.py); nothing here repeats an address, a
 * bit position, an opcode's engine or a FIFO depth by hand. The service loop follows docs/queues.md "Firmware". */
#ifndef KAKI_FW_H
#define KAKI_FW_H
#include <stddef.h>
#include <stdint.h>
#include "kaki_chip.h"
#include "kaki_desc.h"
#include "kaki_mmio.h"

/* Base of the MMIO space in the control core's memory map (docs/control_core.md). */
#define KAKI_MMIO_BASE 0x20000000u

/* The generated struct is __packed__ (alignment 1), which would let clang split a register
 * access into byte accesses, and the MMIO space only answers word accesses. Re-aligning the type
 * to 4 makes every member access a single lw/sw. */
typedef kaki_mmio_t __attribute__((aligned(4))) kaki_mmio_words_t;
#define MMIO ((volatile kaki_mmio_words_t *)KAKI_MMIO_BASE)

/* Counts taken from the register arrays of the generated struct, so they follow the RDL. */
#define KAKI_COUNT(member) (sizeof(((kaki_mmio_t *)0)->member) / sizeof(uint32_t))
#define KAKI_QUEUES KAKI_COUNT(Q_HEAD_INDEX)
#define KAKI_EVENTS KAKI_COUNT(EVENT)
#define KAKI_HEAD_WORDS (KAKI_COUNT(Q_HEAD) / KAKI_QUEUES)
_Static_assert(KAKI_HEAD_WORDS == KAKI_DESC_WORDS, "Q_HEAD holds one descriptor per queue");
_Static_assert(KAKI_MMIO__WORK__HUNG_bm >> KAKI_MMIO__WORK__HUNG_bp == (1u << KAKI_ENGINES) - 1 &&
               KAKI_MMIO__ENGINE_RESET__ENGINE_bm >> KAKI_MMIO__ENGINE_RESET__ENGINE_bp == (1u << KAKI_ENGINES) - 1,
               "one WORK.HUNG and ENGINE_RESET bit per engine of the command table");
_Static_assert(KAKI_QUEUES == KAKI_CHIP_QUEUES && KAKI_EVENTS == KAKI_CHIP_EVENTS,
               "the MMIO map's arrays match the chip's queue and event counts");

/* Register fields: value of FIELD in a REG value, and a REG value with FIELD = x. */
#define FIELD_GET(reg, field, v) \
    (((uint32_t)(v) & KAKI_MMIO__##reg##__##field##_bm) >> KAKI_MMIO__##reg##__##field##_bp)
#define FIELD_PUT(reg, field, x) \
    (((uint32_t)(x) << KAKI_MMIO__##reg##__##field##_bp) & KAKI_MMIO__##reg##__##field##_bm)

/* Descriptor fields (kaki_desc.h gives absolute bit offsets in the 8-word descriptor): the word
 * holding a field, and the field's value in that word. Only fields inside one word are read
 * this way (checked where they are used). */
#define DESC_WORD(f) (KAKI_##f##_LSB / 32)
#define DESC_MASK(f) (KAKI_##f##_W >= 32 ? 0xFFFFFFFFu : ((1u << (KAKI_##f##_W % 32)) - 1))
#define DESC_GET(f, word) (((uint32_t)(word) >> (KAKI_##f##_LSB % 32)) & DESC_MASK(f))
#define DESC_IN_ONE_WORD(f) (KAKI_##f##_LSB % 32 + KAKI_##f##_W <= 32)

/* The flags byte of a descriptor (CPL.FLAGS and the record's flags). */
#define DESC_FLAGS_LSB KAKI_DESCRIPTOR_FLAGS_IRQ_LSB
#define DESC_FLAGS(w0) (((uint32_t)(w0) >> DESC_FLAGS_LSB) & 0xFFu)

/* FW_STATUS.STATE values (kaki_mmio.rdl). */
enum fw_state { FW_RESET = 0, FW_BOOTING = 1, FW_READY = 2, FW_FAULT = 3 };

#define MCAUSE_INTERRUPT 0x80000000u
#define MIE_MEIE (1u << 11)

/* FW_FAULT_CAUSE values of faults the firmware detects itself (above every RISC-V mcause
 * exception code, below the interrupt bit); FW_FAULT_TVAL holds the offending value. */
enum fw_panic {
    /* The issue unit left a well-formed head to the firmware: hardware and firmware disagree on
     * the command table (FW_FAULT_TVAL = the head's word 0). */
    PANIC_HEAD_SERVABLE = 0x100,
};

static inline void wfi(void) { __asm__ volatile("wfi"); }

/* main.c */
uint32_t kaki_trap(uint32_t mcause, uint32_t mepc, uint32_t mtval);
/* Report a fault the firmware detected (FW_FAULT_PC = the call site) and stop serving. */
void fw_panic(uint32_t cause, uint32_t tval) __attribute__((noreturn));

/* engines.c: the watchdog policy; queues.c: heads left to the firmware and queue resets. Each
 * serves its WORK bits and returns nonzero if it did anything. */
int engines_watchdog(uint32_t work);
int queues_serve(uint32_t work);
int queues_reset(uint32_t work);
#endif
