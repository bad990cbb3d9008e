"""Trained deltas: float16 or int8 differences that rebuild the same weights, bit for bit, on their base."""

import pytest
import torch
from safetensors.torch import save_file

from selfeval.card import Lineage, ModelCard, load_card
from selfeval.delta import DeltaError, build_from_delta, export_delta, sha256_of

CARD = ModelCard("tiny-distilled", "chat", tuple(range(48, 58)), Lineage(base_model="tiny"))


@pytest.fixture
def base_dir(tmp_path):
    torch.manual_seed(0)
    base = tmp_path / "base"
    base.mkdir()
    tensors = {"layers.0.w": torch.randn(8, 4), "layers.1.w": torch.randn(8, 4), "norm.weight": torch.ones(4)}
    save_file(tensors, str(base / "model.safetensors"))
    (base / "config.json").write_text("{}")
    (base / "see_card.json").write_text("{}")  # the base's card must not be carried over
    return base


def _trained(base_dir):
    from safetensors.torch import load_file

    base = load_file(str(base_dir / "model.safetensors"))
    trained = {"layers.1.w": base["layers.1.w"] + 1e-3 * torch.randn(8, 4), "norm.weight": base["norm.weight"] * 1.01}
    return base, trained


def test_delta_rebuilds_the_trained_weights_deterministically(base_dir, tmp_path):
    base, trained = _trained(base_dir)
    delta = tmp_path / "delta.safetensors"
    export_delta(base, trained, list(trained), delta, sha256_of(base_dir / "model.safetensors"))
    first = build_from_delta(base_dir, delta, tmp_path / "out1", CARD)
    second = build_from_delta(base_dir, delta, tmp_path / "out2", CARD, expected_sha256=first)
    assert first == second == sha256_of(tmp_path / "out2" / "model.safetensors")
    from safetensors.torch import load_file

    rebuilt = load_file(str(tmp_path / "out1" / "model.safetensors"))
    assert torch.equal(rebuilt["layers.0.w"], base["layers.0.w"])  # untouched tensors are the base's, exactly
    assert torch.allclose(rebuilt["layers.1.w"], trained["layers.1.w"], atol=1e-6)
    assert not torch.equal(rebuilt["layers.1.w"], base["layers.1.w"])
    assert load_card(tmp_path / "out1").model_name == "tiny-distilled"
    assert (tmp_path / "out1" / "config.json").is_file()


def test_a_delta_for_another_base_is_refused(base_dir, tmp_path):
    base, trained = _trained(base_dir)
    delta = tmp_path / "delta.safetensors"
    export_delta(base, trained, list(trained), delta, "0" * 64)
    with pytest.raises(DeltaError, match="was trained from base weights"):
        build_from_delta(base_dir, delta, tmp_path / "out", CARD)
    assert not (tmp_path / "out").exists()


def test_a_pinned_hash_that_does_not_match_leaves_nothing(base_dir, tmp_path):
    base, trained = _trained(base_dir)
    delta = tmp_path / "delta.safetensors"
    export_delta(base, trained, list(trained), delta, sha256_of(base_dir / "model.safetensors"))
    with pytest.raises(DeltaError, match="expected"):
        build_from_delta(base_dir, delta, tmp_path / "out", CARD, expected_sha256="f" * 64)
    assert not (tmp_path / "out").exists()


def test_a_delta_whose_shape_does_not_fit_is_refused(base_dir, tmp_path):
    base, _ = _trained(base_dir)
    delta = tmp_path / "delta.safetensors"
    with pytest.raises(DeltaError, match="shape"):
        export_delta(base, {"norm.weight": torch.ones(5)}, ["norm.weight"], delta, "x")


def test_an_int8_delta_rebuilds_the_same_weights_every_time_within_its_rounding(base_dir, tmp_path):
    from safetensors.torch import load_file

    base, trained = _trained(base_dir)
    trained["layers.0.w"] = base["layers.0.w"].clone()  # an unchanged tensor: scale 1, all zeros, exact
    int8 = tmp_path / "int8.safetensors"
    export_delta(base, trained, list(trained), int8, sha256_of(base_dir / "model.safetensors"), encoding="int8")
    stored = load_file(str(int8))
    assert stored["layers.1.w"].dtype == torch.int8 and stored["scale::layers.1.w"].shape == (8,)
    first = build_from_delta(base_dir, int8, tmp_path / "out1", CARD)
    assert build_from_delta(base_dir, int8, tmp_path / "out2", CARD, expected_sha256=first) == first
    rebuilt = load_file(str(tmp_path / "out1" / "model.safetensors"))
    change = trained["layers.1.w"] - base["layers.1.w"]
    bound = change.abs().amax(dim=1, keepdim=True) / 254 + 1e-7  # half a step of each row's scale
    assert ((rebuilt["layers.1.w"] - trained["layers.1.w"]).abs() <= bound).all()
    assert torch.equal(rebuilt["layers.0.w"], base["layers.0.w"])
    assert torch.allclose(rebuilt["norm.weight"], trained["norm.weight"], atol=1e-4)


def test_an_int8_delta_of_a_layer_sized_matrix_takes_about_half_the_bytes(tmp_path):
    base = {"w": torch.zeros(576, 1536)}
    trained = {"w": 1e-3 * torch.randn(576, 1536)}
    sizes = {}
    for encoding in ("float16", "int8"):
        path = tmp_path / f"{encoding}.safetensors"
        export_delta(base, trained, ["w"], path, "x", encoding=encoding)
        sizes[encoding] = path.stat().st_size
    assert sizes["int8"] < 0.51 * sizes["float16"], sizes


def test_an_unknown_encoding_is_refused(base_dir, tmp_path):
    base, trained = _trained(base_dir)
    with pytest.raises(DeltaError, match="unknown delta encoding"):
        export_delta(base, trained, list(trained), tmp_path / "d.safetensors", "x", encoding="int4")
