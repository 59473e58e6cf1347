"""The LLM serving figures of `make bench` (tools/bench_llm.py) from their inputs: pure functions,
no simulator (the RTL and golden halves run in `make bench`)."""
import pytest

from tools import bench, bench_llm


def _rtl(t1, t8, const=400_000):
    decode = []
    for batch, cycles in ((1, t1), (8, t8)) * 2:
        decode.append(dict(batch=batch, cycles=cycles, const_load_bytes=const,
                           work=[(b, 48, 1) for b in range(batch)],
                           perf={"PERF_GEMM_BUSY": cycles // 2, "PERF_DMA_LOAD_BUSY": cycles // 3}))
    return dict(layout=dict(layers=2, d_model=128), decode=decode,
                ttft=dict(cycles=1000, chunks=[600, 400]),
                sample=[dict(cycles=110, predicted=100), dict(cycles=220, predicted=200)])


GOLDEN = dict(requests=32, steps=50, launches=90, generated=300, processed=800,
              predicted_cycles=2_000_000, golden_cpu_s=1.0, wrong_requests=[], occupancy=0.5)


def test_figures_follow_their_definitions():
    goals, why, s = bench_llm.figures(_rtl(100_000, 200_000), GOLDEN, (500e6, "test"))
    kv = 2 * 2 * 128 * 49                      # K and V, 2 layers, keys 0..48
    assert goals["llm_mbu_b1"] == pytest.approx((400_000 + kv) / (100_000 * 8))
    assert goals["llm_batch8"] == pytest.approx(8 * 100_000 / 200_000)
    assert s["ttft_cycles"] == 1000 and s["ttft_us"] == pytest.approx(2.0)
    calib = 330 / 300
    assert s["trace"]["calibration"] == pytest.approx(calib)
    assert s["trace"]["tokens_per_mcycle"] == pytest.approx(1e6 * 800 / (2_000_000 * calib))
    assert s["trace"]["generated_per_s"] == pytest.approx(300 / (2_000_000 * calib / 500e6))
    assert "200,000" in why["llm_batch8"]


def test_goal_table_and_section_show_the_llm_rows():
    goals, why, s = bench_llm.figures(_rtl(100_000, 300_000), GOLDEN, (500e6, "test"))
    rows = {r[0]: r for r in bench.goal_rows(dict(goals=goals, why=why))}
    mbu = rows[bench_llm.GOALS[0][1]]
    assert mbu[4] is False and mbu[6]            # 51 % < 60 %: missed, with its reason
    batch = rows[bench_llm.GOALS[1][1]]
    assert batch[1] == pytest.approx(8 / 3) and batch[4] is False
    text = "\n".join(bench_llm.format_lines(s))
    for what in ("batch 1 100,000 cycles", "time to first token, 128-token prompt",
                 "32 requests", "tokens equal to each request alone: all",
                 "RTL sample ratio 1.10"):
        assert what in text, what
