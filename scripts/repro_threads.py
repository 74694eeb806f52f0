#!/usr/bin/env python
"""What is bit-reproducible on the CPU: a tiny TANet trained 5 Adam steps with 1, 2 and 4 threads.

    OMP_NUM_THREADS=4 python scripts/repro_threads.py

The same thread count twice gives bit-identical outputs; different thread counts split float sums differently and give
outputs that differ in the last bits; over a long training such differences can add up to different PSNRs.
"""
import os
import sys
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fsr_utils import compat  # noqa: E402

compat.install_torchvision_shim()

from fsr_arch.tanet_arch import TINY_CONFIG, TANet  # noqa: E402


def run(threads, steps=5):
    """The output of a tiny TANet after ``steps`` Adam steps on fixed random data, with ``threads`` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = TANet(**TINY_CONFIG, upscale=4)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 128, 128, generator=g)
    for _ in range(steps):
        opt.zero_grad()
        (net(x) - y).abs().mean().backward()
        opt.step()
    with torch.no_grad():
        return net(x)


def main():
    ref = run(1)
    for threads in (1, 2, 4):
        out = run(threads)
        print(f'1 vs {threads} thread(s): bit-identical {torch.equal(ref, out)}, '
              f'max |diff| {(ref - out).abs().max().item():.3g}')


if __name__ == '__main__':
    main()
