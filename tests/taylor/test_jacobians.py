import pytest
import torch

from ntaylor_lib.taylor.jacobians import jacrev_jacobian, reference_jacobian, scale_jacobian
from tests.taylor.nets import all_scales, small_nets


@pytest.mark.parametrize("name,net,x", small_nets())
@pytest.mark.parametrize("mode", ["auto", "forward", "reverse"])
def test_capture_matches_jacrev_at_every_scale(name, net, x, mode):
    for scale in all_scales(net):
        expected = jacrev_jacobian(net, x, scale)
        got = scale_jacobian(net, x, scale, mode)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=f"{name} {scale.label} {mode}")


@pytest.mark.parametrize("name,net,x", small_nets())
def test_library_reference_matches_jacrev(name, net, x):
    for scale in all_scales(net)[:3]:
        torch.testing.assert_close(reference_jacobian(net, x[:2], scale), jacrev_jacobian(net, x[:2], scale))


@pytest.mark.parametrize("kernel,dilation,stride,padding",
                         [(5, 1, 1, 2), (3, 2, 1, 1), (3, 1, 2, 0), ((3, 2), (1, 2), (2, 1), (1, 0))])
def test_unfold_patches_matches_torch_unfold(kernel, dilation, stride, padding):
    import torch.nn.functional as F
    from torch import nn

    from ntaylor_lib.taylor.jacobians import unfold_patches

    conv = nn.Conv2d(3, 4, kernel, dilation=dilation, stride=stride, padding=padding)
    x = torch.randn(2, 3, 9, 8)
    expected = F.pad(F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride), (0, 0, 0, 1), value=1.0)
    torch.testing.assert_close(unfold_patches(conv, x), expected, rtol=0, atol=0)
