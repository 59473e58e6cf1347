// kaki_host_mem: testbench-only AXI4 slave memory model (host DRAM stand-in). Not part of the chip.
//
// * AXI4 slave, ports `s__*` (the flat Amaranth naming of an Axi4Signature port called `s`), so a
//   DMA port `mem__araddr` wires to `s__araddr` and so on. INCR bursts, full-width or narrower
//   beats are accepted but every beat transfers the whole word at the (aligned) beat address, WSTRB
//   honoured, IDs echoed. Read responses return in AR order, write responses in AW order.
// * Storage: WORDS words of DATA_W bits. Address bits above log2(WORDS*DATA_W/8) are ignored, so
//   host addresses WRAP modulo the memory size (no DECERR for "out of range").
// * Up to AR_DEPTH read bursts and AW_DEPTH write bursts are queued (several outstanding).
// * Run-time configuration (inputs, may change at any time):
//     cfg_latency   cycles from the AR handshake cycle to the first R beat of that burst (min 2)
//     cfg_stall     probability/256 per cycle of: AR/AW/W ready held low, R/B valid gap
//     cfg_seed      LFSR (xorshift64) seed, loaded while rst is high
//     cfg_err_base, cfg_err_limit, cfg_err_resp
//                   error window: a beat whose DATA_W/8 bytes overlap [base, limit) answers
//                   cfg_err_resp (2 = SLVERR, 3 = DECERR); written beats inside are dropped.
//                   cfg_err_resp == 0 or base >= limit disables the window.
//     cfg_bh_base, cfg_bh_limit, cfg_bh_mode
//                   black hole: a subordinate that does not answer. A burst whose beats overlap
//                   [base, limit) is, with cfg_bh_mode[0], refused (AR/AW READY held low while it
//                   is offered) and, with cfg_bh_mode[1], accepted and parked: its R beats or B
//                   are withheld and its written data is dropped. Later bursts of the same ID are
//                   parked behind it (responses stay in order per ID; other IDs pass). Mode 0
//                   releases everything: refused bursts are accepted, parked ones answered (reads
//                   with the memory's data at that time), each after the earlier bursts of its ID.
//     cfg_max_len   largest legal AxLEN (protocol check only)
// * Backdoor: a one-cycle pulse on bd_load runs $readmemh(bd_fname, mem) at that clock edge (the
//   file may contain `@word` address records and touch only part of the memory); a pulse on
//   bd_dump runs $writememh(bd_fname, mem, bd_lo, bd_hi) (word indices). bd_fname is a packed
//   string, first character in the most significant byte (a Verilog string literal).
// * Status: st_prot_err (sticky) flags manager protocol violations:
//     [0] AR burst crosses 4 KiB     [1] AW burst crosses 4 KiB   [2] AxSIZE != log2(DATA_W/8)
//     [3] AxBURST != INCR            [4] AxLEN > cfg_max_len      [5] WLAST on the wrong beat
//     [6] AxADDR not beat-aligned    [7] VALID dropped or payload changed before READY (AR/AW/W)
//   Bits 4 and 6 are Kaki DMA rules (cfg_max_len, aligned starts), not AXI4 violations; the model
//   serves such bursts normally (an unaligned start transfers whole beats from the aligned address).
//   st_ar_count / st_aw_count count AR / AW handshakes; st_rd_max_out is the largest number of
//   accepted read bursts not yet fully returned that were seen at once. st_bh_count counts bursts
//   the black hole parked or started refusing, st_bh_time is `now` (cycles since reset) of the
//   latest of these events, st_bh_parked the bursts parked now (reads + writes).
`default_nettype none

module kaki_host_mem #(
    parameter integer DATA_W   = 64,
    parameter integer ADDR_W   = 32,
    parameter integer ID_W     = 4,
    parameter integer WORDS    = 131072,   // 1 MiB at 64 bits
    parameter integer AR_DEPTH = 8,        // power of two
    parameter integer AW_DEPTH = 4,        // power of two
    parameter integer B_DEPTH  = 4,        // power of two
    parameter integer P_DEPTH  = 8,        // parked bursts per direction, power of two
    parameter integer FNAME_W  = 1024      // bits of bd_fname (128 characters)
) (
    input  wire                  clk,
    input  wire                  rst,
    // AXI4 slave
    input  wire [ID_W-1:0]       s__awid,
    input  wire [ADDR_W-1:0]     s__awaddr,
    input  wire [7:0]            s__awlen,
    input  wire [2:0]            s__awsize,
    input  wire [1:0]            s__awburst,
    input  wire [2:0]            s__awprot,
    input  wire                  s__awvalid,
    output wire                  s__awready,
    input  wire [DATA_W-1:0]     s__wdata,
    input  wire [DATA_W/8-1:0]   s__wstrb,
    input  wire                  s__wlast,
    input  wire                  s__wvalid,
    output wire                  s__wready,
    output reg  [ID_W-1:0]       s__bid,
    output reg  [1:0]            s__bresp,
    output reg                   s__bvalid,
    input  wire                  s__bready,
    input  wire [ID_W-1:0]       s__arid,
    input  wire [ADDR_W-1:0]     s__araddr,
    input  wire [7:0]            s__arlen,
    input  wire [2:0]            s__arsize,
    input  wire [1:0]            s__arburst,
    input  wire [2:0]            s__arprot,
    input  wire                  s__arvalid,
    output wire                  s__arready,
    output reg  [ID_W-1:0]       s__rid,
    output reg  [DATA_W-1:0]     s__rdata,
    output reg  [1:0]            s__rresp,
    output reg                   s__rlast,
    output reg                   s__rvalid,
    input  wire                  s__rready,
    // configuration
    input  wire [7:0]            cfg_latency,
    input  wire [7:0]            cfg_stall,
    input  wire [31:0]           cfg_seed,
    input  wire [ADDR_W-1:0]     cfg_err_base,
    input  wire [ADDR_W-1:0]     cfg_err_limit,
    input  wire [1:0]            cfg_err_resp,
    input  wire [7:0]            cfg_max_len,
    input  wire [ADDR_W-1:0]     cfg_bh_base,
    input  wire [ADDR_W-1:0]     cfg_bh_limit,
    input  wire [1:0]            cfg_bh_mode,
    // backdoor
    input  wire                  bd_load,
    input  wire                  bd_dump,
    input  wire [FNAME_W-1:0]    bd_fname,
    input  wire [31:0]           bd_lo,
    input  wire [31:0]           bd_hi,
    // status
    output reg  [7:0]            st_prot_err,
    output reg  [31:0]           st_ar_count,
    output reg  [31:0]           st_aw_count,
    output reg  [7:0]            st_rd_max_out,
    output reg  [31:0]           st_bh_count,
    output reg  [31:0]           st_bh_time,
    output wire [7:0]            st_bh_parked
);
    localparam integer DB  = DATA_W / 8;
    localparam integer BB  = $clog2(DB);
    localparam integer WL  = $clog2(WORDS);
    localparam integer ARP = $clog2(AR_DEPTH);
    localparam integer AWP = $clog2(AW_DEPTH);
    localparam integer BP  = $clog2(B_DEPTH);
    localparam integer PP  = $clog2(P_DEPTH);
    localparam integer NID = 1 << ID_W;
    localparam [15:0]       DB_16 = DB[15:0];
    localparam [ADDR_W-1:0] DB_A = {{(ADDR_W - 16){1'b0}}, DB_16};
    localparam [11:0]       BEAT_MASK = ~(DB_16[11:0] - 12'd1);
    localparam [2:0]        SIZE = BB[2:0];

    reg [DATA_W-1:0] mem [0:WORDS-1];

    // A beat at (aligned) address a overlaps the error window.
    function automatic in_err(input [ADDR_W-1:0] a);
        in_err = (cfg_err_resp != 2'd0) && ({1'b0, a} + {1'b0, DB_A} > {1'b0, cfg_err_base})
                 && (a < cfg_err_limit);
    endfunction

    // A burst of len+1 full-width beats from (aligned) address a overlaps the black hole.
    function automatic in_bh(input [ADDR_W-1:0] a, input [7:0] len);
        in_bh = (cfg_bh_base < cfg_bh_limit) && (a < cfg_bh_limit)
                && ({1'b0, a} + ({{(ADDR_W - 8){1'b0}}, len} + 1) * {1'b0, DB_A} > {1'b0, cfg_bh_base});
    endfunction

    // Burst of len+1 full-width beats from an address with low bits a12 crosses a 4 KiB boundary
    // (the beats start at the address rounded down to the beat size).
    function automatic crosses_4k(input [11:0] a12, input [7:0] len);
        crosses_4k = ({4'd0, a12 & BEAT_MASK} + ({8'd0, len} + 16'd1) * DB_16) > 16'd4096;
    endfunction

    // ---------------------------------------------------------------- random stalls (xorshift64)
    reg  [63:0] rng;
    wire [63:0] rng_a = rng ^ (rng << 13);
    wire [63:0] rng_b = rng_a ^ (rng_a >> 7);
    wire [63:0] rng_n = rng_b ^ (rng_b << 17);
    wire stall_ar = rng[7:0]   < cfg_stall;
    wire stall_aw = rng[15:8]  < cfg_stall;
    wire stall_w  = rng[23:16] < cfg_stall;
    wire gap_r    = rng[31:24] < cfg_stall;
    wire gap_b    = rng[39:32] < cfg_stall;
    reg  [31:0] now;
    always @(posedge clk) begin
        if (rst) begin
            rng <= {cfg_seed ^ 32'h9E3779B9, cfg_seed ^ 32'h7F4A7C15} | 64'd1;
            now <= 32'd0;
        end else begin
            rng <= rng_n;
            now <= now + 32'd1;
        end
    end

    // ---------------------------------------------------------------- read path
    reg [ADDR_W-1:0] arq_addr [0:AR_DEPTH-1];
    reg [7:0]        arq_len  [0:AR_DEPTH-1];
    reg [ID_W-1:0]   arq_id   [0:AR_DEPTH-1];
    reg [31:0]       arq_t    [0:AR_DEPTH-1];
    reg [ARP-1:0]    arq_wp, arq_rp;
    reg [ARP:0]      arq_cnt;
    reg              r_busy;
    reg [ADDR_W-1:0] r_addr;
    reg [7:0]        r_left;
    reg [ID_W-1:0]   r_id;
    // parked reads (black hole) and, per ID, the reads queued in each FIFO
    reg [ADDR_W-1:0] prq_addr [0:P_DEPTH-1];
    reg [7:0]        prq_len  [0:P_DEPTH-1];
    reg [ID_W-1:0]   prq_id   [0:P_DEPTH-1];
    reg [PP-1:0]     prq_wp, prq_rp;
    reg [PP:0]       prq_cnt;
    reg [PP:0]       r_parked [0:NID-1];
    reg [ARP:0]      r_queued [0:NID-1];

    wire [ADDR_W-1:0] ar_aligned = s__araddr & ~(DB_A - 1);
    wire ar_in_bh = in_bh(ar_aligned, s__arlen);
    wire ar_refuse = cfg_bh_mode[0] && s__arvalid && ar_in_bh;
    assign s__arready = (arq_cnt != AR_DEPTH[ARP:0]) && (prq_cnt != P_DEPTH[PP:0]) && !stall_ar
                        && !ar_refuse;
    wire ar_hs = s__arvalid && s__arready;
    wire ar_bh = cfg_bh_mode[1] && ar_in_bh;                  // swallowed by the black hole
    wire ar_park = ar_bh || (r_parked[s__arid] != 0);         // parked (or behind a parked one)
    wire [31:0] head_wait = now - arq_t[arq_rp];
    wire head_ok = (arq_cnt != 0) && ($signed(head_wait) >= 32'sd0);
    // a released parked read goes once no earlier read of its ID waits in the normal queue
    wire park_ok = (prq_cnt != 0) && !cfg_bh_mode[1] && (r_queued[prq_id[prq_rp]] == 0);
    wire start_p = !r_busy && park_ok;
    wire start_n = !r_busy && !park_ok && head_ok;
    wire [ADDR_W-1:0] c_addr = r_busy ? r_addr : start_p ? prq_addr[prq_rp] : arq_addr[arq_rp];
    wire [7:0]        c_left = r_busy ? r_left : start_p ? prq_len[prq_rp]  : arq_len[arq_rp];
    wire [ID_W-1:0]   c_id   = r_busy ? r_id   : start_p ? prq_id[prq_rp]   : arq_id[arq_rp];
    wire r_load = (r_busy || start_p || start_n) && (!s__rvalid || s__rready) && !gap_r;
    wire ar_pop = r_load && start_n;
    wire prq_pop = r_load && start_p;
    wire [7:0] rd_out = {{(7 - ARP){1'b0}}, arq_cnt} + {{(7 - PP){1'b0}}, prq_cnt} + {7'd0, r_busy};

    integer k;
    always @(posedge clk) begin
        if (rst) begin
            arq_wp <= 0;
            arq_rp <= 0;
            arq_cnt <= 0;
            prq_wp <= 0;
            prq_rp <= 0;
            prq_cnt <= 0;
            for (k = 0; k < NID; k = k + 1) begin
                r_parked[k] <= 0;
                r_queued[k] <= 0;
            end
            r_busy <= 1'b0;
            s__rvalid <= 1'b0;
            st_rd_max_out <= 8'd0;
        end else begin
            if (ar_hs && !ar_park) begin
                arq_addr[arq_wp] <= ar_aligned;
                arq_len[arq_wp] <= s__arlen;
                arq_id[arq_wp] <= s__arid;
                arq_t[arq_wp] <= now + {24'd0, cfg_latency} - 32'd1;
                arq_wp <= arq_wp + 1'b1;
            end
            if (ar_hs && ar_park) begin
                prq_addr[prq_wp] <= ar_aligned;
                prq_len[prq_wp] <= s__arlen;
                prq_id[prq_wp] <= s__arid;
                prq_wp <= prq_wp + 1'b1;
            end
            if (ar_pop) arq_rp <= arq_rp + 1'b1;
            if (prq_pop) prq_rp <= prq_rp + 1'b1;
            arq_cnt <= arq_cnt + {{ARP{1'b0}}, ar_hs && !ar_park} - {{ARP{1'b0}}, ar_pop};
            prq_cnt <= prq_cnt + {{PP{1'b0}}, ar_hs && ar_park} - {{PP{1'b0}}, prq_pop};
            for (k = 0; k < NID; k = k + 1) begin
                r_queued[k] <= r_queued[k] + {{ARP{1'b0}}, ar_hs && !ar_park && s__arid == k[ID_W-1:0]}
                               - {{ARP{1'b0}}, ar_pop && arq_id[arq_rp] == k[ID_W-1:0]};
                r_parked[k] <= r_parked[k] + {{PP{1'b0}}, ar_hs && ar_park && s__arid == k[ID_W-1:0]}
                               - {{PP{1'b0}}, prq_pop && prq_id[prq_rp] == k[ID_W-1:0]};
            end
            if (r_load) begin
                s__rvalid <= 1'b1;
                s__rdata <= mem[c_addr[BB +: WL]];
                s__rresp <= in_err(c_addr) ? cfg_err_resp : 2'b00;
                s__rlast <= c_left == 8'd0;
                s__rid <= c_id;
                r_busy <= c_left != 8'd0;
                r_addr <= c_addr + DB_A;
                r_left <= c_left - 8'd1;
                r_id <= c_id;
            end else if (s__rready) begin
                s__rvalid <= 1'b0;
            end
            if (rd_out > st_rd_max_out) st_rd_max_out <= rd_out;
        end
    end

    // ---------------------------------------------------------------- write path
    reg [ADDR_W-1:0] awq_addr [0:AW_DEPTH-1];
    reg [7:0]        awq_len  [0:AW_DEPTH-1];
    reg [ID_W-1:0]   awq_id   [0:AW_DEPTH-1];
    reg [AWP-1:0]    awq_wp, awq_rp;
    reg [AWP:0]      awq_cnt;
    reg [7:0]        w_idx;
    reg [ADDR_W-1:0] w_off;
    reg              w_err;
    reg              awq_bh  [0:AW_DEPTH-1];     // swallowed: data dropped, B parked
    reg [ID_W-1:0]   bq_id   [0:B_DEPTH-1];
    reg [1:0]        bq_resp [0:B_DEPTH-1];
    reg [BP-1:0]     bq_wp, bq_rp;
    reg [BP:0]       bq_cnt;
    // parked B responses (black hole) and, per ID, the B responses waiting in each queue
    reg [ID_W-1:0]   pbq_id  [0:P_DEPTH-1];
    reg [PP-1:0]     pbq_wp, pbq_rp;
    reg [PP:0]       pbq_cnt;
    reg [PP:0]       b_parked [0:NID-1];
    reg [BP:0]       b_queued [0:NID-1];

    wire [ADDR_W-1:0] aw_aligned = s__awaddr & ~(DB_A - 1);
    wire aw_in_bh = in_bh(aw_aligned, s__awlen);
    wire aw_refuse = cfg_bh_mode[0] && s__awvalid && aw_in_bh;
    assign s__awready = (awq_cnt != AW_DEPTH[AWP:0]) && !stall_aw && !aw_refuse;
    assign s__wready = (awq_cnt != 0) && (bq_cnt != B_DEPTH[BP:0]) && (pbq_cnt != P_DEPTH[PP:0])
                       && !stall_w;
    wire aw_hs = s__awvalid && s__awready;
    wire w_hs = s__wvalid && s__wready;
    wire [ADDR_W-1:0] w_addr = awq_addr[awq_rp] + w_off;
    wire w_in_err = in_err(w_addr);
    wire w_swallow = awq_bh[awq_rp];
    wire w_last = w_idx == awq_len[awq_rp];
    wire w_done = w_hs && w_last;
    wire [ID_W-1:0] w_id = awq_id[awq_rp];
    wire b_park = w_swallow || (b_parked[w_id] != 0);        // parked (or behind a parked one)
    wire pb_ok = (pbq_cnt != 0) && !cfg_bh_mode[1] && (b_queued[pbq_id[pbq_rp]] == 0);
    wire b_free = (!s__bvalid || s__bready) && !gap_b;
    wire pb_load = pb_ok && b_free;
    wire b_load = !pb_ok && (bq_cnt != 0) && b_free;

    always @(posedge clk) begin
        if (rst) begin
            awq_wp <= 0;
            awq_rp <= 0;
            awq_cnt <= 0;
            w_idx <= 8'd0;
            w_off <= {ADDR_W{1'b0}};
            w_err <= 1'b0;
            bq_wp <= 0;
            bq_rp <= 0;
            bq_cnt <= 0;
            pbq_wp <= 0;
            pbq_rp <= 0;
            pbq_cnt <= 0;
            for (k = 0; k < NID; k = k + 1) begin
                b_parked[k] <= 0;
                b_queued[k] <= 0;
            end
            s__bvalid <= 1'b0;
        end else begin
            if (aw_hs) begin
                awq_addr[awq_wp] <= aw_aligned;
                awq_len[awq_wp] <= s__awlen;
                awq_id[awq_wp] <= s__awid;
                awq_bh[awq_wp] <= cfg_bh_mode[1] && aw_in_bh;
                awq_wp <= awq_wp + 1'b1;
            end
            awq_cnt <= awq_cnt + {{AWP{1'b0}}, aw_hs} - {{AWP{1'b0}}, w_done};
            if (w_hs) begin
                if (w_last) begin
                    awq_rp <= awq_rp + 1'b1;
                    w_idx <= 8'd0;
                    w_off <= {ADDR_W{1'b0}};
                    w_err <= 1'b0;
                    if (b_park) begin
                        pbq_id[pbq_wp] <= w_id;
                        pbq_wp <= pbq_wp + 1'b1;
                    end else begin
                        bq_id[bq_wp] <= w_id;
                        bq_resp[bq_wp] <= (w_err || w_in_err) ? cfg_err_resp : 2'b00;
                        bq_wp <= bq_wp + 1'b1;
                    end
                end else begin
                    w_idx <= w_idx + 8'd1;
                    w_off <= w_off + DB_A;
                    w_err <= w_err || w_in_err;
                end
            end
            if (pb_load) begin
                s__bvalid <= 1'b1;
                s__bid <= pbq_id[pbq_rp];
                s__bresp <= 2'b00;
                pbq_rp <= pbq_rp + 1'b1;
            end else if (b_load) begin
                s__bvalid <= 1'b1;
                s__bid <= bq_id[bq_rp];
                s__bresp <= bq_resp[bq_rp];
                bq_rp <= bq_rp + 1'b1;
            end else if (s__bready) begin
                s__bvalid <= 1'b0;
            end
            bq_cnt <= bq_cnt + {{BP{1'b0}}, w_done && !b_park} - {{BP{1'b0}}, b_load};
            pbq_cnt <= pbq_cnt + {{PP{1'b0}}, w_done && b_park} - {{PP{1'b0}}, pb_load};
            for (k = 0; k < NID; k = k + 1) begin
                b_queued[k] <= b_queued[k] + {{BP{1'b0}}, w_done && !b_park && w_id == k[ID_W-1:0]}
                               - {{BP{1'b0}}, b_load && bq_id[bq_rp] == k[ID_W-1:0]};
                b_parked[k] <= b_parked[k] + {{PP{1'b0}}, w_done && b_park && w_id == k[ID_W-1:0]}
                               - {{PP{1'b0}}, pb_load && pbq_id[pbq_rp] == k[ID_W-1:0]};
            end
        end
    end
    assign st_bh_parked = {{(7 - PP){1'b0}}, prq_cnt} + {{(7 - PP){1'b0}}, pbq_cnt};

    // ---------------------------------------------------------------- storage and backdoor
    integer lane;
    always @(posedge clk) begin
        if (bd_load) $readmemh(bd_fname, mem);
        if (bd_dump) $writememh(bd_fname, mem, bd_lo, bd_hi);
        if (w_hs && !w_in_err && !w_swallow) begin
            for (lane = 0; lane < DB; lane = lane + 1)
                if (s__wstrb[lane]) mem[w_addr[BB +: WL]][8*lane +: 8] <= s__wdata[8*lane +: 8];
        end
    end

    // ---------------------------------------------------------------- protocol checks and counters
    reg                                  ar_wait, aw_wait, w_wait, ar_refused, aw_refused;
    reg [ADDR_W+8+3+2+ID_W-1:0]          ar_prev, aw_prev;
    reg [DATA_W+DATA_W/8:0]              w_prev;
    wire [ADDR_W+8+3+2+ID_W-1:0] ar_now = {s__araddr, s__arlen, s__arsize, s__arburst, s__arid};
    wire [ADDR_W+8+3+2+ID_W-1:0] aw_now = {s__awaddr, s__awlen, s__awsize, s__awburst, s__awid};
    wire [DATA_W+DATA_W/8:0]     w_now  = {s__wdata, s__wstrb, s__wlast};
    always @(posedge clk) begin
        if (rst) begin
            st_prot_err <= 8'd0;
            st_ar_count <= 32'd0;
            st_aw_count <= 32'd0;
            st_bh_count <= 32'd0;
            st_bh_time <= 32'd0;
            ar_refused <= 1'b0;
            aw_refused <= 1'b0;
            ar_wait <= 1'b0;
            aw_wait <= 1'b0;
            w_wait <= 1'b0;
        end else begin
            ar_refused <= ar_refuse;
            aw_refused <= aw_refuse;
            if ((ar_hs && ar_bh) || (aw_hs && cfg_bh_mode[1] && aw_in_bh)
                || (ar_refuse && !ar_refused) || (aw_refuse && !aw_refused)) begin
                st_bh_count <= st_bh_count + 32'd1;
                st_bh_time <= now;
            end
            ar_wait <= s__arvalid && !s__arready;
            aw_wait <= s__awvalid && !s__awready;
            w_wait <= s__wvalid && !s__wready;
            ar_prev <= ar_now;
            aw_prev <= aw_now;
            w_prev <= w_now;
            if ((ar_wait && (!s__arvalid || ar_now != ar_prev)) ||
                (aw_wait && (!s__awvalid || aw_now != aw_prev)) ||
                (w_wait && (!s__wvalid || w_now != w_prev)))
                st_prot_err[7] <= 1'b1;
            if (ar_hs) begin
                st_ar_count <= st_ar_count + 32'd1;
                if (crosses_4k(s__araddr[11:0], s__arlen)) st_prot_err[0] <= 1'b1;
                if (s__arsize != SIZE) st_prot_err[2] <= 1'b1;
                if (s__arburst != 2'd1) st_prot_err[3] <= 1'b1;
                if (s__arlen > cfg_max_len) st_prot_err[4] <= 1'b1;
                if ((s__araddr & (DB_A - 1)) != 0) st_prot_err[6] <= 1'b1;
            end
            if (aw_hs) begin
                st_aw_count <= st_aw_count + 32'd1;
                if (crosses_4k(s__awaddr[11:0], s__awlen)) st_prot_err[1] <= 1'b1;
                if (s__awsize != SIZE) st_prot_err[2] <= 1'b1;
                if (s__awburst != 2'd1) st_prot_err[3] <= 1'b1;
                if (s__awlen > cfg_max_len) st_prot_err[4] <= 1'b1;
                if ((s__awaddr & (DB_A - 1)) != 0) st_prot_err[6] <= 1'b1;
            end
            if (w_hs && (s__wlast != w_last)) st_prot_err[5] <= 1'b1;
        end
    end

    // Inputs that only feed protocol checks or are deliberately ignored.
    wire _unused_ok = &{1'b0, s__awprot, s__arprot, rng[63:40], 1'b0};
endmodule

`default_nettype wire
