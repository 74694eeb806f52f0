"""GPU checks (``-m gpu``; ``scripts/gpu_check.sh`` runs them): every network on CUDA agrees with the CPU.

Skipped, with the reason, on a machine without a CUDA GPU (CI's): they are part of the suite so that they are collected,
linted and kept importable, and they run on the first GPU machine with ``bash scripts/gpu_check.sh``.

Tolerances, and why:

- fp32 on the GPU vs fp32 on the CPU, with TF32 switched off (``allow_tf32 = False`` for matmuls and cuDNN convs, so
  both sides round to float32): the two differ only in summation order, a few float32 ulps per op (about 1e-7 relative)
  growing with depth; max |diff| <= 1e-4 on outputs in [0, 1] and relative L2 error <= 1e-3 on every parameter
  gradient leave two orders of magnitude of room and still catch any real disagreement (a wrong kernel path, a
  device-dependent branch, a missing ``.to(device)``), which shows up at 1e-2 or more. A gradient is compared relative
  to ``max(its norm, 1e-3 x the largest gradient norm of the network)`` (:func:`grad_errors`): some gradients are
  exactly zero in exact arithmetic (the bias of a conv right before BatchNorm: BatchNorm subtracts it again), so on
  either device they are pure rounding noise, and their error relative to themselves means nothing (0.9-8.4 measured
  between channels_last and contiguous on the CPU); relative to the network's gradients that noise is ~1e-7.
- bf16 autocast + channels_last vs the CPU's fp32: bfloat16 keeps 8 significant bits (unit roundoff 2^-9, 0.2%); over
  the tens of rounded layers of a tiny network the errors add up like a random walk to about 1%; the test allows a
  relative L2 error of 3% on the output (a wrong result, e.g. a layout bug under channels_last, is off by 30% or more).
  LAAT's region selection (eq. 10's top-k) is discrete: near-equal region scores of a random tiny network flip under
  bf16 (relative errors of 4-7% measured on the CPU with bf16 autocast, 1% with the fp32 choice of regions), so the
  bf16 pass replays the regions the fp32 pass chose (:func:`replayed_regions`); the region scores themselves are
  computed in fp32 with autocast off (``laat_arch._attention_column_sums``).
- SDPA vs the explicit attention on the GPU (fp32, TF32 off): the same maths in another order, max |diff| <= 1e-5.
"""
import contextlib
import pytest
import torch

from fsr_tools import baselines, speed

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason='no CUDA GPU on this machine')]


def _cases():
    from fsr_utils import plugin
    plugin.load()
    cases = [(name, module, scale) for name, module in speed.discover() for scale in (4, 8)]
    cases += [(name, baselines, 4) for name in baselines.BASELINES]
    return cases


CASES = _cases()


@pytest.fixture(autouse=True)
def no_tf32():
    if CUDA:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    else:
        yield


def _net_and_input(name, module, scale):
    kwargs = speed.network_kwargs(module, scale, 'tiny', name)
    torch.manual_seed(0)
    net = speed.build(name, kwargs).train()
    s = speed.lr_size(net, 32, scale)
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(1))
    return net, x


def _output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _forward_backward(net, x, autocast=False):
    net.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = _output(net(x))
    out.float().square().mean().backward()
    grads = {k: p.grad.detach().float().cpu() for k, p in net.named_parameters() if p.grad is not None}
    return out.detach().float().cpu(), grads


@contextlib.contextmanager
def replayed_regions():
    """Record LAAT's region choices (``RSA.select``) while ``state['mode'] == 'record'`` and replay them, in the same
    order, once it is set to ``'replay'``; no effect on networks without region selection."""
    from fsr_arch import laat_arch
    original = laat_arch.RSA.select
    state = {'mode': 'record', 'recorded': [], 'next': 0}

    def select(self, scores, h, w):
        if state['mode'] == 'record':
            index = original(self, scores, h, w)
            state['recorded'].append(index)
            return index
        index = state['recorded'][state['next']]
        state['next'] += 1
        return index.to(scores.device)

    laat_arch.RSA.select = select
    try:
        yield state
    finally:
        laat_arch.RSA.select = original


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def grad_errors(grads, reference):
    """``{name: |g - ref| / max(|ref|, 1e-3 * max_k |ref_k|)}`` (L2 norms) for every parameter gradient."""
    assert grads.keys() == reference.keys()
    largest = max(g.norm().item() for g in reference.values())
    return {
        k: ((grads[k] - reference[k]).norm() / max(reference[k].norm().item(), 1e-3 * largest, 1e-30)).item()
        for k in reference
    }


@pytest.mark.parametrize('name,module,scale', CASES, ids=lambda c: str(c) if not hasattr(c, '__name__') else '')
def test_fp32_cuda_matches_cpu(name, module, scale):
    net, x = _net_and_input(name, module, scale)
    out_cpu, grads_cpu = _forward_backward(net, x)
    out_gpu, grads_gpu = _forward_backward(net.cuda(), x.cuda())
    assert (out_gpu - out_cpu).abs().max().item() <= 1e-4
    errors = grad_errors(grads_gpu, grads_cpu)
    assert max(errors.values()) <= 1e-3, max(errors.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize('name,module,scale', CASES, ids=lambda c: str(c) if not hasattr(c, '__name__') else '')
def test_bf16_channels_last_cuda_matches_cpu(name, module, scale):
    net, x = _net_and_input(name, module, scale)
    with replayed_regions() as regions:
        out_cpu, _ = _forward_backward(net, x)
        regions['mode'] = 'replay'
        net = net.cuda().to(memory_format=torch.channels_last)
        out_gpu, grads = _forward_backward(net, x.cuda().to(memory_format=torch.channels_last), autocast=True)
    assert _rel(out_gpu, out_cpu) <= 3e-2
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize(
    'name,module,scale', [c for c in CASES if c[1] is not baselines],
    ids=lambda c: str(c) if not hasattr(c, '__name__') else '')
def test_sdpa_equals_explicit_attention_on_cuda(name, module, scale):
    net, x = _net_and_input(name, module, scale)
    switches = [m for m in net.modules() if hasattr(m, 'use_sdpa')]
    if not switches:
        pytest.skip(f'{name} has no use_sdpa switch')
    net, x = net.cuda().eval(), x.cuda()
    with torch.no_grad():
        for m in switches:
            m.use_sdpa = True
        fused = _output(net(x))
        for m in switches:
            m.use_sdpa = False
        explicit = _output(net(x))
    assert (fused - explicit).abs().max().item() <= 1e-5
