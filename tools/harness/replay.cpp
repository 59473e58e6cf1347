// Bare Verilator C++ harness for `make bench`: the same testbench top as the cocotb runs
// (kaki_tb_soc_<N>x<N>: chip + kaki_host_mem), no cocotb, no VPI. It replays a trace recorded
// during the cocotb run (tools/bench.py documents the format): AXI4-Lite CSR writes
// and reads issued at the recorded cycles, host-memory backdoor loads ($readmemh) at the recorded
// clock edges, backdoor word writes (VPI in the cocotb run) stored into the memory array between
// the recorded edges, and at the end a $writememh dump of the driver's host-memory region.
// Built with -DKAKI_EXT_CLOCK (clk is an input toggled here) and -DKAKI_HOST_MEM=<the root
// member of kaki_host_mem's array>, public in the fast build of the target.
//
//   replay <trace.txt> [issue_delay]      (run in a scratch directory: it writes replay_*.hex)
//
// Prints one JSON line: cycles, wall seconds of the timed window (trace S..E) and of the whole
// replay, CPU seconds of this process in the window (less sensitive than the wall time to other
// processes sharing the machine), CSR reads whose data differ from the recording (0 = the replay
// is cycle-exact as far as the reads can tell).
#include <chrono>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"

// Verilator escapes the double underscore of the Amaranth port names (csr__awaddr) as ___05F.

struct Event {
    char kind;
    uint64_t cycle;
    uint64_t a = 0, b = 0;
    std::vector<uint64_t> words;
};

static double cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename W>
static void set_fname(W& port, const char* name) {
    for (int i = 0; i < 32; i++) port[i] = 0;
    int n = (int)strlen(name);
    for (int j = 0; j < n; j++) {
        int bit = 8 * (n - 1 - j);
        port[bit / 32] |= (uint32_t)(uint8_t)name[j] << (bit % 32);
    }
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s trace.txt [issue_delay]\n", argv[0]);
        return 2;
    }
    const uint64_t delay = argc > 2 ? strtoull(argv[2], nullptr, 10) : 1;
    std::ifstream in(argv[1]);
    std::string line;
    std::vector<Event> ev;
    uint64_t rst_cycles = 5, latency = 2, stall = 0, seed = 1, max_len = 255;
    while (std::getline(in, line)) {
        std::istringstream s(line);
        char k;
        if (!(s >> k)) continue;
        if (k == 'K') {
            s >> rst_cycles >> latency >> stall >> seed >> max_len;
            continue;
        }
        Event e;
        e.kind = k;
        s >> std::dec >> e.cycle;
        if (k == 'W' || k == 'R' || k == 'D') {
            s >> std::hex >> e.a >> e.b;
        } else if (k == 'L' || k == 'P') {
            s >> std::hex >> e.a;
            uint64_t w;
            while (s >> w) e.words.push_back(w);
        }
        ev.push_back(std::move(e));
    }

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(ctx.get());
    top->clk = 0;
    top->rst = 1;
    top->host_cfg_latency = latency;
    top->host_cfg_stall = stall;
    top->host_cfg_seed = seed;
    top->host_cfg_max_len = max_len;
    top->host_cfg_err_base = 0;
    top->host_cfg_err_limit = 0;
    top->host_cfg_err_resp = 0;
    top->host_bd_load = 0;
    top->host_bd_dump = 0;
    top->csr___05Fbready = 1;
    top->csr___05Frready = 1;
    top->csr___05Fwstrb = 0xF;
    top->eval();

    size_t next = 0;
    bool busy = false;           // a CSR transaction is in flight
    bool is_read = false;
    uint64_t expect = 0;
    uint64_t reads = 0, writes = 0, loads = 0, pokes = 0, mismatches = 0;
    long first_bad = -1;
    uint64_t first_bad_got = 0;
    double t_start = 0, t_end = 0, t0 = now_s(), cpu_start = 0, cpu_end = 0;
    uint64_t c_start = 0, c_end = 0;
    bool done = false;
    uint64_t k = 0;
    for (; !done; k++) {
        // ---- before edge k: sample the handshakes the edge will complete
        bool aw_hs = top->csr___05Fawvalid && top->csr___05Fawready;
        bool w_hs = top->csr___05Fwvalid && top->csr___05Fwready;
        bool b_hs = top->csr___05Fbvalid && top->csr___05Fbready;
        bool ar_hs = top->csr___05Farvalid && top->csr___05Farready;
        bool r_hs = top->csr___05Frvalid && top->csr___05Frready;
        uint32_t rdata = top->csr___05Frdata;
        top->clk = 1;
        top->eval();
        // ---- after edge k
        if (k + 1 >= rst_cycles) top->rst = 0;
        top->host_bd_load = 0;
        top->host_bd_dump = 0;
        if (aw_hs) top->csr___05Fawvalid = 0;
        if (w_hs) top->csr___05Fwvalid = 0;
        if (ar_hs) top->csr___05Farvalid = 0;
        if (busy && !is_read && b_hs) busy = false;
        if (busy && is_read && r_hs) {
            busy = false;
            if (rdata != (uint32_t)expect) {
                if (first_bad < 0) first_bad = (long)(next - 1), first_bad_got = rdata;
                mismatches++;
            }
        }
        // issue what is due; every input set now is seen by edge k + 1
        while (next < ev.size() && !busy) {
            Event& e = ev[next];
            if (e.kind == 'S' || e.kind == 'E') {
                if (e.cycle > k) break;
                if (e.kind == 'S') t_start = now_s(), cpu_start = cpu_s(), c_start = k;
                else t_end = now_s(), cpu_end = cpu_s(), c_end = k;
                next++;
            } else if (e.kind == 'W' || e.kind == 'R') {
                if (e.cycle + delay > k) break;
                busy = true;
                is_read = e.kind == 'R';
                if (is_read) {
                    top->csr___05Faraddr = e.a;
                    top->csr___05Farvalid = 1;
                    expect = e.b;
                    reads++;
                } else {
                    top->csr___05Fawaddr = e.a;
                    top->csr___05Fwdata = e.b;
                    top->csr___05Fawvalid = 1;
                    top->csr___05Fwvalid = 1;
                    writes++;
                }
                next++;
            } else if (e.kind == 'P') {
                if (e.cycle > k) break;              // written after edge e.cycle
                for (size_t i = 0; i < e.words.size(); i++)
                    top->rootp->KAKI_HOST_MEM[e.a + i] = e.words[i];
                pokes++;
                next++;
            } else if (e.kind == 'L' || e.kind == 'D') {
                if (e.cycle > k + 1) break;          // takes effect at edge e.cycle
                if (e.kind == 'L') {
                    FILE* f = fopen("replay_load.hex", "w");
                    fprintf(f, "@%llx\n", (unsigned long long)e.a);
                    for (uint64_t w : e.words) fprintf(f, "%016llx\n", (unsigned long long)w);
                    fclose(f);
                    set_fname(top->host_bd_fname, "replay_load.hex");
                    top->host_bd_load = 1;
                    loads++;
                    next++;
                    break;                           // one backdoor transfer per edge
                }
                set_fname(top->host_bd_fname, "replay_region.hex");
                top->host_bd_lo = e.a;
                top->host_bd_hi = e.b;
                top->host_bd_dump = 1;
                next++;
                done = true;                         // the dump happens at the next edge
                break;
            } else {
                next++;
            }
        }
        top->clk = 0;
        top->eval();
    }
    // the final dump edge
    top->clk = 1;
    top->eval();
    k++;
    double t_total = now_s() - t0;
    top->final();
    printf("{\"cycles\": %llu, \"window_cycles\": %llu, \"window_wall_s\": %.6f, \"window_cpu_s\": %.6f, "
           "\"total_wall_s\": %.6f, "
           "\"csr_writes\": %llu, \"csr_reads\": %llu, \"read_mismatches\": %llu, \"first_mismatch_event\": %ld, "
           "\"first_mismatch_got\": %llu, \"loads\": %llu, \"pokes\": %llu, \"issue_delay\": %llu}\n",
           (unsigned long long)k, (unsigned long long)(c_end - c_start), t_end - t_start,
           cpu_end - cpu_start, t_total,
           (unsigned long long)writes, (unsigned long long)reads, (unsigned long long)mismatches,
           first_bad, (unsigned long long)first_bad_got, (unsigned long long)loads,
           (unsigned long long)pokes, (unsigned long long)delay);
    return 0;
}
