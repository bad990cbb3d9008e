"""The readout benchmark's arithmetic: the profile from /metrics counter deltas, ratios against each stock run."""

import math
from types import SimpleNamespace

from bench.bench_readout import profile_of, report, summarise


def test_the_profile_is_per_readout_and_per_step_from_counter_deltas():
    before = {"readouts": 2, "steps": 10, "computed_tokens": 100, "cached_tokens": 1000, "to_engine_s": 1.0,
              "readout_s": 2.0, "prefix_cache_queried_tokens": 500, "prefix_cache_hit_tokens": 400}  # fmt: skip
    after = {"readouts": 10, "steps": 50, "computed_tokens": 900, "cached_tokens": 9000, "to_engine_s": 3.0,
             "readout_s": 10.0, "prefix_cache_queried_tokens": 1500, "prefix_cache_hit_tokens": 1300}  # fmt: skip
    profile = profile_of(before, after)
    assert profile["readouts"] == 8
    assert profile["engine_steps_per_readout"] == 5
    assert profile["computed_tokens_per_readout"] == 100
    assert profile["cached_tokens_per_readout"] == 1000
    assert math.isclose(profile["to_engine_s_per_step"], 2.0 / 40)
    assert profile["in_engine_s_per_step"] == 0.0
    assert profile["readout_wall_s_mean"] == 1.0
    assert math.isclose(profile["prefix_cache_hit_rate_all_requests"], 0.9)


def run(tokens_per_s: float, p50: float) -> dict:
    return {"tokens_per_s": tokens_per_s, "latency_p50_s": p50, "items_per_s": tokens_per_s / 10}


def test_ratios_are_per_shape_against_each_stock_configuration_and_averaged_over_rounds():
    profile = profile_of({}, {"readouts": 1, "steps": 5, "computed_tokens": 50})
    sidecar = [
        {"chat_scoring_on": run(40, 12), "chat_scoring_off": run(60, 8), "readout_profile": profile,
         "score_cold": run(4, 0), "score_warm": run(20, 0)},
        {"chat_scoring_on": run(60, 12), "chat_scoring_off": run(60, 8), "readout_profile": profile,
         "score_cold": run(4, 0), "score_warm": run(20, 0)},
    ]  # fmt: skip
    plugin = [{**sidecar[0], "chat_scoring_on": run(45, 11), "score_warm": run(30, 0)}]
    stock = {"chat": run(50, 10), "generative_scoring_cold": run(4, 0), "generative_scoring_warm": run(50, 0)}
    inputs = SimpleNamespace(floor_tokens=[44, 46])
    summary = summarise(
        {"sidecar": sidecar, "plugin": plugin}, {"default": [stock, stock], "same_blocks": [stock]}, inputs
    )
    ratios = summary["chat"]["ratios"]
    assert ratios["sidecar"]["default"]["tok_s_on_vs_stock"] == 1.0  # mean 50 over rounds vs 50
    assert ratios["sidecar"]["same_blocks"]["p50_off_vs_stock"] == 0.8
    assert ratios["plugin"]["default"]["tok_s_on_vs_stock"] == 0.9
    assert summary["score"]["warm"]["ratio"]["sidecar"]["default"] == 0.4
    assert summary["score"]["warm"]["ratio"]["plugin"]["same_blocks"] == 0.6
    assert summary["floor"]["block_tokens_after_answer_mean"] == 45
    args = SimpleNamespace(prompts=16, max_tokens=64, concurrency=8, pairs=48)
    text = "\n".join(report(summary, args, "now", 2))
    assert "| sidecar, scoring on | 50.0 | 12.00 | 1.00, 1.20 | 1.00, 1.20 |" in text
    assert "| vLLM + endpoint plugin, scoring on | 45.0 | 11.00 | 0.90, 1.10 | 0.90, 1.10 |" in text
    assert "| warm | sidecar | 2.00 | 5.00, 0.40 | 5.00, 0.40 |" in text
    assert "| warm | vLLM + endpoint plugin | 3.00 | 5.00, 0.60 | 5.00, 0.60 |" in text
    assert "from the vLLM + endpoint plugin's /metrics" in text


def test_the_plugin_shape_prefix_cache_counters_are_vllms_own(monkeypatch):
    """vLLM's server (plugin shape) exports vllm:prefix_cache_*, not the sidecar's see_engine_prefix_cache_tokens."""
    import httpx

    from bench.bench_readout import readout_counters

    text = (
        "# TYPE vllm:prefix_cache_queries counter\n"
        'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 120.0\n'
        "# TYPE vllm:prefix_cache_hits counter\n"
        'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0\n'
    )
    monkeypatch.setattr(httpx, "get", lambda *_, **__: SimpleNamespace(text=text))
    counters = readout_counters("http://plugin")
    assert counters == {"prefix_cache_queried_tokens": 120.0, "prefix_cache_hit_tokens": 100.0}
