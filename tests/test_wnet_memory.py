"""W-Net's memory saving (``use_checkpoint``: strip-wise W path + checkpointing) keeps the math (issue 16 part 1).

Saving on vs off on a small input: outputs, every parameter gradient and the BatchNorm running statistics agree to
1e-10 in float64, with strips small enough that every W-path map is cut into several strips (so halos and the global
statistics are exercised). Float64: in float32 the two orders of summation differ by rounding that BatchNorm's small
batch variances can amplify to ~1e-4 in some gradients; float64 separates that rounding from a real difference.
"""
import pytest
import torch

from fsr_arch.wnet_arch import TINY_CONFIG, WNet

pytestmark = pytest.mark.usefixtures('one_thread')


def _step(net, lq):
    sr, parsing = net(lq, return_parsing=True)
    (sr.square().mean() + parsing.square().mean()).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    return sr.detach(), parsing.detach(), grads, buffers


@pytest.mark.parametrize('levels,tile_pixels,norm', [(2, 1536, 'batch'), (2, 0, 'batch'), (2, 1536, 'none')])
def test_memory_saving_same_outputs_and_gradients(levels, tile_pixels, norm):
    torch.manual_seed(0)
    cfg = {**TINY_CONFIG, 'num_up_levels': levels, 'resample_norm': norm}
    plain = WNet(upscale=4, **cfg).double().train()
    saving = WNet(upscale=4, **cfg, use_checkpoint=True, checkpoint_tile_pixels=tile_pixels).double().train()
    saving.load_state_dict(plain.state_dict())
    lq = torch.rand(2, 3, 8, 12, dtype=torch.float64)  # HR 32x48; W path 64x96 (4 strips of 16 rows), 128x192 (16 of 8)
    ref, got = _step(plain, lq), _step(saving, lq)
    assert (ref[0] - got[0]).abs().max() < 1e-10 and (ref[1] - got[1]).abs().max() < 1e-10
    worst = max((ref[2][n] - got[2][n]).abs().max().item() for n in ref[2])
    assert worst < 1e-10, worst
    for name, buf in ref[3].items():  # BatchNorm running statistics updated once, as without the saving
        torch.testing.assert_close(got[3][name], buf, rtol=0, atol=1e-10)
    # a second step (running statistics in use for nothing else, but the counter must advance by one per step)
    saving.zero_grad()
    _step(saving, lq)
    assert all(b.item() == 2 for n, b in saving.named_buffers() if n.endswith('num_batches_tracked'))
    assert any(n.endswith('num_batches_tracked') for n, _ in saving.named_buffers()) == (norm == 'batch')


def test_memory_saving_is_off_at_inference():
    torch.manual_seed(0)
    net = WNet(upscale=4, **TINY_CONFIG, use_checkpoint=True, checkpoint_tile_pixels=64).eval()
    lq = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = net(lq)
    net.use_checkpoint = False
    with torch.no_grad():
        assert torch.equal(net(lq), out)
