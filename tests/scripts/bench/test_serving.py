"""Tests for sale.scripts.bench.serving: llama.cpp's own request lines summed per server run."""

from __future__ import annotations

from sale.scripts.bench.serving import figures, server_runs

LOG = """\
2026-11-27 03:55:00,790 INFO serving /m.gguf as 'm' on http://127.0.0.1:8083
1.00.000.000 I slot get_availabl: id  0 | task -1 | selected slot by LRU, t_last = 1
1.00.100.000 I slot print_timing: id  0 | task 7 | prompt eval time =    2000.00 ms /   100 tokens
1.00.100.001 I slot print_timing: id  0 | task 7 |        eval time =    3000.00 ms /    20 tokens
1.00.100.002 I slot      release: id  0 | task 7 | stop processing: n_tokens = 120, truncated = 0
2026-11-27 07:05:40,400 INFO serving /m.gguf as 'm' on http://127.0.0.1:8083
2.00.000.000 I slot get_availabl: id  0 | task -1 | selected slot by LCP similarity, f = 0.9
2.00.100.000 I slot print_timing: id  0 | task 3 | prompt eval time =    1000.00 ms /    50 tokens
2.00.100.001 I slot print_timing: id  0 | task 3 |        eval time =    4000.00 ms /    10 tokens
2.00.100.002 I slot      release: id  0 | task 3 | stop processing: n_tokens = 210, truncated = 0
2.00.200.000 I slot print_timing: id  0 | task 4 | prompt eval time =    1000.00 ms /    50 tokens
"""


def test_each_request_counts_its_processed_and_cached_prompt_tokens() -> None:
    runs = server_runs(LOG.splitlines())
    assert [started for started, _ in runs] == ["2026-11-27 03:55:00", "2026-11-27 07:05:40"]
    last = figures(runs[-1:])
    # 210 tokens in the slot after the request: 10 generated, 50 processed, 150 from the cache;
    # task 4 has not been released yet, so it does not count
    assert (last.requests, last.prompt_tokens_processed, last.prompt_tokens_cached) == (1, 50, 150)
    assert (last.slot_by_prefix, last.slot_by_lru) == (1, 0)
    assert last.cached_share == 0.75 and last.prompt_time_share == 0.2
    both = figures(runs)
    assert both.requests == 2 and both.prompt_tokens_cached == 150  # the first run cached nothing
    assert both.generated_tokens == 30 and both.prompt_s == 3.0 and both.slot_by_lru == 1
    summary = both.summary()
    assert summary["prompt_tok_per_s"] == 50.0 and summary["gen_tok_per_s"] == 4.29
