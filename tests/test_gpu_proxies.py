"""CPU stand-ins for the GPU checks of tests/test_gpu.py, so that their tolerances are exercised in CI too.

channels_last on the CPU takes other kernels than the contiguous layout (another summation order), as the GPU does:
with the gradient rule of :func:`test_gpu.grad_errors` every tiny network agrees within the GPU test's 1e-3, while the
plain per-tensor relative error fails on W-Net's conv biases before BatchNorm (true gradient exactly zero;
measured 8.9 on `encoder.0.down.1.bias` of the tiny W-Net before issue 24's resampler change).
"""
import pytest
import test_gpu
import torch

pytestmark = pytest.mark.usefixtures('one_thread')
CPU_CASES = [c for c in test_gpu.CASES if c[2] == 4]


def _layout_grads(name, module, scale):
    net, x = test_gpu._net_and_input(name, module, scale)
    out_a, grads_a = test_gpu._forward_backward(net, x)
    net = net.to(memory_format=torch.channels_last)
    out_b, grads_b = test_gpu._forward_backward(net, x.contiguous(memory_format=torch.channels_last))
    return out_a, grads_a, out_b, grads_b


@pytest.mark.parametrize('name,module,scale', CPU_CASES, ids=lambda c: str(c) if not hasattr(c, '__name__') else '')
def test_channels_last_cpu_gradients_agree_under_the_gpu_rule(name, module, scale):
    out_a, grads_a, out_b, grads_b = _layout_grads(name, module, scale)
    assert (out_a - out_b).abs().max().item() <= 1e-4
    errors = test_gpu.grad_errors(grads_b, grads_a)
    assert max(errors.values()) <= 1e-3, max(errors.items(), key=lambda kv: kv[1])


def test_grad_errors_still_catches_a_wrong_gradient():
    ref = {'a': torch.ones(10), 'b': torch.zeros(3)}
    assert max(test_gpu.grad_errors({'a': torch.ones(10), 'b': torch.full((3, ), 1e-9)}, ref).values()) < 1e-3
    wrong = {'a': torch.ones(10) * 1.01, 'b': torch.zeros(3)}
    assert test_gpu.grad_errors(wrong, ref)['a'] > 1e-3
    assert test_gpu.grad_errors({'a': torch.ones(10), 'b': torch.full((3, ), 0.1)}, ref)['b'] > 1e-3
