// Copyright cocotb contributors
// Licensed under the Revised BSD License, see LICENSE for details.
// SPDX-License-Identifier: BSD-3-Clause
//
// Kaki: a copy of cocotb 2.1.0's share/lib/verilator/verilator.cpp (the main loop the cocotb
// runner compiles into every Verilator simulator), used for the waves build and for every build
// of a target whose clock the loop makes (tools/simbuild.py swaps it in). Two changes, marked
// "kaki:", everything else is cocotb's code unchanged:
//
// * a trace window: `--trace-start T` / `--trace-stop T` (simulation time in precision units,
//   e.g. ps) trace that window while simulating instead of the whole run. The trace file is
//   opened at the first time step >= T_start (VerilatedVcdC writes every signal's value on the
//   first dump after open, so the file stands on its own) and closed after the first time step
//   >= T_stop. Without them the whole run is traced as before.
// * a clock made by the loop: compiled with -DKAKI_LOOP_CLOCK_HALF=H (precision units), the
//   top's `clk` input starts at 0 and is inverted at the start of every time step at a multiple
//   of H (rising edges at H, 3H, ...), after that step's timed callbacks and before its
//   evaluation: where `always #H clk = ~clk;` in the top would invert it, without Verilator's
//   timing scheduler (no `--timing` event queue, no coroutine per half period). The bare C++
//   harness (replay.cpp) clocks the same model the same way, two evaluations per cycle.
// * fewer VPI calls per time step, with the same callbacks called in the same order: a
//   VerilatedVpi::callCbs(reason) first moves the future callbacks that are due (timed ones at or
//   before the current time, next-time-step ones before it) to their reasons' lists, then calls
//   that reason's list. The time step's first callCbs (cbNextSimTime, right after the time
//   advanced) makes every move the step can have: a callback registered during the step goes to
//   a list at once when it is due now and is not due before the time advances otherwise. So
//   the step's later callCbs are skipped when their reason has no callback (call_cbs), and the
//   value-change pass after cbNextSimTime and after the timed callbacks only runs when one of
//   them was called (nothing else can have changed a signal since the previous pass).
//   Measurements: docs/bench.md "Testbench speed".

#include <libgen.h>  // basename
#include <stdio.h>   // stderr, fprintf

#include <cstdlib>  // kaki: strtoull
#include <memory>   // std::unique_ptr
#include <string>  // std::string

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"

#ifndef VM_TRACE_FST
// emulate new verilator behavior for legacy versions
#define VM_TRACE_FST 0
#endif

#if VM_TRACE
#if VM_TRACE_FST
#include <verilated_fst_c.h>
using verilated_trace_t = VerilatedFstC;
#elif VM_TRACE_SAIF
#include <verilated_saif_c.h>
using verilated_trace_t = VerilatedSaifC;
#else
// VM_TRACE_VCD
#include <verilated_vcd_c.h>
using verilated_trace_t = VerilatedVcdC;
#endif
static verilated_trace_t *tfp;
#endif

static vluint64_t main_time = 0;  // Current simulation time
#if VM_COVERAGE
static bool coverage_per_instance = false;
#endif

double sc_time_stamp() {  // Called by $time in Verilog
    return main_time;     // converts to double, to match
                          // what SystemC does
}

extern "C" {
void vlog_startup_routines_bootstrap(void);
}

static inline bool settle_value_callbacks() {
    bool cbs_called, again;

    // Call Value Change callbacks
    // These can modify signal values so we loop
    // until there are no more changes
    cbs_called = again = VerilatedVpi::callValueCbs();
    while (again) {
        again = VerilatedVpi::callValueCbs();
    }

    return cbs_called;
}

// kaki: callCbs(reason) only when that reason has callbacks (file header)
static inline bool call_cbs(uint32_t reason) {
    return VerilatedVpi::hasCbs(reason) && VerilatedVpi::callCbs(reason);
}

void wrap_up() {
    VerilatedVpi::callCbs(cbEndOfSimulation);

#if VM_TRACE
    if (tfp) {
        // We don't delete the trace object to avoid deadlock in verilator sims.
        tfp->close();
    }
#endif

    // VM_COVERAGE is a define which is set if Verilator is
    // instructed to collect coverage (when compiling the simulation)
#if VM_COVERAGE
    if (coverage_per_instance) {
        Verilated::threadContextp()->coveragep()->forcePerInstance(true);
    }
    VerilatedCov::write();  // Uses +verilator+coverage+file+<filename>,
                            // defaults to coverage.dat
#endif
}

int main(int argc, char **argv) {
#if VM_TRACE_FST
    const char *traceFile = "dump.fst";
#elif VM_TRACE_SAIF
    const char *traceFile = "dump.saif";
#else
    const char *traceFile = "dump.vcd";
#endif
    bool traceOn = false;
    bool traceFlush = false;
    bool coveragePerInstance = false;
    // kaki: the trace window, simulation time in precision units (whole run by default)
    vluint64_t traceStart = 0;
    vluint64_t traceStop = ~0ULL;

    for (int i = 1; i < argc; i++) {
        std::string arg = std::string(argv[i]);
        if (arg == "--coverage-per-instance") {
#if VM_COVERAGE
            coveragePerInstance = true;
#else
            fprintf(stderr,
                    "Error: --coverage-per-instance requires the design to be "
                    "built with coverage support\n");
            return -1;
#endif
        } else if (arg == "--trace") {
#if VM_TRACE
            traceOn = true;
#else
            fprintf(stderr,
                    "Error: --trace requires the design to be built with trace "
                    "support\n");
            return -1;
#endif
        } else if (arg == "--trace-flush") {
            traceFlush = true;
        } else if (arg == "--trace-file") {
            if (++i < argc) {
                traceFile = argv[i];
            } else {
                fprintf(stderr, "Error: --trace-file requires a parameter\n");
                return -1;
            }
        } else if (arg == "--trace-start" || arg == "--trace-stop") {  // kaki
            if (++i < argc) {
                (arg == "--trace-start" ? traceStart : traceStop) =
                    std::strtoull(argv[i], nullptr, 10);
            } else {
                fprintf(stderr, "Error: %s requires a parameter\n", arg.c_str());
                return -1;
            }
        } else if (arg == "--help") {
            fprintf(
                stderr,
                "usage: %s [--coverage-per-instance] [--trace] [--trace-flush] "
                "[--trace-file TRACEFILE] [--trace-start T] [--trace-stop T]\n"
                "\n"
                "cocotb + Verilator sim\n"
                "\n"
                "options:\n"
                "  --coverage-per-instance  Force per-instance coverage "
                "(requires coverage build)\n"
                "  --trace                  Enable tracing (VCD, SAIF or FST)\n"
                "  --trace-flush            Flush trace at each time step "
                "(slow)\n"
                "  --trace-file             Specify the trace file name (%s by "
                "default)\n"
                "  --trace-start/--trace-stop T  Trace only simulation times "
                "T_start..T_stop (kaki)\n",
                basename(argv[0]), traceFile);
            return 0;
        }
    }

    Verilated::commandArgs(argc, argv);
#if VM_COVERAGE
    coverage_per_instance = coveragePerInstance;
#endif
#ifdef VERILATOR_SIM_DEBUG
    Verilated::debug(99);
#endif
    std::unique_ptr<Vtop> top(new Vtop(""));
#ifdef KAKI_LOOP_CLOCK_HALF
    top->clk = 0;  // kaki: the clock made by the loop starts low
#endif
    Verilated::fatalOnVpiError(false);  // otherwise it will fail on systemtf

#ifdef VERILATOR_SIM_DEBUG
    Verilated::internalsDump();
#endif

#if VM_TRACE
    Verilated::traceEverOn(true);
    if (traceOn) {
        tfp = new verilated_trace_t;
        top->trace(tfp, 99);
        // kaki: opened in the main loop, at the first time step >= traceStart
    }
#endif

#if VM_TRACE
    bool traceDone = false;  // kaki: window written (or the file could not be opened)
#endif

    vlog_startup_routines_bootstrap();
    Verilated::addExitCb([](void *) { wrap_up(); }, nullptr);
    VerilatedVpi::callCbs(cbStartOfSimulation);
    settle_value_callbacks();

#ifdef KAKI_LOOP_CLOCK_HALF
    // kaki: the clock made by this loop (file header); next time step that inverts it
    const vluint64_t clockHalf = KAKI_LOOP_CLOCK_HALF;
    vluint64_t nextClockToggle = clockHalf;
#endif

    while (!Verilated::gotFinish()) {
#ifdef KAKI_LOOP_CLOCK_HALF
        if (main_time == nextClockToggle) {  // kaki: invert the clock, then evaluate
            top->clk = !top->clk;
            nextClockToggle += clockHalf;
        }
#endif
        do {
            // We must evaluate whole design until we process all 'events' for
            // this time step
            do {
                top->eval_step();
                VerilatedVpi::clearEvalNeeded();
                VerilatedVpi::doInertialPuts();
                settle_value_callbacks();
            } while (VerilatedVpi::evalNeeded());

            // Run ReadWrite callback as we are done processing this eval step
            call_cbs(cbReadWriteSynch);  // kaki: skipped when none (file header)
            VerilatedVpi::doInertialPuts();
            settle_value_callbacks();
        } while (VerilatedVpi::evalNeeded());

        top->eval_end_step();

        // Call ReadOnly callbacks
        call_cbs(cbReadOnlySynch);  // kaki: skipped when none (file header)

#if VM_TRACE
        // kaki: open at the window's start (once), dump inside it, close at its end
        if (tfp && !tfp->isOpen() && !traceDone && main_time >= traceStart) {
            tfp->open(traceFile);
            traceDone = !tfp->isOpen();  // could not open: do not retry every time step
        }
        if (tfp && tfp->isOpen()) {
            tfp->dump(main_time);
            if (traceFlush) {
                tfp->flush();
            }
            if (main_time >= traceStop) {
                tfp->close();
                traceDone = true;
            }
        }
#endif
        // cocotb controls the clock inputs using cbAfterDelay so
        // skip ahead to the next registered callback
        const vluint64_t NO_TOP_EVENTS_PENDING = static_cast<vluint64_t>(~0ULL);
        vluint64_t next_time_cocotb = VerilatedVpi::cbNextDeadline();
        vluint64_t next_time_timing =
            top->eventsPending() ? top->nextTimeSlot() : NO_TOP_EVENTS_PENDING;
        vluint64_t next_time = std::min(next_time_cocotb, next_time_timing);
#ifdef KAKI_LOOP_CLOCK_HALF
        next_time = std::min(next_time, nextClockToggle);  // kaki
#endif

        // If there are no more cbAfterDelay callbacks,
        // the next deadline is max value, so end the simulation now
        if (next_time == NO_TOP_EVENTS_PENDING) {
            break;
        } else {
            main_time = next_time;
        }

        // Call registered NextSimTime
        // It should be called in simulation cycle before everything else
        // but not on first cycle
        // kaki: the time step's first callCbs, which moves its due callbacks (file header);
        // the value-change pass only when a callback was called
        if (VerilatedVpi::callCbs(cbNextSimTime)) settle_value_callbacks();

        // Call registered timed callbacks (e.g. clock timer)
        // These are called at the beginning of the time step
        // before the iterative regions (IEEE 1800-2012 4.4.1)
        if (call_cbs(cbAfterDelay)) settle_value_callbacks();  // kaki: as callTimedCbs()
    }

    top->final();

    wrap_up();

#if VM_TRACE
    if (tfp) {
        delete tfp;
        tfp = nullptr;
    }
#endif

    // Fail the sim if any assertion/error fired during the run.
    if (Verilated::threadContextp()->errorCount() > 0) {
        return 1;
    }

    return 0;
}
