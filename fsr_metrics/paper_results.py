"""The figures the four papers report, for ``fsr-benchmark --paper PAPER`` (printed beside the measured rows).

Each record is copied from the paper's text: table, test set, scale, method and the metrics as printed there (PSNR in
dB). Only the paper's own method and its bicubic row are kept (the baselines of other papers were retrained by each
paper's authors and differ between papers). ``PROTOCOLS`` says what each paper states about its evaluation, and what
it leaves unsaid; its ``preset`` is the :mod:`fsr_metrics.protocols` preset that holds the paper's stated choices
(``basicsr-y``'s where the paper is silent), so that the paper's protocol is printed beside ours and a difference can
be named beside the numbers.

The papers:

* LAAT: G. Li, J. Shi, Y. Zong, F. Wang, T. Wang, Y. Gong, "Learning Attention from Attention: Efficient
  Self-Refinement Transformer for Face Super-Resolution", IJCAI 2023, doi:10.24963/ijcai.2023/115.
* AMINet / AMIGAN: X. Wan, W. Li, G. Gao, H. Lu, J. Yang, C.-W. Lin, "Attention-Guided Multi-scale Interaction
  Network for Face Super-Resolution", arXiv:2409.00591, 2024.
* TANet: Y. Wang, T. Lu, Y. Zhang, J. Jiang, J. Wang, Z. Wang, J. Ma, "TANet: A new Paradigm for Global Face
  Super-resolution via Transformer-CNN Aggregation Network", arXiv:2109.08174, 2021.
* W-Net: H. Liu, Y. Yang, Y. Liu, "W-Net: A Facial Feature-Guided Face Super-Resolution Network", arXiv:2406.00676,
  2024.

Standard library only: importing this module costs nothing.
"""

PAPERS = ('laat', 'aminet', 'amigan', 'tanet', 'wnet')

# paper -> what its text says about the evaluation (None: not stated); preset: its fsr_metrics.protocols preset.
PROTOCOLS = {
    'laat': {
        'source': 'LAAT (Li et al., IJCAI 2023), Sec. 4.1 and Table 1',
        'preset': 'laat',
        'channel': 'Y',  # "computed on the Y channel of the image YCbCr space"
        'crop_border': None,
        'lr': 'bicubic down-sampling of 128x128 MTCNN crops to 16x16 (kernel/antialiasing not stated)',
        'test_sets': 'CelebA: the 1,000 faces left after 177k training faces; Helen: 100 random cropped faces',
        'lpips': 'LPIPS (trunk not stated)',
    },
    'aminet': {
        'source': 'AMINet (Wan et al., arXiv:2409.00591), Sec. IV-A and Table VII',
        'preset': 'aminet',
        'channel': None,
        'crop_border': None,
        'lr': 'bicubic down-sampling of 128x128 centre crops of aligned faces to 16x16',
        'test_sets': 'CelebA: 1,000 random faces (18,000 for training); Helen test set (size not stated)',
        'lpips': 'LPIPS (trunk not stated); VIF; FID',
    },
    'amigan': {
        'source': 'AMINet paper (Wan et al., arXiv:2409.00591), Table VIII (AMIGAN, GAN-based)',
        'preset': 'aminet',
        'channel': None,
        'crop_border': None,
        'lr': 'as AMINet',
        'test_sets': 'Helen test set',
        'lpips': 'VIF; FID (Inception, set size not stated)',
    },
    'tanet': {
        'source': 'TANet (Wang et al., arXiv:2109.08174), Tables 1-3',
        'preset': 'tanet',
        'channel': None,
        'crop_border': None,
        'lr': 'bicubic (FFHQ resized to 256x256, CelebA to 216x176)',
        'test_sets': 'FFHQ: 100 random test faces; CelebA: 100 random test faces',
        'lpips': 'LPIPS (trunk not stated); MPS = 0.5 (SSIM + 1 - LPIPS) (eq. 18)',
    },
    'wnet': {
        'source':
        'W-Net (Liu et al., arXiv:2406.00676), Tables 1-3',
        'preset':
        'wnet',
        'channel':
        None,
        'crop_border':
        None,
        'lr':
        'bicubic of 128x128 OpenFace-landmark crops to 32x32 / 16x16',
        'test_sets': ('CelebA: 1,000 faces (Training Mode I, 168,854 for training) or 100 faces (Mode II, 18,000 '
                      'for training); Helen: 50 faces as DIC'),
        'lpips':
        'LPIPS (trunk not stated); Table 2 identity: AdaFace cosine, landmarks: OpenFace 68-point distance',
    },
}

# (paper, table, test set, scale, method, {metric: value})
RESULTS = [
    # LAAT, Table 1 (x8, Helen and CelebA).
    ('laat', 'Table 1', 'Helen', 8, 'Bicubic', {
        'PSNR': 24.25,
        'SSIM': 0.6798,
        'LPIPS': 0.5236
    }),
    ('laat', 'Table 1', 'Helen', 8, 'LAAT', {
        'PSNR': 28.36,
        'SSIM': 0.8318,
        'LPIPS': 0.1626
    }),
    ('laat', 'Table 1', 'CelebA', 8, 'Bicubic', {
        'PSNR': 24.10,
        'SSIM': 0.6605,
        'LPIPS': 0.5267
    }),
    ('laat', 'Table 1', 'CelebA', 8, 'LAAT', {
        'PSNR': 28.58,
        'SSIM': 0.8297,
        'LPIPS': 0.1542
    }),
    # AMINet, Table VII (x8, CelebA and Helen).
    ('aminet', 'Table VII', 'CelebA', 8, 'Bicubic', {
        'PSNR': 23.61,
        'SSIM': 0.6779,
        'VIF': 0.1821,
        'LPIPS': 0.4899
    }),
    ('aminet', 'Table VII', 'CelebA', 8, 'AMINet', {
        'PSNR': 28.26,
        'SSIM': 0.8091,
        'VIF': 0.4893,
        'LPIPS': 0.1755
    }),
    ('aminet', 'Table VII', 'Helen', 8, 'Bicubic', {
        'PSNR': 22.95,
        'SSIM': 0.6762,
        'VIF': 0.1745,
        'LPIPS': 0.4912
    }),
    ('aminet', 'Table VII', 'Helen', 8, 'AMINet', {
        'PSNR': 27.01,
        'SSIM': 0.8042,
        'VIF': 0.4694,
        'LPIPS': 0.2067
    }),
    # AMIGAN, Table VIII (x8, Helen; no bicubic row in that table).
    ('amigan', 'Table VIII', 'Helen', 8, 'AMIGAN', {
        'PSNR': 26.35,
        'SSIM': 0.7769,
        'VIF': 0.4101,
        'FID': 122.43
    }),
    # TANet, Table 2 (FFHQ) and Table 3 (CelebA), x4 and x8 (Table 1's full-model rows repeat Table 2's).
    ('tanet', 'Table 2', 'FFHQ', 4, 'Bicubic', {
        'PSNR': 29.60,
        'SSIM': 0.8340,
        'LPIPS': 0.3138,
        'MPS': 0.7601
    }),
    ('tanet', 'Table 2', 'FFHQ', 4, 'TANet', {
        'PSNR': 32.61,
        'SSIM': 0.8910,
        'LPIPS': 0.1590,
        'MPS': 0.8660
    }),
    ('tanet', 'Table 2', 'FFHQ', 8, 'Bicubic', {
        'PSNR': 25.88,
        'SSIM': 0.7197,
        'LPIPS': 0.5102,
        'MPS': 0.6048
    }),
    ('tanet', 'Table 2', 'FFHQ', 8, 'TANet', {
        'PSNR': 28.62,
        'SSIM': 0.7972,
        'LPIPS': 0.2844,
        'MPS': 0.7564
    }),
    ('tanet', 'Table 3', 'CelebA', 4, 'Bicubic', {
        'PSNR': 28.76,
        'SSIM': 0.8341,
        'LPIPS': 0.2729,
        'MPS': 0.7806
    }),
    ('tanet', 'Table 3', 'CelebA', 4, 'TANet', {
        'PSNR': 32.28,
        'SSIM': 0.8992,
        'LPIPS': 0.1133,
        'MPS': 0.8930
    }),
    ('tanet', 'Table 3', 'CelebA', 8, 'Bicubic', {
        'PSNR': 24.71,
        'SSIM': 0.7004,
        'LPIPS': 0.4706,
        'MPS': 0.6149
    }),
    ('tanet', 'Table 3', 'CelebA', 8, 'TANet', {
        'PSNR': 27.87,
        'SSIM': 0.7999,
        'LPIPS': 0.2271,
        'MPS': 0.7864
    }),
    # W-Net, Table 1: Training Mode I (168,854 training faces) above, Mode II (18,000) below; one bicubic row.
    ('wnet', 'Table 1', 'CelebA', 4, 'Bicubic', {
        'PSNR': 27.38,
        'SSIM': 0.8002,
        'LPIPS': 0.1857
    }),
    ('wnet', 'Table 1', 'CelebA', 8, 'Bicubic', {
        'PSNR': 23.46,
        'SSIM': 0.6776,
        'LPIPS': 0.2699
    }),
    ('wnet', 'Table 1', 'Helen', 4, 'Bicubic', {
        'PSNR': 28.12,
        'SSIM': 0.8423,
        'LPIPS': 0.1771
    }),
    ('wnet', 'Table 1', 'Helen', 8, 'Bicubic', {
        'PSNR': 23.80,
        'SSIM': 0.6396,
        'LPIPS': 0.2560
    }),
    ('wnet', 'Table 1', 'CelebA', 4, 'W-Net (Mode I)', {
        'PSNR': 31.77,
        'SSIM': 0.9032,
        'LPIPS': 0.0482
    }),
    ('wnet', 'Table 1', 'CelebA', 8, 'W-Net (Mode I)', {
        'PSNR': 27.54,
        'SSIM': 0.8041,
        'LPIPS': 0.0908
    }),
    ('wnet', 'Table 1', 'Helen', 4, 'W-Net (Mode I)', {
        'PSNR': 32.32,
        'SSIM': 0.9251,
        'LPIPS': 0.0491
    }),
    ('wnet', 'Table 1', 'Helen', 8, 'W-Net (Mode I)', {
        'PSNR': 27.26,
        'SSIM': 0.8121,
        'LPIPS': 0.1046
    }),
    ('wnet', 'Table 1', 'CelebA', 4, 'W-Net (Mode II)', {
        'PSNR': 31.63,
        'SSIM': 0.9029,
        'LPIPS': 0.0425
    }),
    ('wnet', 'Table 1', 'CelebA', 8, 'W-Net (Mode II)', {
        'PSNR': 27.40,
        'SSIM': 0.8014,
        'LPIPS': 0.0760
    }),
    ('wnet', 'Table 1', 'Helen', 4, 'W-Net (Mode II)', {
        'PSNR': 31.83,
        'SSIM': 0.9181,
        'LPIPS': 0.0483
    }),
    ('wnet', 'Table 1', 'Helen', 8, 'W-Net (Mode II)', {
        'PSNR': 27.05,
        'SSIM': 0.8058,
        'LPIPS': 0.1028
    }),
    # W-Net, Table 2 (Mode II): OpenFace landmark distance and AdaFace identity cosine (not our dlib LMD/ID).
    ('wnet', 'Table 2', 'CelebA', 4, 'Bicubic', {
        'LMD (OpenFace)': 11.06,
        'ID (AdaFace)': 0.7339
    }),
    ('wnet', 'Table 2', 'CelebA', 4, 'W-Net (Mode II)', {
        'LMD (OpenFace)': 6.98,
        'ID (AdaFace)': 0.8697
    }),
    ('wnet', 'Table 2', 'CelebA', 8, 'Bicubic', {
        'LMD (OpenFace)': 22.23,
        'ID (AdaFace)': 0.3680
    }),
    ('wnet', 'Table 2', 'CelebA', 8, 'W-Net (Mode II)', {
        'LMD (OpenFace)': 10.17,
        'ID (AdaFace)': 0.5861
    }),
    ('wnet', 'Table 2', 'Helen', 4, 'Bicubic', {
        'LMD (OpenFace)': 11.74,
        'ID (AdaFace)': 0.7767
    }),
    ('wnet', 'Table 2', 'Helen', 4, 'W-Net (Mode II)', {
        'LMD (OpenFace)': 8.95,
        'ID (AdaFace)': 0.8690
    }),
    ('wnet', 'Table 2', 'Helen', 8, 'Bicubic', {
        'LMD (OpenFace)': 24.15,
        'ID (AdaFace)': 0.3858
    }),
    ('wnet', 'Table 2', 'Helen', 8, 'W-Net (Mode II)', {
        'LMD (OpenFace)': 13.28,
        'ID (AdaFace)': 0.6545
    }),
]


def paper_rows(paper, scale=None, dataset=None):
    """The records of ``paper`` (optionally one scale / test set), in the order above.

    Raises:
        ValueError: Unknown paper (the message lists the known ones).
    """
    paper = paper.lower()
    if paper not in PAPERS:
        raise ValueError(f'--paper {paper}: unknown paper; use one of {", ".join(PAPERS)}.')
    return [
        r for r in RESULTS
        if r[0] == paper and (scale is None or r[3] == scale) and (dataset is None or r[2].lower() == dataset.lower())
    ]


def paper_protocol_cell(paper):
    """A short table cell: the paper's preset and which of the five choices the paper states."""
    from fsr_metrics import protocols
    preset = protocols.PRESETS[PROTOCOLS[paper.lower()]['preset']]
    said = [c for c in protocols.CHOICES if c in preset.paper['stated']]
    return f'`{preset.name}` (the paper states {", ".join(said) if said else "none"} of {"/".join(protocols.CHOICES)})'


def protocol_comparison(paper, protocol):
    """Markdown lines: a table of the paper's protocol (its preset; each choice stated or not) beside ``protocol``,
    the measured one (:class:`fsr_metrics.protocols.Protocol`)."""
    from fsr_metrics import protocols
    preset = protocols.PRESETS[PROTOCOLS[paper.lower()]['preset']]
    stated = preset.paper['stated']
    lines = [
        f'| Choice | The paper (`--protocol {preset.name}`) | Measured here (`{protocol.label()}`) |', '|---|---|---|'
    ]
    for choice in protocols.CHOICES:
        ours = protocols.choice_text(choice, getattr(protocol, choice))
        if choice == 'crop':
            ours = f'crop_border = {protocol.crop}'
        remark = preset.paper['remarks'].get(choice)
        if choice in stated:
            theirs = f'stated: {stated[choice]}'
        else:
            fallback = protocols.choice_text(choice, getattr(preset, choice), protocol.scale)
            theirs = f'not stated{" (it " + remark + ")" if remark else ""}; the preset: {fallback}'
        lines.append(f'| {protocols.CHOICE_NAMES[choice]} | {theirs} | {ours} |')
    return lines


def protocol_differences(paper, y_channel, crop_border, scale, protocol=None):
    """Sentences that name how the paper's evaluation differs from (or is not known to match) the measured one.

    ``protocol`` (:class:`fsr_metrics.protocols.Protocol`), when given, is the measured protocol: a line says how to
    score as the paper states when it is not the paper's preset.
    """
    proto = PROTOCOLS[paper.lower()]
    ours_channel = 'Y' if y_channel else 'RGB'
    lines = [f'Paper figures: {proto["source"]}; copied from the paper, not measured here.']
    if proto['channel'] is None:
        lines.append(f'The paper does not say on which channel PSNR/SSIM are computed; ours: {ours_channel}.')
    elif proto['channel'] != ours_channel:
        lines.append(f'The paper computes PSNR/SSIM on {proto["channel"]}; ours on {ours_channel}: not comparable.')
    else:
        lines.append(f'PSNR/SSIM channel: {proto["channel"]} in both.')
    if proto['crop_border'] is None:
        lines.append(f'The paper does not state a crop border; ours: {crop_border} pixels at x{scale} (the border '
                     'changes PSNR/SSIM: ' + ('rerun with --crop-border 0 to see by how much on your faces).'
                                              if crop_border else f'rerun without --crop-border for {scale}).'))
    elif proto['crop_border'] != crop_border:
        lines.append(f'Crop border: paper {proto["crop_border"]}, ours {crop_border}.')
    if protocol is not None and (protocol.name != proto['preset'] or any(o['changed'] for o in protocol.overrides)):
        lines.append(f'Measured with `{protocol.label()}`; `--protocol {proto["preset"]}` (no --rgb, no '
                     '--crop-border) scores as the paper states, with `basicsr-y`\'s choices where it is silent.')
    lines.append(f'Paper LR: {proto["lr"]}. Paper test sets: {proto["test_sets"]}. Other metrics: {proto["lpips"]}.')
    lines.append('Our LPIPS/ID/LMD use the trunks and models named in the protocol above; the paper\'s may differ.')
    return lines
