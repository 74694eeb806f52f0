"""Generic SR networks that BasicSR ships, configured to be compared with the face networks on the same face data.

A user choosing a face SR network asks whether a face-specific one beats a generic one of the same cost. These are the
generic networks of ``basicsr.archs`` that ``fsr-speed`` and the demo's main job put beside the face networks. Nothing
here is a new network: the classes are BasicSR's own (``EDSR``, ``RCAN``, ``SwinIR``), built from the constructor
arguments below through BasicSR's ``ARCH_REGISTRY``, exactly as an option file's ``network_g`` would.

- ``paper``: each generic network's published configuration (EDSR's baseline model of Lim et al. 2017: 16 blocks,
  64 channels; RCAN of Zhang et al. 2018: 10 groups of 20 blocks, 64 channels; SwinIR's classical SR model of Liang et
  al. 2021: 6 RSTBs of depth 6, 180 channels, window 8). Their sizes (1.5 M / 15.6 M / 11.9 M parameters) bracket the
  face networks' paper configurations (8-14 M), so the comparison at paper size is at a similar budget.
- ``demo``: widths chosen so that the FLOPs per 128x128 face (x4, 32x32 LR input) fall inside the range of the demo face
  networks (``options/demo/``: 0.6-3.8 GFLOPs, median about 1.9), i.e. at the same cost as the face networks they are
  compared with; the counts are in ``docs/speed_cpu.md`` (``fsr-speed --config demo``). The matching is by FLOPs, not
  parameters: on the CPU the training time per iteration follows the FLOPs.
- ``tiny``: the smallest working configuration, for tests; SwinIR's window is 4 there, so that the tiny faces of
  ``fsr-speed --config tiny`` (32x32 HR: a 4x4 LR input at x8) are one whole window.

The option files ``options/baselines/train_<net>_x4.yml`` (paper) and ``options/demo/train_<net>_demo_x4.yml``
(demo) use the same arguments; a test checks that they agree with this module.
"""

__all__ = ['BASELINES', 'baseline_kwargs', 'size_multiple']

_SWINIR_COMMON = dict(in_chans=3, img_range=1., window_size=8, mlp_ratio=2., resi_connection='1conv')

# name -> config -> constructor arguments (without ``upscale``)
BASELINES = {
    'EDSR': {
        'paper': dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, res_scale=1.),
        'demo': dict(num_in_ch=3, num_out_ch=3, num_feat=40, num_block=8, res_scale=1.),
        'tiny': dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, res_scale=1.),
    },
    'RCAN': {
        'paper': dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_group=10, num_block=20, squeeze_factor=16),
        'demo': dict(num_in_ch=3, num_out_ch=3, num_feat=40, num_group=3, num_block=4, squeeze_factor=8),
        'tiny': dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_group=1, num_block=1, squeeze_factor=4),
    },
    'SwinIR': {
        'paper':
        dict(img_size=64, depths=[6] * 6, embed_dim=180, num_heads=[6] * 6, upsampler='pixelshuffle', **_SWINIR_COMMON),
        'demo':
        dict(img_size=32, depths=[2, 2], embed_dim=32, num_heads=[2, 2], upsampler='pixelshuffle', **_SWINIR_COMMON),
        'tiny':
        dict(
            _SWINIR_COMMON,
            img_size=8,
            depths=[1],
            embed_dim=8,
            num_heads=[1],
            upsampler='pixelshuffledirect',
            window_size=4),
    },
}


def baseline_kwargs(name, scale, config='paper'):
    """Constructor arguments of a generic BasicSR network for ``scale`` (x4 or x8) and ``config``.

    Args:
        name (str): ``EDSR``, ``RCAN`` or ``SwinIR``.
        scale (int): Upscaling factor.
        config (str): ``paper``, ``demo`` or ``tiny``.
    """
    if name not in BASELINES:
        raise KeyError(f'unknown baseline {name!r}; known: {sorted(BASELINES)}')
    if config not in BASELINES[name]:
        raise KeyError(f'baseline {name} has no {config!r} configuration; known: {sorted(BASELINES[name])}')
    kwargs = dict(BASELINES[name][config])
    kwargs['upscale'] = scale
    return kwargs


def size_multiple(name, kwargs):
    """The multiple that LR heights and widths must be for network ``name`` built with ``kwargs`` (1: any size).

    BasicSR's ``SwinIR`` splits its features into ``window_size`` x ``window_size`` windows without padding, so its
    input must be whole windows (``fsr-speed`` rounds its LR input up to it, ``fsr-benchmark`` pads the LR face and
    crops the output); EDSR and RCAN take any size.
    """
    if name == 'SwinIR':
        return int(kwargs.get('window_size', 7))  # BasicSR's default window
    return 1
