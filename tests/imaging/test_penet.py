"""PENet: size, shapes, the folded stem, the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from radfusion.errors import RadfusionError
from radfusion.imaging.registry import create_model


def test_penet_50_has_28_4_million_parameters():
    model = create_model("penet_50")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 28.4e6) / 28.4e6 < 0.005
    assert model.num_features == 2048


def test_shapes_features_and_head():
    model = create_model("penet_tiny").eval()
    x = torch.randn(2, 1, 24, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, model.num_features) and logits.shape == (2, 1)
    torch.testing.assert_close(model.forward_head(features), logits)
    assert model.head.bias.item() == pytest.approx(-math.log(99))


def test_folded_stem_equals_the_three_channel_repeat():
    """The original repeats the CT channel 3 times; summing the stem kernel over its input
    channels computes the same convolution."""
    torch.manual_seed(0)
    weight3 = torch.randn(8, 3, 7, 7, 7)
    x = torch.randn(1, 1, 10, 20, 20)
    repeated = F.conv3d(x.repeat(1, 3, 1, 1, 1), weight3, stride=(1, 2, 2), padding=3)
    folded = F.conv3d(x, weight3.sum(dim=1, keepdim=True), stride=(1, 2, 2), padding=3)
    torch.testing.assert_close(folded, repeated, rtol=1e-4, atol=1e-4)
    model = create_model("penet_tiny")
    assert model.stem[0].weight.shape[1] == 1  # our stem is the folded one


def test_wrong_window_shape_and_unknown_names_are_clear_errors():
    model = create_model("penet_tiny")
    with pytest.raises(RadfusionError, match=r"expects windows shaped \[batch, 1"):
        model(torch.randn(1, 3, 24, 32, 32))
    with pytest.raises(RadfusionError, match="did you mean 'penet_50'"):
        create_model("penet50")
    with pytest.raises(RadfusionError, match="unknown PENet argument"):
        create_model("penet_tiny", depth=3)


def test_overrides_change_the_architecture():
    model = create_model("penet_tiny", num_classes=3, layers=(2, 1, 1, 1))
    assert model.head.out_features == 3 and len(model.stages[0]) == 2


def test_last_norm_of_each_block_starts_at_zero():
    model = create_model("penet_tiny")
    for stage in model.stages:
        for block in stage:
            assert torch.count_nonzero(block.norm3.weight) == 0


def _original_name(key: str) -> str:
    """Our parameter name -> the original implementation's (the inverse of the import map)."""
    import re

    key = re.sub(r"^stem\.", "in_conv.", key)
    key = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"encoders.\1.xnet_blocks.\2.", key)
    key = key.replace(".se.fc1.", ".se_block.excite.0.").replace(".se.fc2.", ".se_block.excite.2.")
    key = key.replace(".shortcut.", ".down_sample.")
    return re.sub(r"^head\.", "classifier.fc.", key)


def test_pretrained_import_of_an_original_format_checkpoint(tmp_path):
    """The Kinetics checkpoint's layout: model_state, module. prefixes, xnet_blocks, the
    original layer names, a 3-channel stem and a 600-class head."""
    from radfusion.imaging.pretrained import load_pretrained

    source = create_model("penet_tiny", in_chans=3, num_classes=600)
    state = {f"module.{_original_name(k)}": v for k, v in source.state_dict().items()}
    assert any("xnet_blocks" in k for k in state) and "module.in_conv.0.weight" in state
    torch.save({"model_state": state, "epoch": 10}, tmp_path / "kinetics.pth.tar")
    model = create_model("penet_tiny")
    report = load_pretrained(model, tmp_path / "kinetics.pth.tar")
    assert report.folded == ["stem.0.weight"]
    assert {k for k, _, _ in report.mismatched} == {"head.weight", "head.bias"}
    assert report.unexpected == [] and set(report.missing) == {"head.weight", "head.bias"}
    torch.testing.assert_close(model.stem[0].weight, source.stem[0].weight.sum(dim=1, keepdim=True))
    for key in (
        "stages.1.0.conv2.weight",
        "stages.2.0.shortcut.1.weight",
        "stages.3.0.se.fc1.weight",
    ):
        torch.testing.assert_close(model.state_dict()[key], source.state_dict()[key])


class _Evil:
    """Any Python object: a weights-only load must refuse to unpickle it."""


def test_pretrained_refuses_another_architecture_and_pickles(tmp_path):
    from radfusion.imaging.pretrained import load_pretrained

    torch.save(create_model("penet_small").state_dict(), tmp_path / "other.pth")
    with pytest.raises(RadfusionError, match="tensors fit this model"):
        load_pretrained(create_model("penet_tiny"), tmp_path / "other.pth")

    torch.save({"state_dict": {"x": _Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(RadfusionError, match="weights_only=True"):
        load_pretrained(create_model("penet_tiny"), tmp_path / "evil.pth")
    with pytest.raises(RadfusionError, match="nothing is downloaded"):
        load_pretrained(create_model("penet_tiny"), tmp_path / "absent.pth")


def test_backward_through_dropped_blocks():
    """Stochastic depth can drop every residual of a batch; backward must still work."""
    torch.manual_seed(0)
    model = create_model("penet_tiny", min_survival=0.01).train()
    x = torch.randn(1, 1, 24, 32, 32, requires_grad=True)
    for _ in range(4):
        model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_channels_last_3d_gives_the_same_outputs():
    torch.manual_seed(0)
    model = create_model("penet_tiny").eval()
    x = torch.randn(2, 1, 24, 48, 48)
    with torch.no_grad():
        reference = model(x)
        fast = model.to(memory_format=torch.channels_last_3d)(
            x.to(memory_format=torch.channels_last_3d)
        )
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


def test_zero_init_of_the_last_norm_can_be_turned_off():
    model = create_model("penet_tiny", zero_init_last_norm=False)
    assert all(torch.all(b.norm3.weight == 1) for stage in model.stages for b in stage)


@pytest.mark.parametrize("shortcut, survives", [("conv", False), ("maxpool", True)])
def test_a_one_voxel_finding_survives_a_maxpool_shortcut_only(shortcut, survives):
    """At initialisation a downsampling block is its shortcut alone (the last norm is zero).
    A strided 1x1 convolution samples even positions, so a response at an odd one vanishes;
    a max-pool keeps it, in the output cell that covers it."""
    torch.manual_seed(0)
    block = create_model("penet_tiny", shortcut=shortcut, min_survival=1.0).stages[1][0].eval()
    cin = block.conv1.in_channels
    x = torch.zeros(1, cin, 6, 8, 8)
    x[0, :, 3, 5, 1] = 1.0  # odd in every axis
    with torch.no_grad():
        out = block(x)[0]
    assert out.shape[1:] == (3, 4, 4)
    at_finding = out[:, 1, 2, 0]
    elsewhere = out.flatten(1)
    differs = (elsewhere - at_finding[:, None]).abs().amax(dim=0) > 1e-6
    if survives:  # the finding's cell stands out; every other cell is the same background
        assert differs.sum() == elsewhere.shape[1] - 1
    else:
        assert not differs.any()


def test_maxpool_shortcut_keeps_the_parameter_count_and_refuses_unknown_designs():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model("penet_small", shortcut="maxpool")) == count(
        create_model("penet_small")
    )
    with pytest.raises(RadfusionError, match="unknown PENet shortcut 'avg'"):
        create_model("penet_tiny", shortcut="avg")


def test_maxpool_shortcut_takes_the_original_designs_weights():
    original = create_model("penet_tiny").state_dict()
    pooled = create_model("penet_tiny", shortcut="maxpool")
    assert set(pooled.state_dict()) == set(original)
    pooled.load_state_dict(original)  # strict: every key and shape fits


def test_batchnorm_design_replaces_every_groupnorm_and_keeps_the_shapes():
    group, batch = create_model("penet_tiny"), create_model("penet_tiny", norm="batch")
    kinds = lambda m: {type(x) for x in m.modules()}  # noqa: E731
    assert nn.GroupNorm in kinds(group) and nn.BatchNorm3d not in kinds(group)
    assert nn.BatchNorm3d in kinds(batch) and nn.GroupNorm not in kinds(batch)
    # Same convolutions, same parameter count: only the normalisation differs.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(group) == count(batch)
    x = torch.randn(2, 1, 24, 32, 32)
    assert batch.eval()(x).shape == (2, 1)
    with pytest.raises(RadfusionError, match="unknown PENet norm 'layer'"):
        create_model("penet_tiny", norm="layer")


def test_batchnorm_design_normalises_across_the_batch_not_within_a_window():
    """Scaling one window's intensities: GroupNorm's stem output does not change (each window
    is normalised by its own statistics), BatchNorm's does (by the batch's)."""
    x = torch.rand(2, 1, 8, 16, 16)
    y = x.clone()
    y[0] *= 3
    for norm, same in (("group", True), ("batch", False)):
        torch.manual_seed(0)
        stem = create_model("penet_tiny", norm=norm).stem[:2].train()
        a, b = stem(x)[0], stem(y)[0]
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3) is same, norm  # GN: up to eps
