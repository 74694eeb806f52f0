"""``fsr-infer``: restore every face in your own photos with a trained FSR network (command line of
:class:`fsr_tools.restorer.FaceRestorer`).

Usage::

    fsr-infer -i PHOTO_OR_FOLDER -o OUT --opt options/test_tanet_x4.yml --weights experiments/.../net_g_latest.pth
    fsr-infer -i PHOTO_OR_FOLDER -o OUT --net TANet --scale 4 --weights CKPT      # the paper configuration
    fsr-infer -i FOLDER_OF_ALIGNED_CROPS -o OUT --opt ... --weights CKPT --aligned
    fsr-infer -i PHOTO_OR_FOLDER -o OUT --backend onnxruntime --weights tanet_x4.onnx   # a file of fsr-export

Per photo: read (gray, RGB, RGBA, 8 or 16 bit; EXIF orientation applied), detect faces (5 landmarks), feed each face to
the network with as little resampling as possible (:mod:`fsr_tools.face_geometry`: cut without resampling when its
scale fits the network's LR template, else one warp to it; faces larger than the LR input are kept as they are), enlarge
the photo ``--upscale`` times (default: the network's scale) and paste the SR faces with a feathered mask. Writes
``OUT/<name>.png`` (same channels and bit depth), the LR and SR crops in ``OUT/crops/`` (``--no-crops`` to skip),
optionally the masks (``--save-masks``), and ``OUT/summary.json``. ``--profile`` prints where the time goes.

Problems with one file (unreadable, no face, wrong size for ``--aligned``) skip that file with a reason in the summary.
Everything else stops the run:

- Before any work (exit status 2, one ``error:`` line naming the option or file and the fix): every number is checked
  at parse time against its range (``RANGES``: ``--feather 5`` is refused, not a run that pastes nothing); the
  options of ``--backend`` (onnxruntime: ``--weights`` a ``.onnx`` file of ``fsr-export``, ``--device`` auto or cpu,
  no ``--param-key``; a fixed-shape file at its export size only; onnxruntime importable); the input
  must exist; the output path must not be the input, hold it, be a file or lie below one; the output folder must be new,
  empty, or one an earlier fsr-infer run made (its ``summary.json`` marks it), and a file there is replaced only when
  that run wrote it and it is unchanged (:class:`fsr_tools.infer_io.OutputFolder`): ``-i photos -o photos/sub`` with
  your own pictures in ``photos/sub`` is refused, ``-i photos -o photos/restored`` works and reruns; output names
  that clash (``x.png`` + ``x.PNG``, ``y.png`` + ``y.jpg`` + ``y_png.png``, compared ignoring case) are refused; the
  network, the weights (NaN or Inf weights are refused, naming the tensor) and the detector are loaded; one run per
  output folder at a time (a lock file ``.fsr.lock``: a second run names the first).
- During the work (exit status 3, one ``error:`` line; ``summary.json`` says ``"status": "failed"`` and lists what was
  done): a file that cannot be written (disk full: every file is written to a temporary name and renamed when
  complete, so no truncated file is left under a final name), a network output that is not finite for a face (nothing
  is pasted), memory or OpenCV failures. A failed write is never a skipped photo.

Folders an earlier run made, found in the input folder, are skipped and named (summary + printed): a run with ``-o
photos/restored_v2`` does not restore ``photos/restored``'s results again.

Exit status: 0 when at least one image was restored, 1 when none was (everything skipped), 2 on a usage or setup error
found before any work, 3 when the run failed during the work.
"""
import argparse
import os
import sys
import time

from fsr_utils.safety import UsageError, float_range, int_range, size_range

BACKENDS = ('torch', 'onnxruntime')  # fsr-infer --backend and FaceRestorer.load(backend=)

# The valid range of every number fsr-infer and FaceRestorer take (checked at parse time, and by FaceRestorer).
RANGES = dict(
    scale=dict(choices=(2, 4, 8, 16)),
    hr_size=dict(minimum=4, maximum=8192, integer=True),
    batch_size=dict(minimum=1, maximum=4096, integer=True),
    zoom=dict(minimum=0.25, maximum=4.),
    scale_tol=dict(minimum=0., maximum=10.),
    roll_tol=dict(minimum=0., maximum=180.),
    min_score=dict(minimum=0., maximum=1.),
    min_face=dict(minimum=4, maximum=100000, integer=True),
    detect_max_side=dict(minimum=32, maximum=1000000, integer=True),  # or 0: full size
    upscale=dict(minimum=1, maximum=16, integer=True),
    feather=dict(minimum=0., maximum=0.5),
    onnx_threads=dict(minimum=1, maximum=1024, integer=True),
)

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
    """'128' -> (128, 128); '216x176' / '216,176' -> (216, 176); each side in ``RANGES['hr_size']``."""
    return size_range(RANGES['hr_size']['minimum'], RANGES['hr_size']['maximum'])(text)


def _int(name):
    """argparse type: an integer in ``RANGES[name]``."""
    r = RANGES[name]
    return int_range(r.get('minimum'), r.get('maximum'), r.get('choices'))


def _float(name):
    """argparse type: a finite number in ``RANGES[name]``."""
    return float_range(RANGES[name]['minimum'], RANGES[name]['maximum'])


def _detect_max_side(text):
    """argparse type of --detect-max-side: 0 (full size) or an integer in ``RANGES['detect_max_side']``."""
    if text.strip() == '0':
        return 0
    r = RANGES['detect_max_side']
    try:
        return _int('detect_max_side')(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'must be 0 (full size) or an integer in [{r["minimum"]}, {r["maximum"]}], '
                                         f'not {text!r}')


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
        help='output folder (restored photos, crops/, summary.json): a new or empty folder, or one an earlier '
        'fsr-infer run made (only its files are replaced); not the folder of the input photos')
    net = p.add_argument_group('network')
    net.add_argument(
        '--opt',
        help='BasicSR options file (network_g, scale, path:pretrain_network_g, param_key_g); optional with --backend '
        "onnxruntime (then it gives the training data's HR size, zoom and LR kernel)")
    net.add_argument(
        '--net',
        help='registered network name with its paper configuration (PAPER_CONFIGS); not needed with --backend '
        'onnxruntime')
    net.add_argument(
        '--scale', type=_int('scale'), help='scale for --net: 2, 4, 8 or 16 (default 4); checked with --opt')
    net.add_argument(
        '--weights',
        help='checkpoint (BasicSR net_g_*.pth); default: path:pretrain_network_g of --opt. With --backend onnxruntime: '
        'the .onnx file written by fsr-export')
    net.add_argument(
        '--backend',
        choices=BACKENDS,
        default='torch',
        help='torch (default): build the network and load the checkpoint with PyTorch; onnxruntime: run the ONNX file '
        'of fsr-export (--weights FILE.onnx) on the CPU (no --opt or --net needed; a fixed-shape file takes its export '
        'size only)')
    net.add_argument(
        '--onnx-threads',
        type=_int('onnx_threads'),
        help="with --backend onnxruntime: onnxruntime's intra-op threads, 1-1024 (default: onnxruntime's, one per "
        'physical core)')
    net.add_argument(
        '--param-key',
        help="key of the weights in the checkpoint (default: the options' param_key_g, "
        "else params_ema, else params)")
    net.add_argument(
        '--device',
        default='auto',
        help='auto (GPU when available), cpu, cuda or cuda:N; with --backend onnxruntime: auto or cpu')
    net.add_argument(
        '--batch-size',
        type=_int('batch_size'),
        default=8,
        help='faces per network call (bounds memory), 1-4096. Default 8')
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
        type=_float('zoom'),
        help='alignment template zoom as given to '
        "fsr-prepare, 0.25-4 (default: the options' dataset manifest, else 1)")
    pre.add_argument(
        '--lr-kernel',
        choices=('matlab', 'pil-bicubic'),
        help="LR down-sampling of --aligned HR crops, as fsr-prepare's "
        "(default: the options' dataset manifest, else matlab = BasicSR's MATLAB-style imresize)")
    pre.add_argument(
        '--scale-tol',
        type=_float('scale_tol'),
        default=0.25,
        help='0-10: a face whose scale is within x(1 + tol) of the LR template (either way) is cut from the photo '
        'without resampling; others are resampled once to the template (or kept when larger). Default 0.25: measured '
        'with the demo TANet on held-out faces, a cut beat one resampling at every scale from 0.8 to 1.25 and roll up '
        'to 30 deg (scripts/measure_infer_tolerances.py)')
    pre.add_argument(
        '--roll-tol',
        type=_float('roll_tol'),
        default=30.,
        help='... and whose roll (in-plane rotation) is at most this many degrees, 0-180. Default 30 (the same '
        'measurement)')
    pre.add_argument(
        '--restore-large-faces',
        action='store_true',
        help='also restore faces larger than the LR input (they are down-sampled to it first and can come out softer '
        'than the input; by default they are left as they are)')
    pre.add_argument(
        '--min-score',
        type=_float('min_score'),
        default=0.9,
        help='ignore detections with a lower confidence, 0-1 (0.9, as fsr-prepare)')
    pre.add_argument('--aligned', action='store_true', help='inputs are aligned face crops of LR or HR size')
    pre.add_argument(
        '--detector', default='mtcnn', help="face detector backend: mtcnn (default, offline) or retinaface")
    pre.add_argument('--detector-weights', help='RetinaFace weights file (or an MTCNN weights folder)')
    pre.add_argument(
        '--min-face',
        type=_int('min_face'),
        default=20,
        help='smallest face box side searched for, in px, 4-100000 (20)')
    pre.add_argument(
        '--detect-max-side',
        type=_detect_max_side,
        default=2048,
        help='detect on a copy at most this long, 32-1000000 px (bounds detector memory on large photos; 0: full size)')
    post = p.add_argument_group('output')
    post.add_argument('--upscale', type=_int('upscale'), help='1-16: ' + UPSCALE_HELP)
    post.add_argument(
        '--feather',
        type=_float('feather'),
        default=0.1,
        help='soft mask ramp width, fraction of the crop, 0-0.5 (0.1; 0.5: the ramp reaches the centre)')
    post.add_argument('--save-masks', action='store_true', help='also write OUT/masks/<name>.png (ceil(255 * mask))')
    post.add_argument('--no-crops', action='store_true', help='do not write the LR/SR crops')
    post.add_argument(
        '--profile',
        action='store_true',
        help='print photos/s, faces/s and the time of each stage (read, detect, align, network, enlarge, paste, '
        'write)')
    post.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def check_backend(args):
    """The options that depend on ``--backend``, checked before any work (``UsageError``)."""
    if args.backend == 'onnxruntime':
        if args.device not in ('auto', 'cpu'):
            raise UsageError(f'--device {args.device}: --backend onnxruntime runs on the CPU; use --device cpu or auto '
                             '(or --backend torch for the GPU).')
        if args.param_key:
            raise UsageError(f'--param-key {args.param_key}: an ONNX file holds the weights it was exported with; '
                             'drop --param-key (fsr-export --param-key chooses them).')
        if not args.weights or not args.weights.lower().endswith('.onnx'):
            raise UsageError('--backend onnxruntime runs an ONNX file: pass --weights FILE.onnx (written by '
                             'fsr-export)' + (f', not {args.weights}.' if args.weights else '.'))
    else:
        if args.onnx_threads is not None:
            raise UsageError('--onnx-threads sets the threads of --backend onnxruntime: add --backend onnxruntime or '
                             'drop it.')
        if args.weights and args.weights.lower().endswith('.onnx'):
            raise UsageError(f'--weights {args.weights} is an ONNX file: add --backend onnxruntime to run it.')


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
        detect_max_side=args.detect_max_side,
        backend=args.backend,
        onnx_threads=args.onnx_threads)
    info = dict(restorer.info, aligned=bool(args.aligned), detector=None if args.aligned else args.detector)
    return restorer, info


def _write_crops(rec, folder, crops_stem):
    from fsr_tools.infer_io import rgb_float_to_uint8_bgr
    lr, sr = rec.pop('lr', None), rec.pop('sr', None)
    if crops_stem and lr is not None:
        base = f'crops/{crops_stem}_face{rec["index"]:02d}'
        rec['lr_crop'] = folder.write_image(f'{base}_lr.png', rgb_float_to_uint8_bgr(lr))
        rec['sr_crop'] = folder.write_image(f'{base}_sr.png', rgb_float_to_uint8_bgr(sr))


def _summary(info, inputs, photos, skipped, t0, status='done', error=None):
    all_faces = [f for p in photos for f in p['faces']]
    plans = {k: sum(f.get('plan') == k for f in all_faces) for k in ('cut', 'resampled', 'kept')}
    summary = dict(
        status=status,
        settings=info,
        counts=dict(
            inputs=len(inputs['photos']),
            restored_images=len(photos),
            faces=len(all_faces),
            faces_cut=plans['cut'],
            faces_resampled=plans['resampled'],
            faces_kept=plans['kept'],
            skipped=len(skipped),
            ignored=len(inputs['ignored']),
            skipped_folders=len(inputs['skipped_folders'])),
        photos=photos,
        skipped=skipped,
        ignored_files=inputs['ignored'],
        skipped_folders=inputs['skipped_folders'],
        seconds=round(time.time() - t0, 2))
    if error:
        summary['error'] = error
    return summary


def main(argv=None):
    """Entry point of ``fsr-infer``; returns the exit status (0 ok, 1 nothing restored, 2 setup error found before any
    work, 3 the run failed during the work)."""
    args = build_parser().parse_args(argv)
    t0 = time.time()
    from fsr_tools.infer_io import InferError, OutputFolder, find_inputs, output_names
    from fsr_utils.safety import FolderLock, check_output_path, error_exit, real
    lock = None
    try:
        check_backend(args)
        inputs = find_inputs(args.input, args.output)
        check_output_path(args.output, '-o', inputs=[(args.input, '-i / --input')], allow_inside_inputs=True)
        rels = [rel for _, rel in inputs['photos']]
        names = output_names(rels, crops=not args.no_crops, masks=args.save_masks)
        planned = [f'{names[r]}.png' for r in rels]
        planned += [f'masks/{names[r]}.png' for r in rels] if args.save_masks else []
        crop_stems = [] if args.no_crops else [names[r] for r in rels]
        folder = OutputFolder(args.output, protected={real(p) for p, _ in inputs['photos']})
        folder.check(planned, crop_stems)
        restorer, info = setup(args)
        if not args.aligned and inputs['photos']:
            restorer.get_detector()
        try:
            lock = FolderLock(args.output, 'fsr-infer', '-o').acquire()
        except OSError as e:
            raise UsageError(f'-o {args.output}: cannot make the folder or its lock file ({e}). Choose a writable '
                             'output folder.')
        folder.check(planned, crop_stems)  # again, now that no other run can write there
    except (InferError, UsageError) as e:
        if lock is not None:
            lock.release()
        return error_exit(e)
    try:
        return _run(args, inputs, names, folder, restorer, info, t0)
    finally:
        folder.close()
        lock.release()


def _run(args, inputs, names, folder, restorer, info, t0):
    """The work of a checked and locked run."""
    import cv2
    from tqdm import tqdm

    from fsr_tools.infer_io import InferError, SkipImage, read_image
    from fsr_utils.safety import error_exit
    photos, skipped = [], []
    io_time = dict(read=0., write=0.)
    path = None
    try:
        folder.begin(_summary(info, inputs, photos, skipped, t0, status='running'))
        t_work = time.perf_counter()
        for path, rel in tqdm(inputs['photos'], desc='fsr-infer', unit='img', disable=args.quiet):
            stem = names[rel]
            t1 = time.perf_counter()
            try:  # only an input that cannot be read, has no face or does not fit --aligned is skipped
                img, notes = read_image(path)
                io_time['read'] += time.perf_counter() - t1
                union = None
                if args.aligned:
                    out, rec = restorer.restore_aligned(img)
                    faces = [rec]
                else:
                    res = restorer.restore(img, union=args.save_masks)
                    out, faces, union = res if args.save_masks else (*res, None)
            except SkipImage as e:
                skipped.append(dict(input=path, reason=str(e)))
                continue
            t1 = time.perf_counter()
            for rec in faces:
                _write_crops(rec, folder, None if args.no_crops else stem)
            rec = dict(input=path, output=folder.write_image(f'{stem}.png', out))
            rec.update(size=list(img.shape[:2]), output_size=list(out.shape[:2]), notes=notes, faces=faces)
            if union is not None:
                rec['mask'] = folder.write_image(f'masks/{stem}.png', union)
            io_time['write'] += time.perf_counter() - t1
            photos.append(rec)
        path = None
        work = time.perf_counter() - t_work
        summary = _summary(info, inputs, photos, skipped, t0)
        if args.profile:
            n_faces = summary['counts']['faces']
            summary['profile'] = profile(restorer.timings, io_time, work, len(inputs['photos']), n_faces)
        folder.finish(summary)
    except (OSError, InferError, MemoryError, cv2.error) as e:
        # a failed write, a network output that is not finite, ...: an error, never a skipped photo
        what = f'{type(e).__name__}: {e}' if isinstance(e, (MemoryError, cv2.error)) else str(e)
        msg = f'{path}: {what}' if path and not isinstance(e, OSError) else what
        where = os.path.join(args.output, 'summary.json')
        try:
            folder.write_summary(_summary(info, inputs, photos, skipped, t0, status='failed', error=msg))
        except OSError:
            where = os.path.join(args.output, '.fsr-infer.journal')  # it names every file this run wrote
        return error_exit(
            f'{msg} (the run stopped; the {len(photos)} photo(s) completed before are listed in '
            f'{where})', status=3)
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
            f'output x{s["upscale"]}, network x{s["scale"]} on {s["lr_size"][0]}x{s["lr_size"][1]} LR faces' +
            (f' (onnxruntime: {s.get("onnx_file")})' if s.get('backend') == 'onnxruntime' else '')
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
    for s in summary['skipped_folders']:
        lines.append(f'  skipped folder {s["folder"]}: {s["reason"]}')
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
