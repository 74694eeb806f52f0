"""Named evaluation protocols for PSNR and SSIM (``fsr-benchmark --protocol NAME``).

Published face SR figures differ by protocol by more than the methods differ: PSNR on the Y channel is 1-2 dB
above PSNR on RGB for the same faces, and the crop border, the colour conversion, rounding the output to 8 bits or
not, and the SSIM window all move the last digits that papers compare. A preset is one documented set of choices,
with the code base it comes from:

* ``channel``: ``'Y'`` (luma of YCbCr) or ``'RGB'`` (the three channels: the MSE over all of them; SSIM per channel,
  then the mean).
* ``colour``: how Y is computed. ``'basicsr'``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` on [0, 255]
  values (ITU-R BT.601, range 16-235; BasicSR's ``bgr2ycbcr(y_only=True)`` through ``to_y_channel``), not rounded.
  ``'matlab-uint8'``: the same formula rounded to integers, as MATLAB's ``rgb2ycbcr`` returns for a uint8 image (and
  DIC's Python copy of it). None for RGB.
* ``rounding``: True: the network output is rounded to 8 bits before scoring (the saved PNG; BasicSR's
  ``tensor2img``); False: scored as floats, clamped to [0, 255] (MMagic).
* ``crop``: ``'scale'`` (``crop_border`` = the upscaling factor) or a number of pixels cut at each edge.
* ``ssim``: ``'gaussian11'``: SSIM of Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli ("Image quality
  assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004) with their 11x11 Gaussian
  window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, over the 'valid' part of the image (the 5-pixel margin of the
  window dropped), as their MATLAB ``ssim_index.m`` and BasicSR's ``_ssim``; ``'dic-gaussian11'``: the same on
  ``uint8(Y * 255)``, i.e. ``256 - Y`` (DIC's ``calc_metrics`` multiplies its uint8 Y by 255 in uint8 arithmetic;
  the luminance term changes in the 4th decimal); ``'uniform7'``: scikit-image's ``structural_similarity`` defaults
  (7x7 uniform window, sample covariance, the 3-pixel margin dropped). PSNR is ``10 log10(255^2 / MSE)`` in every
  preset.

The presets of the four seed papers (``laat``, ``aminet``, ``tanet``, ``wnet``) hold what each paper states and
fall back to ``basicsr-y`` for every choice the paper leaves unsaid; :data:`PRESETS` says which is which.

Standard library only at import (``fsr-benchmark --help`` stays light); numpy, BasicSR and scikit-image are imported
by the scoring functions.
"""
from dataclasses import dataclass, field

DEFAULT = 'basicsr-y'


@dataclass(frozen=True)
class Preset:
    """One named protocol: the choices (see the module docstring), their source, and for a paper what it states."""
    name: str
    title: str
    channel: str
    colour: str
    rounding: bool
    crop: object  # 'scale' or an int
    ssim: str
    source: str
    notes: tuple = ()
    paper: dict = field(default=None, compare=False)  # cite, stated and remarks {choice: text}, fallback


_BASICSR_SOURCE = (
    'BasicSR 1.4.2: `basicsr/metrics/psnr_ssim.py` (`calculate_psnr`, `calculate_ssim`, `_ssim`: '
    '`cv2.getGaussianKernel(11, 1.5)`, `[5:-5, 5:-5]`), `basicsr/metrics/metric_util.py` (`to_y_channel`), '
    '`basicsr/utils/color_util.py` (`bgr2ycbcr(y_only=True)`); `basicsr/models/sr_model.py` rounds the output '
    '(`tensor2img`) before `calculate_metric`. BasicSR\'s option files choose the channel and the border per file '
    '(e.g. `options/test/EDSR/test_EDSR_Mx4.yml`: `crop_border: 4`); this plugin\'s `options/test_*.yml` use '
    '`test_y_channel: true`, `crop_border` = scale')


def _paper_preset(name, cite, stated, remarks, notes=()):
    """A seed paper's preset: what it states (``stated``), what it says short of a choice (``remarks``: e.g. the SSIM
    paper it cites), and ``basicsr-y`` for every choice it leaves unsaid."""
    return Preset(
        name=name,
        title=f'what {cite.split(":")[0]} states; `{DEFAULT}` where it is silent',
        channel='Y',
        colour='basicsr',
        rounding=True,
        crop='scale',
        ssim='gaussian11',
        source=f'{cite}; choices the paper does not state: `{DEFAULT}` (BasicSR)',
        notes=tuple(notes),
        paper=dict(cite=cite, stated=dict(stated), remarks=dict(remarks), fallback=DEFAULT))


PRESETS = {
    'basicsr-y':
    Preset(
        name='basicsr-y',
        title='BasicSR\'s `calculate_psnr` / `calculate_ssim` with `test_y_channel=True`, crop_border = scale '
        '(the default)',
        channel='Y',
        colour='basicsr',
        rounding=True,
        crop='scale',
        ssim='gaussian11',
        source=_BASICSR_SOURCE),
    'rgb':
    Preset(
        name='rgb',
        title='MMagic (OpenMMLab) style: RGB, unrounded outputs, crop_border = scale',
        channel='RGB',
        colour=None,
        rounding=False,
        crop='scale',
        ssim='gaussian11',
        source=('MMagic: `configs/dic/dic_x8c48b6_4xb2-150k_celeba-hq.py` (`val_evaluator`: `PSNR` and `SSIM` with '
                '`crop_border=scale`, no `convert_to`, i.e. RGB), `configs/dic/README.md` ("Evaluated on RGB channels, '
                '`scale` pixels in each border are cropped before evaluation": DIC x8 on CelebA-HQ 25.2319 / 0.7422), '
                '`mmagic/evaluation/metrics/psnr.py`, `ssim.py` (`_ssim`: `cv2.getGaussianKernel(11, 1.5)`, '
                '`[5:-5, 5:-5]`, per channel then mean), `metrics_utils.py` (`img_transform`); the prediction is '
                '`data_preprocessor.destruct(...)`, clamped to [0, 255] and not rounded '
                '(`mmagic/models/base_models/base_edit_model.py`, `forward_inference`)'),
        notes=('MMagic casts to float32 before the MSE (`img_transform`); float64 here.',
               'MMagic\'s DIC config makes its 128x128 HR and 16x16 LR faces with PIL\'s bicubic (`Resize`, '
               '`backend=\'pillow\'`); the LR faces here are the given set\'s.')),
    'dic':
    Preset(
        name='dic',
        title='DIC\'s evaluation code: Y rounded to integers, crop_border = scale',
        channel='Y',
        colour='matlab-uint8',
        rounding=True,
        crop='scale',
        ssim='dic-gaussian11',
        source=('DIC: C. Ma, Z. Jiang, Y. Rao, J. Lu, J. Zhou, "Deep Face Super-Resolution with Iterative '
                'Collaboration between Attentive Recovery and Landmark Estimation", CVPR 2020; its code, '
                'github.com/Maclory/Deep-Iterative-Collaboration: `code/test.py` (`util.calc_metrics(SR, HR, '
                'crop_border=scale)` on the uint8 images of `Tensor2np`, which rounds), `code/utils/util.py` '
                '(`rgb2ycbcr`: "same as matlab rgb2ycbcr", rounds for uint8 input; `calc_metrics` passes '
                '`cropped_im * 255` of the uint8 Y, which wraps to 256 - Y; `ssim`: `cv2.getGaussianKernel(11, '
                '1.5)`, `[5:-5, 5:-5]`)'),
        notes=('PSNR is the same on 256 - Y as on Y; SSIM\'s luminance term is not (it moves the 4th decimal).', )),
    'skimage':
    Preset(
        name='skimage',
        title='scikit-image defaults: RGB, no crop, 7x7 uniform-window SSIM',
        channel='RGB',
        colour=None,
        rounding=True,
        crop=0,
        ssim='uniform7',
        source=('scikit-image: `skimage.metrics.peak_signal_noise_ratio(hr, sr)` and '
                '`skimage.metrics.structural_similarity(hr, sr, channel_axis=-1)` with their defaults '
                '(`win_size=7`, `gaussian_weights=False`, `use_sample_covariance=True`, data range 255 for uint8), '
                'on the whole face')),
    'laat':
    _paper_preset(
        'laat',
        'LAAT: G. Li, J. Shi, Y. Zong, F. Wang, T. Wang, Y. Gong, "Learning Attention from Attention: Efficient '
        'Self-Refinement Transformer for Face Super-Resolution", IJCAI 2023, doi:10.24963/ijcai.2023/115, Sec. 4.1',
        stated={'channel': 'Y: "PSNR, SSIM [Wang et al., 2004] computed on the Y channel of the image YCbCr space"'},
        remarks={
            'colour': 'says "YCbCr space", not which conversion',
            'ssim': 'cites Wang et al. 2004, whose paper uses the 11x11 Gaussian window, sigma 1.5; no implementation'
        },
        notes=('Its code repository (github.com/Guanxin-Li/LAA-Transformer) holds a README only ("Code is coming '
               'soon").', )),
    'aminet':
    _paper_preset(
        'aminet',
        'AMINet: X. Wan, W. Li, G. Gao, H. Lu, J. Yang, C.-W. Lin, "Attention-Guided Multi-scale Interaction Network '
        'for Face Super-Resolution", arXiv:2409.00591, 2024, Sec. IV-A',
        stated={},
        remarks={
            'ssim':
            'cites Wang et al. 2004 for PSNR and SSIM ([43]), no window or implementation; VIF: Sheikh & '
            'Bovik 2006 ([45])'
        },
        notes=('AMIGAN (the same paper, Table VIII) uses this preset too.', )),
    'tanet':
    _paper_preset(
        'tanet',
        'TANet: Y. Wang, T. Lu, Y. Zhang, J. Jiang, J. Wang, Z. Wang, J. Ma, "TANet: A new Paradigm for Global Face '
        'Super-resolution via Transformer-CNN Aggregation Network", arXiv:2109.08174, 2021, "Evaluation Metrics"',
        stated={},
        remarks={'ssim': 'cites Wang et al. 2004, no window or implementation; MPS = 0.5 (SSIM + 1 - LPIPS), eq. 18'}),
    'wnet':
    _paper_preset(
        'wnet', 'W-Net: H. Liu, Y. Yang, Y. Liu, "W-Net: A Facial Feature-Guided Face Super-Resolution Network", '
        'arXiv:2406.00676, 2024, Sec. 4',
        stated={},
        remarks={'ssim': 'cites Wang et al. 2004 ([55]), no window or implementation'},
        notes=('W-Net follows DIC\'s and RAAN\'s data processing (training and test splits); it does not say that it '
               'used DIC\'s evaluation code: `--protocol dic` gives that code\'s figures.', )),
}
NAMES = tuple(PRESETS)
PAPER_PRESETS = {'laat': 'laat', 'aminet': 'aminet', 'amigan': 'aminet', 'tanet': 'tanet', 'wnet': 'wnet'}
CHOICES = ('channel', 'colour', 'rounding', 'crop', 'ssim')
CHOICE_NAMES = {
    'channel': 'channel',
    'colour': 'colour conversion',
    'rounding': 'rounding before scoring',
    'crop': 'crop border',
    'ssim': 'SSIM'
}


def _colour_text(colour):
    return {
        'basicsr': 'Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (ITU-R BT.601, 16-235; BasicSR '
        '`bgr2ycbcr(y_only=True)`), not rounded',
        'matlab-uint8': 'Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 rounded to integers (MATLAB '
        '`rgb2ycbcr` of a uint8 image)',
        None: 'none (RGB as read)',
    }[colour]


def _ssim_text(ssim):
    return {
        'gaussian11':
        '11x11 Gaussian window, sigma 1.5, valid region (Wang et al. 2004; BasicSR `_ssim`); RGB: per channel, '
        'then the mean',
        'dic-gaussian11':
        '11x11 Gaussian window, sigma 1.5, valid region, on uint8(Y * 255) = 256 - Y (DIC\'s '
        '`calc_metrics`)',
        'uniform7':
        '7x7 uniform window, sample covariance, 3-pixel margin dropped (scikit-image '
        '`structural_similarity` defaults); RGB: per channel, then the mean',
    }[ssim]


def choice_text(choice, value, scale=None):
    """Words for one choice's value (``crop``: ``'scale'`` reads ``crop_border = scale = 4`` when ``scale`` is
    given)."""
    if choice == 'channel':
        return 'Y channel of YCbCr' if value == 'Y' else 'RGB (the three channels)'
    if choice == 'colour':
        return _colour_text(value)
    if choice == 'rounding':
        return ('outputs rounded to 8 bits first' if value else 'outputs not rounded (floats clamped to [0, 255])')
    if choice == 'crop':
        if value == 'scale':
            return 'crop_border = scale' + (f' = {scale}' if scale is not None else '')
        return f'crop_border = {value}'
    if choice == 'ssim':
        return _ssim_text(value)
    raise KeyError(choice)


@dataclass
class Protocol:
    """A preset resolved for one run: its choices at this scale, after the ``--rgb`` / ``--crop-border`` overrides.

    Use :func:`resolve` to make one.
    """
    preset: Preset
    scale: int
    channel: str
    colour: str
    rounding: bool
    crop: int
    ssim: str
    overrides: list

    @property
    def name(self):
        return self.preset.name

    @property
    def y_channel(self):
        return self.channel == 'Y'

    def label(self):
        """``basicsr-y``, or ``basicsr-y + --crop-border 0`` with the overrides."""
        return self.name + ''.join(f' + {o["option"]}' for o in self.overrides if o['changed'])

    def summary(self):
        """One line: channel, crop, rounding, SSIM window."""
        ssim = {
            'gaussian11': 'SSIM 11x11 Gaussian',
            'dic-gaussian11': 'SSIM 11x11 Gaussian on 256-Y',
            'uniform7': 'SSIM 7x7 uniform'
        }[self.ssim]
        colour = {'basicsr': ' (BT.601)', 'matlab-uint8': ' (BT.601, rounded)', None: ''}[self.colour]
        return (f'{self.channel}{colour}, crop {self.crop}, {"rounded" if self.rounding else "unrounded"}, {ssim}')

    def choices(self):
        """``{choice: value}`` as resolved (``crop`` in pixels)."""
        return {c: getattr(self, c) for c in CHOICES}

    def lines(self):
        """Markdown lines for a table's protocol section: the preset, each choice, the source, the overrides."""
        p = self.preset
        out = [f'- Protocol `{p.name}` (`--protocol {p.name}`): {p.title}.']
        for choice in CHOICES:
            value = getattr(self, choice)
            text = choice_text(choice, value)
            if choice == 'crop':
                text = f'crop_border = {value}' + (' (= scale)' if value == self.scale else '')
            if p.paper:
                stated, remark = p.paper['stated'].get(choice), p.paper['remarks'].get(choice)
                text += (f'; stated by the paper: {stated}'
                         if stated else f'; not stated by the paper{" (it " + remark + ")" if remark else ""}: '
                         f'`{p.paper["fallback"]}`\'s')
            out.append(f'  - {CHOICE_NAMES[choice]}: {text}')
        out.append(f'  - source: {p.source}')
        out += [f'  - note: {n}' for n in p.notes]
        for o in self.overrides:
            out.append(f'  - override `{o["option"]}`: ' + (
                f'{o["what"]} (the preset\'s: {o["preset"]})' if o['changed'] else f'the preset\'s {o["what"]} too'))
        out.append('  - PSNR = 10 log10(255^2 / MSE), the MSE over every pixel (and channel) left after the crop.')
        return out

    # ------------------------------------------------------------------------------------------------ scoring
    def planes(self, img):
        """The scored planes of a BGR image ([0, 255], uint8 or float): cropped, converted; float64 (H, W, C)."""
        import numpy as np
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[..., None]
        c = self.crop
        if c:
            img = img[c:-c, c:-c, ...]
        if self.channel == 'RGB':
            return img.astype(np.float64)
        if img.shape[2] != 3:
            raise ValueError(f'the Y channel needs a 3-channel image, not {img.shape[2]} channel(s).')
        if self.colour == 'basicsr':
            from basicsr.metrics.metric_util import to_y_channel
            return to_y_channel(img).astype(np.float64)
        # MATLAB rgb2ycbcr of a uint8 image (DIC's rgb2ycbcr): the BT.601 luma rounded to integers
        y = np.dot(img.astype(np.float64), [24.966, 128.553, 65.481]) / 255. + 16.
        return np.round(y)[..., None]

    def score(self, sr, hr):
        """``{'PSNR': dB, 'SSIM': value}`` of ``sr`` against ``hr`` (BGR, [0, 255]) under this protocol."""
        import numpy as np
        from basicsr.metrics import calculate_psnr, calculate_ssim
        a, b = self.planes(sr), self.planes(hr)
        psnr = calculate_psnr(a, b, crop_border=0)
        if self.ssim == 'gaussian11':
            ssim = calculate_ssim(a, b, crop_border=0)
        elif self.ssim == 'dic-gaussian11':  # DIC: `cropped_im * 255` of a uint8 Y wraps in uint8
            a8, b8 = a.astype(np.uint8), b.astype(np.uint8)
            ssim = calculate_ssim(
                (a8 * np.uint8(255)).astype(np.float64), (b8 * np.uint8(255)).astype(np.float64), crop_border=0)
        elif self.ssim == 'uniform7':
            from skimage.metrics import structural_similarity
            ssim = structural_similarity(b, a, channel_axis=-1, data_range=255.)
        else:
            raise ValueError(f'unknown SSIM choice {self.ssim!r}')
        return {'PSNR': float(psnr), 'SSIM': float(ssim)}


def get_preset(name):
    """The :class:`Preset` called ``name``; ``ValueError`` lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f'--protocol {name}: unknown protocol; use one of {", ".join(NAMES)}.')
    return PRESETS[name]


def resolve(name=DEFAULT, scale=4, rgb=False, crop_border=None):
    """The protocol ``name`` at ``scale`` with the old flags as overrides.

    Args:
        name (str): A preset of :data:`PRESETS`.
        scale (int): The upscaling factor (the crop border of ``crop='scale'`` presets).
        rgb (bool): ``--rgb``: score RGB instead of the preset's channel.
        crop_border (int | None): ``--crop-border``: instead of the preset's border; None keeps it.

    Returns:
        Protocol: the choices, and ``overrides`` (``option``, ``what``, ``preset``, ``changed``) for the report.
    """
    preset = get_preset(name)
    crop = scale if preset.crop == 'scale' else int(preset.crop)
    proto = Protocol(preset, scale, preset.channel, preset.colour, preset.rounding, crop, preset.ssim, [])
    if rgb:
        changed = preset.channel != 'RGB'
        proto.overrides.append(
            dict(option='--rgb', what='channel RGB', preset=choice_text('channel', preset.channel), changed=changed))
        proto.channel, proto.colour = 'RGB', None
        if proto.ssim == 'dic-gaussian11':
            proto.ssim = 'gaussian11'  # the wrap is DIC's Y path; RGB is scored plainly
    if crop_border is not None:
        proto.overrides.append(
            dict(
                option=f'--crop-border {crop_border}',
                what=f'crop_border = {crop_border}',
                preset=choice_text('crop', preset.crop, scale),
                changed=crop_border != crop))
        proto.crop = int(crop_border)
    return proto
