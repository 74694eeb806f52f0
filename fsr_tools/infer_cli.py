"""``fsr-infer``: restore every face in your own photos with a trained FSR network (command line of
:class:`fsr_tools.restorer.FaceRestorer`).

Usage::

    fsr-infer -i PHOTO_OR_FOLDER -o OUT --opt options/test_tanet_x4.yml --weights experiments/.../net_g_latest.pth
    fsr-infer -i PHOTO_OR_FOLDER -o OUT --net TANet --scale 4 --weights CKPT      # the paper configuration
    fsr-infer -i FOLDER_OF_ALIGNED_CROPS -o OUT --opt ... --weights CKPT --aligned

Per photo: read (gray, RGB, RGBA, 8 or 16 bit; EXIF orientation applied), detect faces (5 landmarks), feed each face to
the network with as little resampling as possible (:mod:`fsr_tools.face_geometry`: cut without resampling when its
scale fits the network's LR template, else one warp to it; faces larger than the LR input are kept as they are), enlarge
the photo ``--upscale`` times (default: the network's scale) and paste the SR faces with a feathered mask. Writes
``OUT/<name>.png`` (same channels and bit depth), the LR and SR crops in ``OUT/crops/`` (``--no-crops`` to skip),
optionally the masks (``--save-masks``), and ``OUT/summary.json``. ``--profile`` prints where the time goes.

Problems with one file (unreadable, no face, wrong size for ``--aligned``) skip that file with a reason in the summary;
problems with the network, the weights or the output folder (an output folder holding the input photos is refused: no
input is ever written over) stop with a clear message before any photo is processed.

Exit status: 0 when at least one image was restored, 1 when none was (everything skipped), 2 on a setup error.
"""
import argparse
import json
import os
import sys
import time

UPSCALE_HELP = (
    "output size / input size: the whole photo is enlarged this many times (bicubic) and the restored faces are "
    "pasted at that resolution. Default: the network's scale s. How face size, --upscale and s interact: the network "
    "takes faces of one size, its LR input (HR size / s, e.g. 32x32 for a 128x128 x4 network: eyes about 7 px apart), "
    "and returns them s times larger. A face of that size in the photo is restored from the photo's own pixels and "
    "lands 1:1 on an output enlarged s times; smaller faces are enlarged once to the LR size first; larger faces "
    "already have more detail than the network's input and are left as they are (enlarged like the background, listed "
    "in the summary) unless --restore-large-faces. To restore the faces of a normal photo, shrink it until its faces "
    "are the LR size (the summary says by how much).")


def _parse_size(text):
    """'128' -> (128, 128); '216x176' / '216,176' -> (216, 176)."""
    parts = str(text).lower().replace(',', 'x').split('x')
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r}: use N or HxW (e.g. 128 or 216x176)')
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f'size {text!r}: use N or HxW (e.g. 128 or 216x176)')
    return size


def build_parser():
    """The ``fsr-infer`` argument parser."""
    p = argparse.ArgumentParser(
        prog='fsr-infer',
        description='Restore every face in photos with a trained face SR network: detect, cut (or resample once) the '
        "face at the network's LR size, super-resolve, paste back with a soft mask into the enlarged photo.")
    p.add_argument('-i', '--input', required=True, help='a photo or a folder of photos (searched recursively)')
    p.add_argument(
        '-o',
        '--output',
        required=True,
        help='output folder (restored photos, crops/, summary.json); not the folder of the input photos')
    net = p.add_argument_group('network')
    net.add_argument('--opt', help='BasicSR options file (network_g, scale, path:pretrain_network_g, param_key_g)')
    net.add_argument('--net', help='registered network name with its paper configuration (PAPER_CONFIGS)')
    net.add_argument('--scale', type=int, choices=(2, 4, 8, 16), help='scale for --net (default 4); checked with --opt')
    net.add_argument('--weights', help='checkpoint (BasicSR net_g_*.pth); default: path:pretrain_network_g of --opt')
    net.add_argument(
        '--param-key',
        help="key of the weights in the checkpoint (default: the options' param_key_g, "
        "else params_ema, else params)")
    net.add_argument('--device', default='auto', help='auto (GPU when available), cpu, cuda or cuda:N')
    net.add_argument('--batch-size', type=int, default=8, help='faces per network call (bounds memory). Default 8')
    pre = p.add_argument_group('faces (must match the training data)')
    pre.add_argument(
        '--hr-size',
        type=_parse_size,
        help='HR face size, N or HxW (default: the size of the options\' '
        'dataroot_gt LMDB if it exists, else 128, fsr-prepare\'s default)')
    pre.add_argument(
        '--template-zoom',
        '--zoom',
        dest='zoom',
        type=float,
        help='alignment template zoom as given to '
        "fsr-prepare (default: the options' dataset manifest, else 1)")
    pre.add_argument(
        '--lr-kernel',
        choices=('matlab', 'pil-bicubic'),
        help="LR down-sampling of --aligned HR crops, as fsr-prepare's "
        "(default: the options' dataset manifest, else matlab = BasicSR's MATLAB-style imresize)")
    pre.add_argument(
        '--scale-tol',
        type=float,
        default=0.25,
        help='a face whose scale is within x(1 + tol) of the LR template (either way) is cut from the photo without '
        'resampling; others are resampled once to the template (or kept when larger). Default 0.25: measured with the '
        'demo TANet on held-out faces, a cut beat one resampling at every scale from 0.8 to 1.25 and roll up to 30 deg '
        '(scripts/measure_infer_tolerances.py)')
    pre.add_argument(
        '--roll-tol',
        type=float,
        default=30.,
        help='... and whose roll (in-plane rotation) is at most this many degrees. Default 30 (the same measurement)')
    pre.add_argument(
        '--restore-large-faces',
        action='store_true',
        help='also restore faces larger than the LR input (they are down-sampled to it first and can come out softer '
        'than the input; by default they are left as they are)')
    pre.add_argument(
        '--min-score', type=float, default=0.9, help='ignore detections with a lower confidence (0.9, as fsr-prepare)')
    pre.add_argument('--aligned', action='store_true', help='inputs are aligned face crops of LR or HR size')
    pre.add_argument(
        '--detector', default='mtcnn', help="face detector backend: mtcnn (default, offline) or retinaface")
    pre.add_argument('--detector-weights', help='RetinaFace weights file (or an MTCNN weights folder)')
    pre.add_argument('--min-face', type=int, default=20, help='smallest face box side searched for, in px (20)')
    pre.add_argument(
        '--detect-max-side',
        type=int,
        default=2048,
        help='detect on a copy at most this long (bounds detector memory on large photos; 0: full size)')
    post = p.add_argument_group('output')
    post.add_argument('--upscale', type=int, help=UPSCALE_HELP)
    post.add_argument('--feather', type=float, default=0.1, help='soft mask ramp width, fraction of the crop (0.1)')
    post.add_argument('--save-masks', action='store_true', help='also write OUT/masks/<name>.png (ceil(255 * mask))')
    post.add_argument('--no-crops', action='store_true', help='do not write the LR/SR crops')
    post.add_argument(
        '--profile',
        action='store_true',
        help='print photos/s, faces/s and the time of each stage (read, detect, align, network, enlarge, paste, '
        'write)')
    post.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def setup(args):
    """The :class:`~fsr_tools.restorer.FaceRestorer` of the arguments; raises ``InferError`` on any problem."""
    from fsr_tools.restorer import FaceRestorer
    restorer = FaceRestorer.load(
        opt=args.opt,
        weights=args.weights,
        net=args.net,
        scale=args.scale,
        device=args.device,
        param_key=args.param_key,
        hr_size=args.hr_size,
        zoom=args.zoom,
        lr_kernel=args.lr_kernel,
        upscale=args.upscale,
        batch_size=args.batch_size,
        feather=args.feather,
        min_score=args.min_score,
        scale_tol=args.scale_tol,
        roll_tol=args.roll_tol,
        restore_large=args.restore_large_faces,
        detector=args.detector,
        detector_weights=args.detector_weights,
        min_face=args.min_face,
        detect_max_side=args.detect_max_side)
    info = dict(restorer.info, aligned=bool(args.aligned), detector=None if args.aligned else args.detector)
    return restorer, info


def _write_crops(rec, crops_stem, protected):
    from fsr_tools.infer_io import rgb_float_to_uint8_bgr, write_image
    lr, sr = rec.pop('lr', None), rec.pop('sr', None)
    if crops_stem and lr is not None:
        rec['lr_crop'] = f'{crops_stem}_face{rec["index"]:02d}_lr.png'
        rec['sr_crop'] = f'{crops_stem}_face{rec["index"]:02d}_sr.png'
        write_image(rec['lr_crop'], rgb_float_to_uint8_bgr(lr), protected)
        write_image(rec['sr_crop'], rgb_float_to_uint8_bgr(sr), protected)


def main(argv=None):
    """Entry point of ``fsr-infer``; returns the exit status (0 ok, 1 nothing restored, 2 setup error)."""
    args = build_parser().parse_args(argv)
    t0 = time.time()
    from fsr_tools.infer_io import InferError, SkipImage, list_inputs, output_names, read_image, write_image
    try:
        inputs, ignored = list_inputs(args.input, args.output)
        restorer, info = setup(args)
        if not args.aligned and inputs:
            restorer.get_detector()
    except InferError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    import cv2
    from tqdm import tqdm
    protected = {os.path.realpath(p) for p, _ in inputs}
    os.makedirs(args.output, exist_ok=True)
    names = output_names([rel for _, rel in inputs])
    photos, skipped = [], []
    io_time = dict(read=0., write=0.)
    t_work = time.perf_counter()
    for path, rel in tqdm(inputs, desc='fsr-infer', unit='img', disable=args.quiet):
        stem = names[rel]
        crops_stem = None if args.no_crops else os.path.join(args.output, 'crops', stem)
        try:
            t1 = time.perf_counter()
            img, notes = read_image(path)
            io_time['read'] += time.perf_counter() - t1
            union = None
            if args.aligned:
                out, rec = restorer.restore_aligned(img)
                faces = [rec]
            else:
                res = restorer.restore(img, union=args.save_masks)
                out, faces, union = res if args.save_masks else (*res, None)
            t1 = time.perf_counter()
            for rec in faces:
                _write_crops(rec, crops_stem, protected)
            out_path = os.path.join(args.output, stem + '.png')
            write_image(out_path, out, protected)
            rec = dict(
                input=path,
                output=out_path,
                size=list(img.shape[:2]),
                output_size=list(out.shape[:2]),
                notes=notes,
                faces=faces)
            if union is not None:
                rec['mask'] = os.path.join(args.output, 'masks', stem + '.png')
                write_image(rec['mask'], union, protected)
            io_time['write'] += time.perf_counter() - t1
            photos.append(rec)
        except SkipImage as e:
            skipped.append(dict(input=path, reason=str(e)))
        except InferError as e:  # the network fails, or an input would be overwritten: stop
            print(f'error: {path}: {e}', file=sys.stderr)
            return 2
        except (MemoryError, OSError, cv2.error) as e:
            skipped.append(dict(input=path, reason=f'{type(e).__name__}: {e}'))
    work = time.perf_counter() - t_work
    all_faces = [f for p in photos for f in p['faces']]
    plans = {k: sum(f.get('plan') == k for f in all_faces) for k in ('cut', 'resampled', 'kept')}
    summary = dict(
        settings=info,
        counts=dict(
            inputs=len(inputs),
            restored_images=len(photos),
            faces=len(all_faces),
            faces_cut=plans['cut'],
            faces_resampled=plans['resampled'],
            faces_kept=plans['kept'],
            skipped=len(skipped),
            ignored=len(ignored)),
        photos=photos,
        skipped=skipped,
        ignored_files=ignored,
        seconds=round(time.time() - t0, 2))
    if args.profile:
        summary['profile'] = profile(restorer.timings, io_time, work, len(inputs), len(all_faces))
    with open(os.path.join(args.output, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print_summary(summary, args.output)
    return 0 if photos else 1


def profile(timings, io_time, total, n_photos, n_faces):
    """Throughput and time per stage (seconds and share of the processing time)."""
    stages = dict(read=io_time['read'], **timings, write=io_time['write'])
    return dict(
        seconds=round(total, 3),
        photos_per_s=round(n_photos / total, 3) if total else None,
        faces_per_s=round(n_faces / total, 3) if total else None,
        stages={
            k: dict(seconds=round(v, 3), share=round(v / total, 3) if total else None)
            for k, v in stages.items()
        })


def print_summary(summary, out_dir):
    """The human-readable summary of a run."""
    c = summary['counts']
    if summary['settings']['aligned']:
        lines = [f'fsr-infer: restored {c["faces"]} aligned crops -> {out_dir} ({summary["seconds"]} s)']
    else:
        s = summary['settings']
        lines = [
            f'fsr-infer: {c["faces"]} face(s) in {c["restored_images"]} image(s) -> {out_dir} '
            f'({summary["seconds"]} s); '
            f'output x{s["upscale"]}, network x{s["scale"]} on {s["lr_size"][0]}x{s["lr_size"][1]} LR faces'
        ]
        if c['faces_cut']:
            lines.append(f'  {c["faces_cut"]} face(s) restored from the photo\'s own pixels (no resampling)')
        for kind, text in (('resampled', 'resampled once to the LR template'),
                           ('kept', 'left as they are (enlarged like the background): they have more pixels than the '
                            'network\'s LR input; shrink the photo to restore them, or --restore-large-faces')):
            if c[f'faces_{kind}']:
                lines.append(f'  {c[f"faces_{kind}"]} face(s) {text}:')
                for p in summary['photos']:
                    for f in p['faces']:
                        if f.get('plan') == kind:
                            lines.append(f'    {os.path.basename(p["input"])} face {f["index"]} (box '
                                         f'{[round(v) for v in f["box"]] if f.get("box") else "-"}): '
                                         f'{"; ".join(f["notes"])}')
    for p in summary['photos']:
        for note in p['notes']:
            lines.append(f'  {os.path.basename(p["input"])}: {note}')
    if summary['skipped']:
        lines.append(f'  skipped {len(summary["skipped"])} file(s):')
        lines += [f'    {s["input"]}: {s["reason"]}' for s in summary['skipped']]
    if summary['ignored_files']:
        lines.append(f'  ignored {len(summary["ignored_files"])} file(s) without an image extension')
    if not summary['photos']:
        lines.append('  nothing was restored.')
    prof = summary.get('profile')
    if prof:
        lines.append(f'  profile: {prof["photos_per_s"]} photos/s, {prof["faces_per_s"]} faces/s over '
                     f'{prof["seconds"]} s; ' + ', '.join(f'{k} {v["seconds"]} s ({100 * (v["share"] or 0):.0f}%)'
                                                          for k, v in prof['stages'].items()))
    lines.append(f'  summary: {os.path.join(out_dir, "summary.json")}')
    print('\n'.join(lines))


if __name__ == '__main__':
    sys.exit(main())
