"""Training config: presets, overrides, validation, round trip."""

import pytest

from training.config import ConfigError, config_from_dict, dump_config, load_config, preset_names


def test_presets_load_with_the_papers_values():
    assert {"paper", "cpu-smoke"} <= set(preset_names())
    paper = load_config("paper")
    assert (paper.run.cycles, paper.rl.steps, paper.rl.prompts_per_step, paper.rl.num_generations) == (15, 10, 16, 8)
    assert (paper.rl.kl_coef, paper.rl.temperature, paper.rl.top_p, paper.rl.top_k) == (0.01, 0.8, 0.9, 25)
    assert (paper.rl.learning_rate, paper.sft.learning_rate, paper.sft.max_samples) == (1e-6, 2e-6, 400)
    assert (paper.reward.w_quality, paper.reward.w_calibration, paper.reward.calibration_gamma) == (0.7, 0.3, 2.0)
    assert paper.data.window_size == 160 and paper.judge.model == "gpt-5.4"


def test_overrides_are_typed():
    config = load_config(
        "cpu-smoke", ["rl.steps=3", "data.window_size=6", "judge.temperature=null", "rl.use_vllm=true"]
    )
    assert config.rl.steps == 3 and config.data.window_size == 6
    assert config.judge.temperature is None and config.rl.use_vllm is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.stepz=3", "unknown key"),
        ("rl.steps=three", "cannot read"),
        ("rl.steps=3", "window_size"),
        ("judge.token_limit_param=max_len", "token_limit_param"),
        ("rl.per_device_batch=3", "per_device_batch"),
        ("rl.checkpoint_every=-1", "checkpoint_every"),
        ("rl.vllm_gpu_memory_utilization=1", "trainer shares the GPU"),
        ("steps", "key=value"),
    ],
)
def test_bad_configs_say_what_to_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cpu-smoke", [override])


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="cpu-smoke"):
        load_config("no-such-preset")


def test_resolved_config_round_trips():
    import yaml

    config = load_config("paper", ["run.cycles=2"])
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config
