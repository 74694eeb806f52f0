"""Writing BasicSR-format LMDBs (``data.mdb`` + ``meta_info.txt``) that a rerun can continue, and reading whole ones.

BasicSR's ``make_lmdb_from_imgs`` writes everything in one go and leaves a partial ``.lmdb`` behind when it fails.
Here the key/value pairs go in through transactions (an interrupted transaction leaves nothing), a key that is already
there is overwritten rather than added twice (LMDB keys are unique), the map grows when it is full, and
``meta_info.txt`` is written once at the end from the list of keys the caller says are complete.
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


def check_key(key):
    """BasicSR splits LMDB keys on '.' (meta_info.txt) and encodes them as ASCII: refuse anything else."""
    if not key or '.' in key or any(c.isspace() for c in key) or not key.isascii():
        raise ValueError(f'Invalid LMDB key {key!r}: keys must be non-empty ASCII without dots or spaces.')
    return key


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
        check_key(key)
        self.pending.append((key.encode('ascii'), encode_image(img, self.fmt, self.compress_level)))
        h, w = img.shape[:2]
        return (h, w, img.shape[2] if img.ndim == 3 else 1)

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
    ``flag``; a clear error when the LMDB is not one or lacks a key of its ``meta_info.txt``."""
    meta = osp.join(path, 'meta_info.txt')
    if not osp.isfile(meta):
        raise FileNotFoundError(f'{meta} is missing: {path} is not a BasicSR-format LMDB.')
    with open(meta) as f:
        keys = [line.split(' ')[0].split('.')[0] for line in f if line.strip()]
    images = {}
    env = lmdb.open(path, readonly=True, lock=False, readahead=False)
    try:
        with env.begin(write=False) as txn:
            for key in keys:
                buf = txn.get(key.encode('ascii'))
                if buf is None:
                    raise KeyError(f'{path}: key {key} of meta_info.txt is not in the LMDB (incomplete LMDB).')
                images[key] = cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
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
