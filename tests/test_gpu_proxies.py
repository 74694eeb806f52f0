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


@pytest.mark.parametrize('name,module,scale', CPU_CASES, ids=lambda c: str(c) if not hasattr(c, '__name__') else '')
def test_bf16_autocast_cpu_within_the_gpu_tolerance(name, module, scale):
    """The GPU test's bf16 rule (3% relative L2 on the output, fp32 region choices replayed) holds with the CPU's bf16
    autocast too; without the replay LAAT's top-k flips give 4-7% (measured), which is why the replay exists."""
    net, x = test_gpu._net_and_input(name, module, scale)
    with test_gpu.replayed_regions() as regions:
        out_fp32, _ = test_gpu._forward_backward(net, x)
        regions['mode'] = 'replay'
        out_bf16, grads = test_gpu._forward_backward(net, x, autocast=True)
    assert test_gpu._rel(out_bf16, out_fp32) <= 3e-2
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_laat_region_scores_stay_fp32_under_autocast():
    from fsr_arch.laat_arch import _attention_column_sums
    q, k = torch.randn(2, 2, 16, 8), torch.randn(2, 2, 16, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cols = _attention_column_sums(q, k, block_rows=5)
    expected = torch.softmax(q.double() @ k.double().transpose(-2, -1) / 8**0.5, dim=-1).sum(dim=2)
    assert cols.dtype == torch.float32
    assert torch.allclose(cols.double(), expected, atol=1e-5)  # bf16 matmuls would be off by ~1e-2
