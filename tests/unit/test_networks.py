"""Member architectures: MONAI networks with the published sizes, one logit out."""

from __future__ import annotations

import math

import pytest
import torch

from operators.networks import (ARCHITECTURES, ClinicalFCNN, build_network, check_hyperparameters,
                                count_parameters)


def test_efficientnet_b0_3d_has_published_parameter_count():
    # eTSC-Net paper: 4.69 M trainable parameters (MONAI EfficientNetBN b0, 3D, 1 in, 1 out).
    n = count_parameters(build_network("efficientnet3d-b0"))
    assert round(n / 1e6, 2) == 4.69


def test_resnet3d_34_full_size_structure_and_parameter_count():
    net = build_network("resnet3d-34")
    blocks = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 4, 6, 3]
    assert net.fc.out_features == 1 and net.fc.in_features == 512
    # 3D ResNet-34, basic blocks, shortcut B, 1 input channel: 63.47 M parameters.
    assert 63.0e6 < count_parameters(net) < 64.0e6


def test_clinical_fcnn_layer_widths():
    net = ClinicalFCNN()
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    widths = [linear[0].in_features] + [m.out_features for m in linear]
    assert widths == [4, 1024, 512, 128, 64, 32, 16, 1]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 6


@pytest.mark.parametrize("architecture,hp,shape", [
    ("resnet3d-34", {"width_factor": 0.0625}, (2, 1, 16, 16, 16)),
    ("efficientnet3d-b0", {"width_coefficient": 0.25, "depth_coefficient": 0.25}, (2, 1, 32, 32, 32)),
    ("clinical-fcnn", {}, (2, 4)),
])
def test_each_architecture_outputs_one_logit_per_sample(architecture, hp, shape):
    net = build_network(architecture, hp).eval()
    with torch.inference_mode():
        out = net(torch.rand(*shape))
    assert out.shape == (2, 1)
    assert torch.isfinite(out).all()


def test_reduced_width_shrinks_resnet():
    full = count_parameters(build_network("resnet3d-34"))
    small = count_parameters(build_network("resnet3d-34", {"width_factor": 0.25}))
    assert small < full / 10


def test_fcnn_standardises_its_input_with_saved_buffers():
    net = ClinicalFCNN().eval()
    assert {"input_mean", "input_std"} <= set(net.state_dict())
    x = torch.tensor([[24.0, 48.0, 1.0, 0.0]])
    with torch.inference_mode():
        before = net(x)
        net.input_mean.copy_(torch.tensor([24.0, 48.0, 1.0, 0.0]))
        after = net(x)
    assert not torch.allclose(before, after)


def test_fcnn_log_ages_feeds_log_months_to_the_standardisation():
    torch.manual_seed(0)
    plain = ClinicalFCNN(hidden=[8, 4]).eval()
    torch.manual_seed(0)
    logged = build_network("clinical-fcnn", {"hidden": [8, 4], "log_ages": True}).eval()
    x = torch.tensor([[24.0, 48.0, 1.0, 0.0], [3.0, 120.0, 0.0, 1.0]])
    expected = torch.tensor([[math.log(25.0), math.log(49.0), 1.0, 0.0], [math.log(4.0), math.log(121.0), 0.0, 1.0]])
    assert torch.allclose(logged.transform_inputs(x), expected)
    assert torch.equal(plain.transform_inputs(x), x)
    with torch.inference_mode():
        assert torch.allclose(logged(x), plain(expected))  # same weights: log first, then the same layers
    with pytest.raises(ValueError, match="log_ages"):
        build_network("clinical-fcnn", {"log_ages": "yes"})


def test_unknown_architecture_or_hyperparameter_is_rejected():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("vgg3d")
    with pytest.raises(ValueError, match="width_factr"):
        check_hyperparameters("resnet3d-34", {"width_factr": 0.5})
    assert set(ARCHITECTURES) == {"resnet3d-34", "efficientnet3d-b0", "clinical-fcnn"}
