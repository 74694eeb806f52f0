"""Writing BasicSR-format LMDBs (``data.mdb`` + ``meta_info.txt``) that a rerun can continue, and reading whole ones.

BasicSR's ``make_lmdb_from_imgs`` writes everything in one go and leaves a partial ``.lmdb`` behind when it fails.
Here the key/value pairs go in through transactions (an interrupted transaction leaves nothing), a key that is already
there is overwritten rather than added twice (LMDB keys are unique), the map grows when it is full, and
``meta_info.txt`` is written once at the end from the list of keys the caller says are complete.

Reading never turns a broken LMDB into images or a crash: a missing ``meta_info.txt`` or ``data.mdb``, a truncated
``data.mdb`` (checked against its meta page before any page is read: LMDB would otherwise kill the process with a bus
error), a key of ``meta_info.txt`` missing from the data and an image that does not decode each raise an error that
names the file and says how to rebuild it (:func:`rebuild_advice`: what a rerun of the tool that wrote the folder
actually does).
"""
import cv2
import lmdb
import numpy as np
import os
import os.path as osp


def encode_png(img, compress_level=1):
    """PNG bytes of a uint8 image (H, W, 3 BGR or H, W gray); raises ValueError if OpenCV cannot encode it."""
    return encode_image(img, 'png', compress_level)


def encode_image(img, fmt='png', compress_level=1):
    """PNG or BMP bytes of a uint8 image (BasicSR's ``imfrombytes`` decodes both; BMP: ~100x faster, 1.5x larger)."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, compress_level] if fmt == 'png' else []
    ok, buf = cv2.imencode('.' + fmt, img, params)
    if not ok:
        raise ValueError(f'cannot encode an image of shape {img.shape} as {fmt}')
    return buf.tobytes()


def image_shape(img):
    """The meta_info shape tuple (h, w, c) of a uint8 image (c = 1 for a gray image)."""
    h, w = img.shape[:2]
    return (h, w, img.shape[2] if img.ndim == 3 else 1)


def check_key(key):
    """BasicSR splits LMDB keys on '.' (meta_info.txt) and encodes them as ASCII: refuse anything else."""
    if not key or '.' in key or any(c.isspace() for c in key) or not key.isascii():
        raise ValueError(f'Invalid LMDB key {key!r}: keys must be non-empty ASCII without dots or spaces.')
    return key


class LmdbDamagedError(ValueError):
    """An LMDB that cannot be read as it should (not an LMDB, truncated ``data.mdb``, a key of ``meta_info.txt``
    missing from the data, an undecodable image). The message names the file and how to rebuild it."""


def rebuild_advice(lmdb_path, bad_value=False):
    """How to rebuild the LMDB ``lmdb_path``, by the marks of the tool that wrote its folder (what a rerun does).

    ``bad_value``: the damage is an image that does not decode; a rerun of fsr-prepare without ``--overwrite`` checks
    files and keys, not every image, so the advice is then ``--overwrite``.
    """
    folder = osp.dirname(osp.abspath(lmdb_path))
    parent = osp.dirname(folder)
    if osp.basename(folder) == '.staging':
        return (f'it belongs to the interrupted fsr-prepare run in {parent}, which cannot be continued: rerun that '
                'command with --overwrite to start again')
    if osp.isfile(osp.join(parent, 'recipe.json')) and osp.isfile(osp.join(folder, 'manifest.jsonl')):
        return (f'rebuild it: rerun the fsr-prepare --recipe command that made {parent} with --overwrite (its pool of '
                'faces is gone, so a rerun without --overwrite cannot repair it)')
    if osp.isfile(osp.join(folder, 'manifest.jsonl')) and bad_value:
        return f'rebuild it: rerun the fsr-prepare command that made {folder} with --overwrite'
    if osp.isfile(osp.join(folder, 'manifest.jsonl')):
        return (f'repair it: rerun the fsr-prepare command that made {folder} (same input and options): it checks the '
                'folder and redoes the faces it lacks')
    if osp.isfile(osp.join(folder, 'degradation.json')):
        return f'rebuild it: rerun the fsr-degrade command that made {folder} with --overwrite'
    return 'rebuild it with the tool that wrote it'


def lmdb_keys(path):
    """The keys (str) of the LMDB ``path`` after :func:`check_lmdb_file`; raises like it."""
    env = open_lmdb(path)
    try:
        with env.begin(write=False) as txn:
            return {k.decode('ascii', 'replace') for k in txn.cursor().iternext(keys=True, values=False)}
    finally:
        env.close()


def check_lmdb_file(path):
    """Check that ``path`` is an LMDB folder whose ``data.mdb`` is complete, before any page of it is read.

    LMDB maps ``data.mdb`` into memory: reading a page past the end of a truncated file kills the process with a bus
    error (no exception). The file must hold every page up to the last one its meta page names.

    Raises:
        FileNotFoundError: the folder or its ``data.mdb`` is missing.
        LmdbDamagedError: ``data.mdb`` is not an LMDB or is shorter than its pages.
    """
    data = osp.join(path, 'data.mdb')
    if not osp.isdir(path):
        raise FileNotFoundError(f'LMDB folder {path} does not exist.')
    if not osp.isfile(data):
        raise FileNotFoundError(f'{data} is missing: {path} is not a complete LMDB; {rebuild_advice(path)}.')
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as e:
        raise LmdbDamagedError(f'{data} is not a readable LMDB ({type(e).__name__}: {e}); {rebuild_advice(path)}.') \
            from None
    try:
        need = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    finally:
        env.close()
    size = os.path.getsize(data)
    if size < need:
        raise LmdbDamagedError(f'{data} is truncated ({size} bytes, its pages need {need}); {rebuild_advice(path)}.')


def open_lmdb(path):
    """A read-only environment of the LMDB ``path`` after :func:`check_lmdb_file`."""
    check_lmdb_file(path)
    return lmdb.open(path, readonly=True, lock=False, readahead=False)


def prune_lmdb(path, keep):
    """Delete the keys of the LMDB ``path`` that are not in ``keep`` (entries no manifest line owns)."""
    env = lmdb.open(path, map_size=max(1 << 20, os.path.getsize(osp.join(path, 'data.mdb'))))
    try:
        with env.begin(write=True) as txn:
            extra = [
                k for k in txn.cursor().iternext(keys=True, values=False) if k.decode('ascii', 'replace') not in keep
            ]
            for k in extra:
                txn.delete(k)
    finally:
        env.close()
    return len(extra)


class LmdbWriter:
    """Append-or-overwrite writer of one BasicSR-format LMDB.

    Args:
        path (str): folder ``*.lmdb`` (created if missing, reopened if present).
        map_size (int): initial map size in bytes; doubled whenever it is full.
        compress_level (int): PNG compression level, recorded in meta_info.txt as BasicSR does.
        fmt (str): 'png' (BasicSR's choice) or 'bmp' (no compression: much faster to decode).
    """

    def __init__(self, path, map_size=1 << 28, compress_level=1, fmt='png'):
        if not path.endswith('.lmdb'):
            raise ValueError(f'LMDB path must end with .lmdb, got {path}')
        os.makedirs(path, exist_ok=True)
        if osp.isfile(osp.join(path, 'data.mdb')) and osp.getsize(osp.join(path, 'data.mdb')) > 0:
            check_lmdb_file(path)  # a truncated file would kill the process at the first page read
        self.path = path
        self.compress_level = compress_level
        self.fmt = fmt
        self.env = lmdb.open(path, map_size=map_size)
        self.txn = None
        self.pending = []

    def keys(self):
        with self.env.begin(write=False) as txn:
            return {k.decode('ascii') for k in txn.cursor().iternext(keys=True, values=False)}

    def put_image(self, key, img):
        """Queue ``img`` (uint8) under ``key``; returns its meta_info shape tuple (h, w, c)."""
        self.put_bytes(key, encode_image(img, self.fmt, self.compress_level))
        return image_shape(img)

    def put_bytes(self, key, buf):
        """Queue the encoded image ``buf`` (bytes made by :func:`encode_image` with this writer's format and level,
        e.g. in a worker process) under ``key``."""
        check_key(key)
        self.pending.append((key.encode('ascii'), bytes(buf)))

    def commit(self):
        """Write the queued pairs in one transaction (all or nothing), growing the map if needed."""
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        txn.put(k, v, overwrite=True)
                self.pending = []
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()['map_size'] * 2)

    def close(self, commit=True):
        """Commit the queued pairs (unless ``commit`` is False: they are dropped) and close the environment."""
        if commit:
            self.commit()
        self.pending = []
        self.env.sync()
        self.env.close()


def write_meta_info(lmdb_path, entries, compress_level=1, fmt='png'):
    """Write ``meta_info.txt`` (``<key>.png (h,w,c) <level>`` per line, BasicSR's format) for [(key, shape)]."""
    tmp = osp.join(lmdb_path, 'meta_info.txt.tmp')
    with open(tmp, 'w') as f:
        for key, (h, w, c) in entries:
            f.write(f'{key}.{fmt} ({h},{w},{c}) {compress_level}\n')
    os.replace(tmp, osp.join(lmdb_path, 'meta_info.txt'))


def write_lmdb(lmdb_path, images, compress_level=1, fmt='png'):
    """Write a whole LMDB at once from ``images`` {key: uint8 image} (tests and small tools)."""
    writer = LmdbWriter(lmdb_path, compress_level=compress_level, fmt=fmt)
    entries = []
    for key, img in images.items():
        entries.append((key, writer.put_image(key, np.ascontiguousarray(img))))
    writer.close()
    write_meta_info(lmdb_path, entries, compress_level, fmt)
    return lmdb_path


IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def read_lmdb_images(path, flag=cv2.IMREAD_UNCHANGED):
    """All images of a BasicSR-format LMDB (``meta_info.txt`` + ``data.mdb``) as ``{key: ndarray}``, decoded with
    ``flag``.

    Raises (each message names the file and how to rebuild it, :func:`rebuild_advice`):
        FileNotFoundError: the folder, its ``meta_info.txt`` or its ``data.mdb`` is missing.
        LmdbDamagedError: ``data.mdb`` is not an LMDB or is truncated, a key of ``meta_info.txt`` is missing from it,
            or an image does not decode (never a ``None`` image).
    """
    meta = osp.join(path, 'meta_info.txt')
    if not osp.isdir(path):
        raise FileNotFoundError(f'LMDB folder {path} does not exist.')
    if not osp.isfile(meta):
        raise FileNotFoundError(f'{meta} is missing: {path} is not a complete BasicSR-format LMDB; '
                                f'{rebuild_advice(path)}.')
    with open(meta) as f:
        keys = [line.split(' ')[0].split('.')[0] for line in f if line.strip()]
    images = {}
    env = open_lmdb(path)
    try:
        with env.begin(write=False) as txn:
            for key in keys:
                buf = txn.get(key.encode('ascii'))
                if buf is None:
                    raise LmdbDamagedError(f'{osp.join(path, "data.mdb")} lacks the key {key} that {meta} lists '
                                           f'(incomplete LMDB); {rebuild_advice(path)}.')
                img = cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
                if img is None:
                    raise LmdbDamagedError(f'the image of key {key} in {osp.join(path, "data.mdb")} does not decode '
                                           f'(corrupt value); {rebuild_advice(path, bad_value=True)}.')
                images[key] = img
    finally:
        env.close()
    return images


def read_folder_images(path, flag=cv2.IMREAD_UNCHANGED):
    """All images of a folder (not recursive) as ``{file stem: ndarray}``, decoded with ``flag``."""
    images = {}
    for name in sorted(os.listdir(path)):
        if name.lower().endswith(IMG_EXTS):
            img = cv2.imread(osp.join(path, name), flag)
            if img is None:
                raise ValueError(f'cannot read image {osp.join(path, name)}')
            images[osp.splitext(name)[0]] = img
    return images
