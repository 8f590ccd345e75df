"""The answer key's shape functions agree with real nn.Conv2d / nn.MaxPool2d; its Net is the lecture's."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from autograder import reference

SIZES = [1, 2, 3, 4, 5, 7, 8, 13, 28]
KERNELS = [1, 2, 3, 4]
STRIDES = [1, 2, 3]
PADDINGS = [0, 1, 2]
DILATIONS = [1, 2]


@pytest.fixture(scope="module")
def ref(assignment):
    return reference.load(assignment)


def torch_side(layer, h, w):
    """The output (h, w) of a real layer, or None where PyTorch refuses the configuration."""
    try:
        return tuple(layer(torch.zeros(1, 1, h, w)).shape[-2:])
    except RuntimeError:
        return None


def agrees(fn, expected, *args, **kwargs):
    if expected is None:
        with pytest.raises(ValueError):
            fn(*args, **kwargs)
    else:
        assert fn(*args, **kwargs) == expected, (args, kwargs)


def test_conv_matches_torch_on_a_grid(ref):
    checked = 0
    with torch.no_grad():
        for n, k, s, p, d in itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS):
            out = torch_side(nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d), n, n)
            agrees(ref.conv2d_output_size, None if out is None else out[0], n, k, stride=s, padding=p, dilation=d)
            checked += 1
    assert checked == len(SIZES) * len(KERNELS) * len(STRIDES) * len(PADDINGS) * len(DILATIONS)


def test_pool_matches_torch_on_a_grid(ref):
    with torch.no_grad():
        for n, k, s, p, d, ceil in itertools.product(SIZES, KERNELS, [None, *STRIDES], PADDINGS, DILATIONS,
                                                     [False, True]):
            layer = nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
            out = torch_side(layer, n, n)
            agrees(ref.pool2d_output_size, None if out is None else out[0], n, k, stride=s, padding=p,
                   dilation=d, ceil_mode=ceil)


@pytest.mark.parametrize("h, w, k, s, p", [(28, 20, (3, 5), (1, 2), (0, 1)), (13, 7, 3, (2, 1), 1), (9, 30, (2, 4), 3, 0)])
def test_pairs_match_torch(ref, h, w, k, s, p):
    with torch.no_grad():
        assert ref.conv2d_output_size((h, w), k, stride=s, padding=p) == torch_side(nn.Conv2d(1, 1, k, s, p), h, w)
        pool = nn.MaxPool2d(k, s, ceil_mode=True)
        assert ref.pool2d_output_size((h, w), k, stride=s, ceil_mode=True) == torch_side(pool, h, w)


@pytest.mark.parametrize("args", [(0, 3), (28, 0), (28, 3, 0), (28, 3, 1, -1), (28, 3, 1, 0, 0), ("28", 3),
                                  (28.0, 3), (True, 3), ((28, 28, 28), 3), (2, 3)])
def test_invalid_arguments_raise_value_error(ref, args):
    with pytest.raises(ValueError):
        ref.conv2d_output_size(*args)
    with pytest.raises(ValueError):
        ref.pool2d_output_size(*args)


def test_int_in_int_out_pair_in_pair_out(ref):
    assert ref.conv2d_output_size(28, 3) == 26
    assert ref.conv2d_output_size((28, 28), 3) == (26, 26)
    assert ref.pool2d_output_size(24, (2, 2)) == (12, 12)


def test_reference_net_is_the_lecture_net(ref):
    torch.manual_seed(0)
    net = ref.Net()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 7175
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {"conv1.weight": (2, 1, 3, 3), "conv1.bias": (2,), "conv2.weight": (3, 2, 3, 3),
                      "conv2.bias": (3,), "fc1.weight": (16, 432), "fc1.bias": (16,), "fc2.weight": (10, 16),
                      "fc2.bias": (10,)}
    assert isinstance(net.pool, nn.MaxPool2d) and net.pool.kernel_size == 2 and net.pool.stride == 2
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


def test_reference_forward_is_relu_conv_conv_pool_fc_fc(ref):
    """The lecture's order, written out with functional ops: catches a reordered or missing ReLU."""
    torch.manual_seed(1)
    net = ref.Net()
    x = torch.randn(3, 1, 28, 28)
    f = torch.nn.functional
    h = f.max_pool2d(f.relu(f.conv2d(f.relu(f.conv2d(x, net.conv1.weight, net.conv1.bias)), net.conv2.weight,
                                     net.conv2.bias)), 2, 2)
    h = f.relu(f.linear(h.flatten(1), net.fc1.weight, net.fc1.bias))
    expected = f.log_softmax(f.linear(h, net.fc2.weight, net.fc2.bias), dim=1)
    assert torch.allclose(net(x), expected, atol=1e-6)
