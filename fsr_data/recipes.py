"""``fsr-prepare --recipe``: each paper's data protocol, from the user's own copy of the dataset, in one command.

``fsr-prepare ROOT --recipe NAME [--dataset celeba|helen|ffhq] -o OUT`` prepares every face of the selected photos into
``OUT/pool`` (a resumable ``fsr-prepare`` run), then splits the faces into ``OUT/train``, ``OUT/val``, ``OUT/test``
(ordinary ``fsr-prepare`` folders: ``hr.lmdb``, ``lr_x*.lmdb``, ``manifest.jsonl``, ``skipped.tsv``; the LMDB values
are copied byte for byte), writes ``OUT/recipe.json`` (what was asked, what was obtained) and removes the pool
(``--keep-pool`` keeps it). A rerun after an interruption continues where it stopped. Options given on the command
line override the recipe's (e.g. ``--parsing landmarks`` where BiSeNet weights are missing).

What each paper says (cited in :mod:`fsr_metrics.paper_results`) and what the recipe does:

- ``laat`` (LAAT, CelebA + Helen, x8): "we use MTCNN to crop the face region. After excluding images with a resolution
  smaller than 128x128, the image is resized to 128x128 ... about 178k images from CelebA, of which 177k images were
  used as HR training images ... we extract the remaining 1000 images from the cropped CelebA dataset and randomly
  extract 100 images from the cropped Helen dataset". Crop ``box`` (MTCNN box made square), ``--min-box 128``, 128x128,
  LR x8. CelebA: ``img_celeba`` (the in-the-wild photos: the aligned 178x218 images have faces under 128 px), every
  photo; test = the LAST 1,000 surviving faces in file-name order, train = all the others. Helen: every photo; test =
  100 surviving faces drawn with ``--split-seed``. OPEN: which 1,000 are "the remaining" (we take the last by name),
  the box margin (0).
- ``aminet`` (AMINet/AMIGAN, CelebA + Helen, x8): "We center-crop the aligned face images and resize them to 128x128
  ... randomly choose 18,000 CelebA images for training and 1,000 for testing". Crop ``center`` of
  ``img_align_celeba`` (178x178 centre square -> 128x128), LR x8; train = 18,000 drawn from partition 0 of
  ``list_eval_partition.txt``, test = 1,000 from partition 2 (rule ``fsrnet-celeba``, seed ``--split-seed``). OPEN:
  the paper draws "randomly" without naming partitions (we keep CelebA's identity-disjoint partitions); Helen's test
  count is not stated: DIC's 50 (the first 50 of ``testnames.txt``) aligned by 5 points (``align5``), Helen having no
  aligned release.
- ``tanet-ffhq`` (TANet Tables 1-2, x4 and x8): "randomly select 3800 images as the training dataset, 100 images as the
  validation dataset, 100 images as the testing dataset, and all HR images are resized to 256x256". FFHQ's numbered
  PNGs (``images1024x1024`` preferred over other copies), one shuffle with ``--split-seed``: the first 3,800 train, the
  next 100 val, the next 100 test; crop ``center`` (the whole aligned image) resized to 256x256.
- ``tanet-celeba`` (TANet Table 3): "randomly choose 4000 images from CelebA dataset, and then use 3800 images for
  training, 100 images for validation and the rest of 100 images for testing. All HR images are resized to 216x176".
  ``img_align_celeba`` (218x178), one shuffle: 3,800 / 100 / 100; the central 216x176 pixels are cut (no resampling:
  the paper's "resized" from 218x178 to 216x176 is a 1-pixel border; OPEN).
- ``wnet-mode1`` (W-Net Training Mode I = DIC's protocol): "OpenFace to detect 68 facial keypoints and crop the images
  based on these keypoints, resizing them to 128x128 ... 168,854 images (Training Mode I) ... 100 images are used for
  validation, and 1000 images are used for testing", Helen "50 images". Crop ``landmarks68`` (OpenFace's
  ``AlignDlib`` transform with dlib's 68 landmarks) of ``img_celeba`` ("the facial images have inconsistent heights and
  widths": the in-the-wild photos), every photo; surviving faces in file-name order: the first 168,854 train, the next
  100 val, the next 1,000 test. Parsing maps: BiSeNet (``--bisenet-weights``), as the paper. Helen: the first 50 of
  ``testnames.txt``. OPEN: the order of val and test after train.
- ``wnet-mode2`` (W-Net Training Mode II = RAAN's 18,000 / 100): same crop; rule ``fsrnet-celeba`` (18,000 from
  partition 0, 100 from partition 2) on ``img_celeba``; Helen as mode I.

Detection-based recipes (``laat``, ``wnet-*``) can lose photos (no face, face too small): ``recipe.json`` and the
summary give the counts obtained against the paper's; rules that draw names before detection (``wnet-mode2``, ``aminet``
Helen) can come out short, rules that split the surviving faces (``laat``, ``wnet-mode1``) cannot.

Dataset layouts found under ROOT (any depth up to 3): CelebA ``img_celeba/`` or ``img_align_celeba/`` holding
``000001.jpg`` ... and ``list_eval_partition.txt`` (Kaggle's nested ``img_align_celeba/img_align_celeba`` works);
Helen: its photos anywhere below ROOT (``helen_1/`` ... ``helen_5/`` or one folder) and ``testnames.txt`` (names
without extension); FFHQ: ``NNNNN.png`` files (``images1024x1024/00000/00000.png`` or flat).

``--recipe-scale F`` (in (0, 1]) multiplies every count (at least 1 each): the tests run each recipe on a tiny fake copy
of the dataset's layout.

Files (as plain ``fsr-prepare``, :mod:`fsr_data.prepare`): the photos are selected (every input checked) before
anything is written or deleted; the run holds the lock of OUT (a second run names the holder and exits 2); an OUT
inside ROOT is skipped when ROOT is searched; ``pool``, ``train``, ``val``, ``test``, ``recipe.json`` and
``skipped.tsv`` are written or deleted (``--overwrite``) only when fsr-prepare made them: a file or folder of one of
those names that it did not make refuses the run before one file goes. A finished recipe folder cannot be repaired by
a rerun (its pool is gone): ``--overwrite`` rebuilds it.
"""
import json
import os
import os.path as osp
import re
import shutil

# per recipe: prepare options, and per dataset: images folder, selection, counts
RECIPES = {
    'laat':
    dict(
        options=dict(crop='box', min_box=128, hr_size=(128, 128), scales=[8], parsing='none'),
        datasets={
            'celeba': dict(images='img_celeba', select='all', assign='tail', counts={'test': 1000}),
            'helen': dict(images=None, select='all', assign='random', counts={'test': 100}),
        },
        default='celeba'),
    'aminet':
    dict(
        options=dict(crop='center', hr_size=(128, 128), scales=[8], parsing='none'),
        datasets={
            'celeba': dict(images='img_align_celeba', select='partition', counts={
                'train': 18000,
                'test': 1000
            }),
            'helen': dict(images=None, select='helen-test', counts={'test': 50}, options=dict(crop='align5')),
        },
        default='celeba'),
    'tanet-ffhq':
    dict(
        options=dict(crop='center', hr_size=(256, 256), scales=[4, 8], parsing='none'),
        datasets={'ffhq': dict(images=None, select='random', counts={
            'train': 3800,
            'val': 100,
            'test': 100
        })},
        default='ffhq'),
    'tanet-celeba':
    dict(
        options=dict(crop='center', hr_size=(216, 176), center_size=(216, 176), scales=[4, 8], parsing='none'),
        datasets={
            'celeba': dict(images='img_align_celeba', select='random', counts={
                'train': 3800,
                'val': 100,
                'test': 100
            })
        },
        default='celeba'),
    'wnet-mode1':
    dict(
        options=dict(crop='landmarks68', hr_size=(128, 128), scales=[4, 8], parsing='bisenet'),
        datasets={
            'celeba':
            dict(
                images='img_celeba', select='all', assign='ordered', counts={
                    'train': 168854,
                    'val': 100,
                    'test': 1000
                }),
            'helen':
            dict(images=None, select='helen-test', counts={'test': 50}),
        },
        default='celeba'),
    'wnet-mode2':
    dict(
        options=dict(crop='landmarks68', hr_size=(128, 128), scales=[4, 8], parsing='bisenet'),
        datasets={
            'celeba': dict(images='img_celeba', select='partition', counts={
                'train': 18000,
                'test': 100
            }),
            'helen': dict(images=None, select='helen-test', counts={'test': 50}),
        },
        default='celeba'),
}
SUBSETS = ('train', 'val', 'test')


def _dataset(recipe, dataset):
    r = RECIPES[recipe]
    dataset = dataset or r['default']
    if dataset not in r['datasets']:
        raise SystemExit(f'fsr-prepare: error: --recipe {recipe} has no --dataset {dataset} (it has '
                         f'{", ".join(r["datasets"])})')
    return dataset, r['datasets'][dataset]


def recipe_defaults(recipe, dataset=None):
    """argparse defaults (dest -> value) that ``--recipe`` sets; explicit options override them."""
    _, d = _dataset(recipe, dataset)
    opts = dict(RECIPES[recipe]['options'], **d.get('options', {}))
    return {k: (list(v) if k == 'scales' else v) for k, v in opts.items()}


def scaled(counts, factor):
    """The counts multiplied by ``factor`` (rounded, at least 1 each)."""
    return {k: max(1, int(round(v * factor))) for k, v in counts.items()}


# --------------------------------------------------------------------------------------------------- dataset layouts
def _walk(root, max_depth=3, exclude=()):
    """(folder, files) under ``root`` up to ``max_depth``; hidden folders, the folders in ``exclude`` (the output, when
    it lies inside ROOT) and the folders a tool of the plugin made are skipped (they hold no dataset photos)."""
    from fsr_data.prepare import skipped_folder
    root = osp.abspath(root)
    for d, dirs, files in os.walk(root):
        depth = osp.relpath(d, root).count(os.sep) + (d != root)
        dirs[:] = sorted(
            x for x in dirs
            if not x.startswith('.') and not skipped_folder(osp.join(d, x), exclude)) if depth < max_depth else []
        yield d, sorted(files)


def _find_file(root, name, exclude=()):
    for d, files in _walk(root, exclude=exclude):
        if name in files:
            return osp.join(d, name)
    raise FileNotFoundError(
        f'{name} not found under {root} (searched 3 levels): the recipe needs it; put the dataset\'s '
        f'{name} there.')


def _find_images_dir(root, name, exclude=()):
    """The folder called ``name`` that holds images (the deepest one: Kaggle nests img_align_celeba twice)."""
    best = None
    for d, files in _walk(root, exclude=exclude):
        if osp.basename(d) == name and any(f.lower().endswith('.jpg') for f in files):
            best = d
    if best is None:
        raise FileNotFoundError(f'no folder {name}/ with .jpg photos under {root}: --recipe expects the dataset\'s own '
                                f'layout (e.g. {name}/000001.jpg).')
    return best


def _images_under(root, pattern=None, max_depth=3, exclude=()):
    from fsr_data.prepare import IMG_EXTS
    out = []
    for d, files in _walk(root, max_depth, exclude):
        for f in files:
            if f.lower().endswith(IMG_EXTS) and (pattern is None or re.fullmatch(pattern, f)):
                out.append(osp.relpath(osp.join(d, f), root))
    return sorted(out)


def select_photos(recipe, dataset, root, seed=0, factor=1.0, exclude=()):
    """(images root, {subset: [relative paths]} before detection or None, pool paths, counts, assign rule).

    ``exclude``: folders not searched (the output folder, when it lies inside ``root``)."""
    import numpy as np

    from fsr_data.prepare import read_split_file, select_split
    dataset, d = _dataset(recipe, dataset)
    counts = scaled(d['counts'], factor)
    select = d['select']
    if dataset == 'celeba':
        img_root = _find_images_dir(root, d['images'], exclude)
        names = _images_under(img_root, r'\d{6}\.jpg', max_depth=0, exclude=exclude)
    elif dataset == 'helen':
        img_root = osp.abspath(root)
        names = _images_under(img_root, exclude=exclude)
    else:  # ffhq
        img_root = osp.abspath(root)
        for d_, _ in _walk(root, exclude=exclude):
            if osp.basename(d_) == 'images1024x1024':
                img_root = d_
                break
        names = _images_under(img_root, r'\d{5}\.png', exclude=exclude)
    if not names:
        raise FileNotFoundError(f'no {dataset} photos found under {root}')
    subsets = None
    if select == 'partition':
        part_file = _find_file(root, 'list_eval_partition.txt', exclude)
        rows = read_split_file(part_file)
        have = set(names)
        rows = [(n, p) for n, p in rows if n in have]
        subsets = {
            s: select_split(rows, 'fsrnet-celeba', s, seed, counts.get('train', 0), counts.get('test', 0))
            for s in ('train', 'test')
        }
    elif select == 'random':
        need = sum(counts.values())
        if len(names) < need:
            raise ValueError(f'--recipe {recipe} needs {need} {dataset} photos, {root} has {len(names)}')
        order = np.random.RandomState(seed).permutation(len(names))
        subsets, i = {}, 0
        for s in SUBSETS:
            if s in counts:
                subsets[s] = sorted(names[j] for j in order[i:i + counts[s]])
                i += counts[s]
    elif select == 'helen-test':
        by_stem = {}
        for n in names:
            by_stem.setdefault(osp.splitext(osp.basename(n))[0], n)
        test_names = [ln.split()[0] for ln in open(_find_file(root, 'testnames.txt', exclude)) if ln.strip()]
        missing = [t for t in test_names[:counts['test']] if osp.splitext(t)[0] not in by_stem]
        if missing:
            raise FileNotFoundError(f'{len(missing)} Helen test photos of testnames.txt are missing under {root}, e.g. '
                                    f'{missing[0]}')
        if len(test_names) < counts['test']:
            raise ValueError(f'testnames.txt lists {len(test_names)} names, the recipe needs {counts["test"]}')
        subsets = {'test': [by_stem[osp.splitext(t)[0]] for t in test_names[:counts['test']]]}
    pool = sorted({n for v in subsets.values() for n in v}) if subsets is not None else names
    return img_root, subsets, pool, counts, d.get('assign')


def assign_faces(keys_by_source, subsets, counts, assign, seed=0):
    """{subset: [face keys]} from the pool's faces ({source: [keys]}, sources in name order)."""
    import numpy as np
    if subsets is not None:
        return {s: [k for n in names for k in keys_by_source.get(n, [])] for s, names in subsets.items()}
    keys = [k for n in sorted(keys_by_source) for k in keys_by_source[n]]
    if assign == 'tail':  # LAAT: the last N test, the rest train
        n = counts['test']
        return {'train': keys[:max(0, len(keys) - n)], 'test': keys[max(0, len(keys) - n):]}
    if assign == 'ordered':  # DIC / W-Net mode I: train, val, test in name order
        out, i = {}, 0
        for s in SUBSETS:
            if s in counts:
                out[s] = keys[i:i + counts[s]]
                i += counts[s]
        return out
    if assign == 'random':  # LAAT Helen: N drawn from the surviving faces
        order = np.random.RandomState(seed).permutation(len(keys))[:counts['test']]
        return {'test': sorted(keys[i] for i in order)}
    raise ValueError(f'unknown assign rule {assign!r}')


# ------------------------------------------------------------------------------------------------------- the split
def _copy_subset(pool, dst, keys, lmdb_names, sources):
    """Write the dataset folder ``dst`` with the faces ``keys`` of the finished dataset folder ``pool``."""
    import lmdb
    tmp = dst + '.partial'
    if osp.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    want = set(keys)
    for n in lmdb_names:
        src_path = osp.join(pool, f'{n}.lmdb')
        meta = [ln for ln in open(osp.join(src_path, 'meta_info.txt')) if ln.split('.', 1)[0] in want]
        env = lmdb.open(src_path, readonly=True, lock=False, readahead=False)
        size = max(1 << 20, int(env.info()['map_size']))
        out_env = lmdb.open(osp.join(tmp, f'{n}.lmdb'), map_size=size)
        with env.begin() as txn, out_env.begin(write=True) as otxn:
            for k in sorted(want):
                v = txn.get(k.encode('ascii'))
                if v is None:
                    raise RuntimeError(f'{src_path} has no key {k}')
                otxn.put(k.encode('ascii'), v)
        env.close()
        out_env.close()
        with open(osp.join(tmp, f'{n}.lmdb', 'meta_info.txt'), 'w') as f:
            f.writelines(meta)
    with open(osp.join(tmp, 'manifest.jsonl'), 'w') as f:
        f.writelines(ln for ln in open(osp.join(pool, 'manifest.jsonl')) if json.loads(ln)['key'] in want)
    lines = open(osp.join(pool, 'skipped.tsv')).read().split('\n')
    with open(osp.join(tmp, 'skipped.tsv'), 'w') as f:
        f.write(lines[0] + '\n')
        f.writelines(ln + '\n' for ln in lines[1:] if ln and sources is not None and ln.split('\t', 1)[0] in sources)
    if osp.isdir(dst):
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _recipe_made(out):
    """True when ``out/recipe.json`` is the report of ``fsr-prepare --recipe``."""
    try:
        with open(osp.join(out, 'recipe.json')) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and 'recipe' in data


def _recipe_outputs(out):
    """(paths under ``out`` that fsr-prepare --recipe made, paths of those names it did not make)."""
    from fsr_data.prepare import SKIP_HEADER, _first_line, made_by_prepare
    present, foreign = [], []
    for name in ('pool', ) + SUBSETS + tuple(f'{s}.partial' for s in SUBSETS):
        p = osp.join(out, name)
        if osp.lexists(p):
            (present if osp.isdir(p) and not osp.islink(p) and made_by_prepare(p) else foreign).append(p)
    for name, ours in (('recipe.json', _recipe_made(out)), ('skipped.tsv',
                                                            _first_line(osp.join(out, 'skipped.tsv')) == SKIP_HEADER)):
        p = osp.join(out, name)
        if osp.lexists(p):
            (present if ours else foreign).append(p)
    return present, foreign


def _check_outputs(out, job, overwrite):
    """Check the names a recipe writes under ``out``; with ``--overwrite`` delete them. Each is deleted only when
    fsr-prepare made it (its marks: :func:`fsr_data.prepare.made_by_prepare`, ``recipe.json``'s fields, the skip
    report's header); one that it did not make refuses the run (with or without ``--overwrite``) before one file
    goes."""
    from fsr_utils.safety import UsageError
    present, foreign = _recipe_outputs(out)
    if foreign:
        raise UsageError(f'-o {out} holds {foreign[0]}, which fsr-prepare --recipe did not make: it never writes over '
                         'or deletes what it did not make, with or without --overwrite. Move it away or choose '
                         'another output folder.')
    if not overwrite or not present:
        return
    job.load_models()  # every model and weight file loads before anything is deleted
    for p in present:
        if osp.isdir(p):
            shutil.rmtree(p)
        else:
            os.remove(p)


def run_recipe(args, _fault=None):
    """``fsr-prepare --recipe``: pool -> split -> recipe.json (module docstring). Returns a summary dict.

    The photos are selected (every input checked) before anything is written or deleted; the run holds the lock of
    the output root (:class:`fsr_utils.safety.FolderLock`) and its pool run the lock of ``OUT/pool``.
    """
    from fsr_utils.safety import FolderLock
    out = args.output
    dataset, _ = _dataset(args.recipe, args.dataset)
    report_path = osp.join(out, 'recipe.json')
    if osp.isfile(report_path) and not args.overwrite:
        print(f'{out} is complete ({report_path} present); nothing to do (--overwrite to redo it).')
        return dict(json.load(open(report_path)), status='complete')
    img_root, subsets, pool_names, counts, assign = select_photos(
        args.recipe, dataset, args.input, args.split_seed, args.recipe_scale, exclude=[out])
    with FolderLock(out, 'fsr-prepare', '-o'):
        if osp.isfile(report_path) and not args.overwrite:  # finished by another run meanwhile
            print(f'{out} is complete ({report_path} present); nothing to do (--overwrite to redo it).')
            return dict(json.load(open(report_path)), status='complete')
        return _run_recipe_locked(args, dataset, out, report_path, img_root, subsets, pool_names, counts, assign,
                                  _fault)


def _run_recipe_locked(args, dataset, out, report_path, img_root, subsets, pool_names, counts, assign, _fault):
    from fsr_data.prepare import PrepareJob
    pool = osp.join(out, 'pool')
    job_args = _copy_args(args, output=pool, overwrite=False)
    job = PrepareJob(job_args, img_root, pool_names)
    job.announce = False  # its line would name OUT/pool/skipped.tsv, which goes away: the recipe's line names its copy
    _check_outputs(out, job, args.overwrite)  # the pool run itself resumes: with --overwrite the pool goes here
    job.run(_fault=_fault)
    shutil.copyfile(osp.join(pool, 'skipped.tsv'), osp.join(out, 'skipped.tsv'))
    n_skipped = sum(1 for ln in open(osp.join(out, 'skipped.tsv')).read().split('\n')[1:] if ln)
    keys_by_source = {}
    for ln in open(osp.join(pool, 'manifest.jsonl')):
        e = json.loads(ln)
        keys_by_source.setdefault(e['source'], []).append(e['key'])
    for v in keys_by_source.values():
        v.sort(key=lambda k: (len(k), k))
    faces = assign_faces(keys_by_source, subsets, counts, assign, args.split_seed)
    result = {}
    for s in SUBSETS:
        if s not in faces:
            continue
        srcs = set(subsets[s]) if subsets is not None else None
        _copy_subset(pool, osp.join(out, s), faces[s], job.lmdb_names, srcs)
        result[s] = dict(faces=len(faces[s]), paper=counts.get(s))
    report = dict(
        recipe=args.recipe,
        dataset=dataset,
        input=osp.abspath(args.input),
        images=img_root,
        seed=args.split_seed,
        recipe_scale=args.recipe_scale,
        options=job.options(),
        photos=len(pool_names),
        pool_faces=sum(len(v) for v in keys_by_source.values()),
        subsets=result)
    with open(report_path + '.tmp', 'w') as f:
        json.dump(report, f, indent=1)
    os.replace(report_path + '.tmp', report_path)
    if not args.keep_pool:
        shutil.rmtree(pool)
    if not args.quiet:
        got = ', '.join(f'{s} {r["faces"]}' + (f' (paper: {r["paper"]})' if r['paper'] else '')
                        for s, r in result.items())
        print(f'fsr-prepare --recipe {args.recipe} ({dataset}): {got} in {out} ({n_skipped} photos skipped: '
              f'{osp.join(out, "skipped.tsv")}; protocol: {report_path})')
    return dict(report, status='done')


def _copy_args(args, **changes):
    import argparse
    d = dict(vars(args), **changes)
    return argparse.Namespace(**d)
