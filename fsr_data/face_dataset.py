"""Paired face dataset (LR, HR and, on request, parsing maps) for BasicSR: ``FSRFaceDataset``.

Reads what ``fsr-prepare`` writes (``hr.lmdb``, ``lr_x4.lmdb``, ``lr_x8.lmdb``, ``parsing.lmdb``; BasicSR-format LMDBs
with ``meta_info.txt``) or plain folders of PNG files with the same base names.

Options (those of BasicSR's ``PairedImageDataset`` plus the parsing ones):

- ``dataroot_gt``, ``dataroot_lq``, ``io_backend`` (``{type: lmdb}`` or ``{type: disk}``), ``meta_info_file`` and
  ``filename_tmpl`` (folders only), ``scale``, ``phase``, ``mean``/``std``, ``color: y``: as ``PairedImageDataset``.
- ``gt_size`` (train only): HR patch size, an int or ``[h, w]`` (e.g. ``[216, 176]``); must be a multiple of
  ``scale``. Left out (or ``~``), or equal to the HR size: no crop, the whole face (the usual FSR setting).
- ``use_hflip``, ``use_rot``: as BasicSR (``basicsr.data.transforms.augment``): horizontal flip, vertical flip and
  transpose, each with probability 0.5.
- ``rot_mode``: ``'basicsr'`` (default, above) or ``'rot90'`` (TANet's paper: rotation by a random multiple of 90
  degrees - 0, 90, 180 or 270 - then a horizontal flip with probability 0.5 if ``use_hflip``). With both ``use_hflip``
  and ``use_rot`` the two modes draw from the same 8 flips/rotations with equal probabilities; they differ when
  ``use_hflip`` is false (``'rot90'`` then never mirrors the face, ``'basicsr'`` does through the vertical flip and
  the transpose). On non-square patches only the shape-preserving transforms are drawn, evenly: ``'basicsr'`` draws
  the horizontal and vertical flips (the transpose is left out), ``'rot90'`` a rotation by 0 or 180 degrees with
  probability 0.5 each, then the horizontal flip.
- ``dataroot_parsing``: parsing label maps (19 CelebAMask-HQ classes, 1-channel uint8 PNG at HR size):
  ``parsing.lmdb`` with the LMDB backend, a folder of ``<gt base name>.png`` with the disk backend. Needed by the
  flags below.
- ``return_parsing``: adds ``'parsing_gt'`` LongTensor (H, W), labels 0..18.
- ``return_parsing_lq``: adds ``'parsing_lq'`` LongTensor (h, w): the label map sampled at the LR pixel centres
  (nearest).
- ``return_binary_parsing``: adds ``'parsing_bin_gt'`` float (1, H, W), skin (label 1) = 1 else 0, and
  ``'parsing_bin_lq'`` float (1, h, w), the binary map downsampled to LR size by antialiased bicubic (``torch``
  ``interpolate(mode='bicubic', antialias=True)``, clamped to [0, 1]; W-Net: LR parsing targets are
  bicubic-downsampled).
- ``return_component_masks``: adds ``'masks'`` float (4, H, W) in {0, 1}: eyes {4, 5}, brows {2, 3}, nose {10}, mouth
  {11, 12, 13}.
- ``degradation``: make the LR face from the HR face on the fly (``dataroot_lq`` is then not read and may be left
  out) with BasicSR's degradation functions: blur, down-sampling with a random interpolation, Gaussian/Poisson noise,
  JPEG (``fsr_data/degradations.py``: every probability and range is an option there; the defaults are Real-ESRGAN's
  first degradation stage). ``degradation: true`` or ``{}``: the defaults; ``degradation: medium`` (a level name) or
  ``{level: medium, jpeg_range: [40, 60], ...}``: a level and/or options. Training draws new degradations at every
  read; validation/test degrade each face with a fixed seed (``degradation: {seed: N}``, default 0, and the face's
  key). The HR face is mod-cropped to a multiple of ``scale`` first; the LR face is made from the whole HR face, then
  cropped and flipped/rotated with the HR face and the label map as below, so parsing maps and masks stay aligned with
  the HR face. ``lq_path`` is then the HR face's path (the LR face has no file).

Every geometric transform is applied to lq, gt and the label map together. A transform that mirrors the face
(horizontal flip, and in ``'basicsr'`` mode also the vertical flip and the transpose; two mirrors cancel) swaps the
left/right labels 2<->3 (brows), 4<->5 (eyes), 7<->8 (ears), so that ``l_eye`` stays the face's left eye.

For the same keys, lq/gt/lq_path/gt_path are those of ``PairedImageDataset`` (same decoding, same crop, same random
draws in ``'basicsr'`` mode with a square ``gt_size``).
"""
import cv2
import functools
import lmdb
import numpy as np
import os
import os.path as osp
import random
import torch
from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from basicsr.utils import FileClient, bgr2ycbcr, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.nn import functional as F
from torch.utils import data as data
from torchvision.transforms.functional import normalize

from fsr_data.lmdb_io import LmdbDamagedError, rebuild_advice
from fsr_utils.compat import check_pair_size, check_set_sizes

NUM_PARSING_CLASSES = 19
PARSING_LABELS = ('background', 'skin', 'l_brow', 'r_brow', 'l_eye', 'r_eye', 'eye_g', 'l_ear', 'r_ear', 'ear_r',
                  'nose', 'mouth', 'u_lip', 'l_lip', 'neck', 'neck_l', 'cloth', 'hair', 'hat')
# left/right pairs swapped by a mirror
LR_SWAP_PAIRS = ((2, 3), (4, 5), (7, 8))
# component masks: eyes, brows, nose, mouth (the order of the 'masks' channels)
COMPONENT_LABELS = (
    (4, 5),
    (2, 3),
    (10, ),
    (11, 12, 13),
)
COMPONENT_NAMES = ('eyes', 'brows', 'nose', 'mouth')


def _make_swap_lut():
    lut = np.arange(256, dtype=np.uint8)
    for a, b in LR_SWAP_PAIRS:
        lut[a], lut[b] = b, a
    return lut


SWAP_LUT = _make_swap_lut()


def _make_component_lut():
    lut = np.zeros(256, dtype=np.uint8)
    for c, labels in enumerate(COMPONENT_LABELS):
        lut[list(labels)] = c + 1
    return lut


COMPONENT_LUT = _make_component_lut()
_COMPONENT_IDS = np.arange(1, len(COMPONENT_LABELS) + 1, dtype=np.uint8)[:, None, None]


def swap_left_right(parsing):
    """Swap the left/right labels (2<->3, 4<->5, 7<->8) of a uint8 label map."""
    return SWAP_LUT[parsing]


def component_masks(parsing):
    """(4, H, W) float32 masks (eyes, brows, nose, mouth) of a uint8 (H, W) label map."""
    return (COMPONENT_LUT[parsing][None] == _COMPONENT_IDS).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _aa_bicubic_matrices(in_h, in_w, out_h, out_w):
    """Matrices (Rh, Rw) with ``Rh @ x @ Rw`` == torch ``interpolate(x, (out_h, out_w), 'bicubic', antialias=True)``.

    The resize is linear and separable; its matrices are the resize of identity matrices (computed once per size).
    """
    eye_h = torch.eye(in_h)[None, None]
    eye_w = torch.eye(in_w)[None, None]
    rh = F.interpolate(eye_h, size=(out_h, in_h), mode='bicubic', align_corners=False, antialias=True)[0, 0]
    rw = F.interpolate(eye_w, size=(in_w, out_w), mode='bicubic', align_corners=False, antialias=True)[0, 0]
    return rh.contiguous(), rw.contiguous()


def bicubic_downsample(x, out_h, out_w):
    """Antialiased bicubic resize (torch's kernel) of a float32 (H, W) tensor, clamped to [0, 1]."""
    rh, rw = _aa_bicubic_matrices(x.shape[0], x.shape[1], out_h, out_w)
    return torch.mm(torch.mm(rh, x), rw).clamp_(0, 1)


def _to_hw(size, name):
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ValueError(f'{name} must be an int or [h, w], got {size}.')
        return int(size[0]), int(size[1])
    return int(size), int(size)


# real path -> [read-only LMDB environment, number of open SharedLmdbClient readers]
_LMDB_ENVS = {}


def _check_complete(env, path):
    """Close ``env`` and raise when its ``data.mdb`` is shorter than its pages: LMDB maps the file into memory, and
    reading a page past the end of a truncated file kills the process with a bus error (no exception)."""
    data = osp.join(path, 'data.mdb')
    need = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    size = os.path.getsize(data)
    if size < need:
        env.close()
        raise LmdbDamagedError(f'{data} is truncated ({size} bytes, its pages need {need}); {rebuild_advice(path)}.')


class SharedLmdbClient:
    """``get(key, client_key)`` of BasicSR's ``FileClient('lmdb')``, one read-only environment per LMDB and process.

    LMDB refuses to open one file twice in a process, which BasicSR's ``LmdbBackend`` does when a training and a
    validation dataset read the same LMDB (the run then dies at its first validation). Here the datasets of a process
    share the environment, which :meth:`close` closes when its last reader closes. The refusal is inherited by forked
    DataLoader workers, so a worker forked after the main process opened an LMDB reads through the inherited
    environment (read-only, without a lock file: ``lock=False``) where BasicSR's reader would fail.
    """

    def __init__(self, db_paths, client_keys):
        self.keys = {client_key: osp.realpath(path) for client_key, path in zip(client_keys, db_paths)}
        self.envs = {}
        for client_key, path in zip(client_keys, db_paths):
            entry = _LMDB_ENVS.get(self.keys[client_key])
            if entry is None:
                try:
                    env = lmdb.open(path, readonly=True, lock=False, readahead=False)
                except lmdb.Error as exc:
                    raise ValueError(f'{path} cannot be opened as an LMDB ({type(exc).__name__}: {exc}): its data.mdb '
                                     f'is damaged or not an LMDB; {rebuild_advice(path)}.') from None
                _check_complete(env, path)
                entry = _LMDB_ENVS[self.keys[client_key]] = [env, 0]
            entry[1] += 1
            self.envs[client_key] = entry[0]

    def get(self, filepath, client_key):
        with self.envs[client_key].begin(write=False) as txn:
            return txn.get(str(filepath).encode('ascii'))

    def close(self):
        for key in self.keys.values():
            entry = _LMDB_ENVS.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    entry[0].close()
                    del _LMDB_ENVS[key]
        self.envs, self.keys = {}, {}


@DATASET_REGISTRY.register()
class FSRFaceDataset(data.Dataset):
    """Paired LR/HR face dataset with optional parsing maps and component masks (see the module docstring)."""

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = dict(opt['io_backend'])
        self.mean = opt.get('mean')
        self.std = opt.get('std')
        self.scale = int(opt['scale'])
        self.phase = opt.get('phase', 'train')
        self.degradation = None
        if opt.get('degradation') not in (None, False):
            from fsr_data.degradations import degradation_options
            self.degradation = degradation_options(opt['degradation'])
        if opt.get('dataroot_lq') is None and self.degradation is None:
            raise ValueError('FSRFaceDataset: dataroot_lq is missing (the LR faces), and no degradation option makes '
                             'them from the HR faces: set dataroot_lq or degradation.')
        self.gt_folder = str(opt['dataroot_gt'])
        # with a degradation, the LR faces are made from the HR faces: a given dataroot_lq is not read
        self.lq_folder = self.gt_folder if self.degradation is not None else str(opt['dataroot_lq'])
        self.filename_tmpl = opt.get('filename_tmpl', '{}')
        self.return_parsing = bool(opt.get('return_parsing', False))
        self.return_parsing_lq = bool(opt.get('return_parsing_lq', False))
        self.return_binary = bool(opt.get('return_binary_parsing', False))
        self.return_masks = bool(opt.get('return_component_masks', False))
        self.need_parsing = self.return_parsing or self.return_parsing_lq or self.return_binary or self.return_masks
        self.rot_mode = opt.get('rot_mode', 'basicsr')
        if self.rot_mode not in ('basicsr', 'rot90'):
            raise ValueError(f"rot_mode must be 'basicsr' or 'rot90', got {self.rot_mode!r}.")
        self.parsing_folder = opt.get('dataroot_parsing')
        if self.need_parsing and not self.parsing_folder:
            raise ValueError('FSRFaceDataset: return_parsing / return_parsing_lq / return_binary_parsing / '
                             'return_component_masks need the option dataroot_parsing (parsing.lmdb written by '
                             'fsr-prepare --parsing landmarks|bisenet, or a folder of 1-channel label PNGs).')
        if self.parsing_folder is not None:
            self.parsing_folder = str(self.parsing_folder)
        if self.phase == 'train':
            self.gt_hw = None if opt.get('gt_size') is None else _to_hw(opt['gt_size'], 'gt_size')
            if self.gt_hw is not None and (self.gt_hw[0] % self.scale or self.gt_hw[1] % self.scale):
                raise ValueError(f'gt_size {opt["gt_size"]} must be a multiple of scale {self.scale}.')

        self.backend = self.io_backend_opt['type']
        if self.backend == 'lmdb':
            folders = [self.lq_folder, self.gt_folder] + ([self.parsing_folder] if self.need_parsing else [])
            for folder in folders:
                self._check_lmdb(folder)
            self.io_backend_opt['db_paths'] = folders
            self.io_backend_opt['client_keys'] = ['lq', 'gt', 'parsing'][:len(folders)]
            self._check_same_keys()
            self.paths = paired_paths_from_lmdb([self.lq_folder, self.gt_folder], ['lq', 'gt'])
            if self.need_parsing:
                with open(osp.join(self.parsing_folder, 'meta_info.txt')) as fin:
                    parsing_keys = {line.split('.')[0] for line in fin}
                missing = [p['gt_path'] for p in self.paths if p['gt_path'] not in parsing_keys]
                if missing:
                    raise KeyError(f'{len(missing)} keys of {self.gt_folder} are not in {self.parsing_folder} '
                                   f'(e.g. {missing[:3]}): the parsing LMDB belongs to another dataset or was written '
                                   'with fewer faces. If the folder was made with --parsing, rerun that fsr-prepare '
                                   'command (it repairs missing faces); if it was made with --parsing none, rerun '
                                   'fsr-prepare with --parsing landmarks|bisenet and --overwrite.')
        else:
            for folder in [self.lq_folder, self.gt_folder] + ([self.parsing_folder] if self.need_parsing else []):
                if not osp.isdir(folder):
                    raise FileNotFoundError(f'FSRFaceDataset: folder {folder} does not exist (check dataroot_*).')
            if opt.get('meta_info_file') is not None:
                self.paths = paired_paths_from_meta_info_file([self.lq_folder, self.gt_folder], ['lq', 'gt'],
                                                              opt['meta_info_file'], self.filename_tmpl)
            else:
                self.paths = paired_paths_from_folder([self.lq_folder, self.gt_folder], ['lq', 'gt'],
                                                      self.filename_tmpl)
            if self.need_parsing:
                for p in self.paths:
                    p['parsing_path'] = osp.join(self.parsing_folder,
                                                 osp.splitext(osp.basename(p['gt_path']))[0] + '.png')
        if self.backend == 'lmdb' and self.need_parsing:
            for p in self.paths:
                p['parsing_path'] = p['gt_path']
        if self.degradation is None:  # every LMDB pair (from meta_info.txt) or the first pair of folders, before work
            check_set_sizes(self.paths, self.scale, self.lq_folder, self.gt_folder, self.backend == 'lmdb')

    def _check_same_keys(self):
        """The LR and HR LMDBs list the same faces (BasicSR's own message names neither LMDB)."""
        keys = []
        for folder in (self.lq_folder, self.gt_folder):
            with open(osp.join(folder, 'meta_info.txt')) as fin:
                keys.append({line.split('.')[0] for line in fin if line.strip()})
            if not keys[-1]:
                raise ValueError(f'{osp.join(folder, "meta_info.txt")} lists no face: {folder} is empty or was not '
                                 'finished by fsr-prepare.')
        if keys[0] != keys[1]:
            only_lq, only_gt = sorted(keys[0] - keys[1]), sorted(keys[1] - keys[0])
            raise ValueError(f'{self.lq_folder} and {self.gt_folder} list different faces ({len(only_lq)} only in the '
                             f'LR LMDB, e.g. {only_lq[:3]}; {len(only_gt)} only in the HR LMDB, e.g. {only_gt[:3]}): '
                             'dataroot_lq and dataroot_gt must come from the same dataset folder.')

    @staticmethod
    def _check_lmdb(folder):
        if not folder.endswith('.lmdb'):
            raise ValueError(f'FSRFaceDataset with io_backend lmdb needs *.lmdb folders, got {folder} '
                             '(use io_backend: {type: disk} for image folders).')
        if not osp.isdir(folder):
            raise FileNotFoundError(f'LMDB folder {folder} does not exist: check the dataroot_* path, or prepare the '
                                    'data with fsr-prepare.')
        for name in ('data.mdb', 'meta_info.txt'):
            if not osp.isfile(osp.join(folder, name)):
                raise FileNotFoundError(f'{osp.join(folder, name)} does not exist: {folder} is not a complete LMDB; '
                                        f'{rebuild_advice(folder)}.')

    # reading
    def _get_bytes(self, path, client_key):
        if self.backend == 'lmdb':
            buf = self.file_client.get(path, client_key)
            if buf is None:
                db = dict(zip(self.io_backend_opt['client_keys'], self.io_backend_opt['db_paths']))[client_key]
                raise KeyError(f'Key {path!r} is listed in {db}/meta_info.txt but missing from {db}/data.mdb: the LMDB '
                               f'is incomplete or its meta_info.txt belongs to another LMDB; {rebuild_advice(db)}.')
            return buf
        try:
            return self.file_client.get(path, client_key)
        except FileNotFoundError:
            raise FileNotFoundError(f'Image file {path} ({client_key}) does not exist: lq, gt and parsing folders must '
                                    'hold the same base names.') from None

    def _decode(self, buf, path, client_key, flag=cv2.IMREAD_COLOR):
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
        if img is None:
            advice = (
                rebuild_advice(self._db_of(client_key), bad_value=True)
                if self.backend == 'lmdb' else 'replace the file or remove it from the dataset')
            raise ValueError(f'Cannot decode the {client_key} image of {self._where(path, client_key)} (corrupt or not '
                             f'an image): {advice}, or remove the face from meta_info.txt.')
        return img

    def _db_of(self, client_key):
        return dict(zip(self.io_backend_opt['client_keys'], self.io_backend_opt['db_paths']))[client_key]

    def _where(self, path, client_key):
        """``key K of X.lmdb`` or ``file F``: where an image of ``client_key`` comes from, for messages."""
        if self.backend == 'lmdb':
            return f'key {path!r} of {self._db_of(client_key)}'
        return f'file {path}'

    def _source(self, client_key):
        """The LMDB or folder a ``client_key`` is read from (the HR one for LR faces made by ``degradation``)."""
        if self.backend == 'lmdb':
            return self._db_of(client_key)
        return {'lq': self.lq_folder, 'gt': self.gt_folder, 'parsing': self.parsing_folder}[client_key]

    # transforms
    def _random_crop(self, img_gt, img_lq, parsing, gt_path):
        scale = self.scale
        h_lq, w_lq = img_lq.shape[:2]
        # the HR face is mod-cropped to LR x scale (check_pair_size allowed HR sizes that are not multiples of scale)
        img_gt = img_gt[:h_lq * scale, :w_lq * scale]
        if parsing is not None:
            parsing = parsing[:h_lq * scale, :w_lq * scale]
        ph, pw = self.gt_hw[0] // scale, self.gt_hw[1] // scale
        if h_lq < ph or w_lq < pw:
            raise ValueError(f'LR ({h_lq}, {w_lq}) of {self._where(gt_path, "lq")} is smaller than the patch ({ph}, '
                             f'{pw}) that gt_size {self.opt["gt_size"]} asks for: lower gt_size or remove the image.')
        # same draws as basicsr.data.transforms.paired_random_crop
        top = random.randint(0, h_lq - ph)
        left = random.randint(0, w_lq - pw)
        img_lq = img_lq[top:top + ph, left:left + pw, ...]
        tg, lg = top * scale, left * scale
        img_gt = img_gt[tg:tg + ph * scale, lg:lg + pw * scale, ...]
        if parsing is not None:
            parsing = parsing[tg:tg + ph * scale, lg:lg + pw * scale]
        return img_gt, img_lq, parsing

    def _augment(self, imgs):
        """Apply the same random flips/rotations to every array of ``imgs``; return them and whether they mirror."""
        use_hflip = self.opt.get('use_hflip', False)
        use_rot = self.opt.get('use_rot', False)
        square = imgs[0].shape[0] == imgs[0].shape[1]
        if self.rot_mode == 'basicsr':
            # same draws as basicsr.data.transforms.augment
            hflip = use_hflip and random.random() < 0.5
            vflip = use_rot and random.random() < 0.5
            rot90 = use_rot and random.random() < 0.5 and square
            out = []
            for img in imgs:
                if hflip:
                    img = img[:, ::-1]
                if vflip:
                    img = img[::-1]
                if rot90:
                    img = img.swapaxes(0, 1)
                out.append(img)  # a view: the conversion to float below copies it
            return out, (hflip + vflip + rot90) % 2 == 1
        if not use_rot:
            k = 0
        elif square:
            k = random.randint(0, 3)
        else:
            k = 2 * random.randint(0, 1)  # 90/270 would change the patch shape: 0 or 180 degrees, evenly
        hflip = use_hflip and random.random() < 0.5
        out = []
        for img in imgs:
            if hflip:
                img = img[:, ::-1]
            if k:
                img = np.rot90(img, k)
            out.append(img)
        return out, hflip

    def _degrade(self, img_gt, gt_path):
        """Mod-cropped HR face and its LR face made by ``fsr_data.degradations.degrade`` (option ``degradation``).

        Training draws a fresh seed from ``random`` (seeded by BasicSR per worker); validation/test use the face's
        fixed seed (the option ``seed`` and the face's key), so every validation sees the same LR faces.
        """
        from fsr_data.degradations import degrade, face_seed
        h, w = img_gt.shape[:2]
        img_gt = img_gt[:h - h % self.scale, :w - w % self.scale]
        if self.phase == 'train':
            seed = random.getrandbits(32)
        else:
            seed = face_seed(osp.splitext(osp.basename(str(gt_path)))[0], self.degradation['seed'])
        return img_gt, degrade(np.ascontiguousarray(img_gt), self.scale, self.degradation, seed)

    # getitem
    def __getitem__(self, index):
        if self.file_client is None:
            opt = dict(self.io_backend_opt)
            if opt.pop('type') == 'lmdb':
                self.file_client = SharedLmdbClient(opt['db_paths'], opt['client_keys'])
            else:
                self.file_client = FileClient(self.backend, **opt)

        scale = self.scale
        # decoded as uint8; flips/crops commute with the conversion to float (as in PairedImageDataset's imfrombytes)
        gt_path = self.paths[index]['gt_path']
        img_gt = self._decode(self._get_bytes(gt_path, 'gt'), gt_path, 'gt')
        lq_path = self.paths[index]['lq_path']
        if self.degradation is None:
            img_lq = self._decode(self._get_bytes(lq_path, 'lq'), lq_path, 'lq')
        parsing = None
        if self.need_parsing:
            p_path = self.paths[index]['parsing_path']
            parsing = self._decode(self._get_bytes(p_path, 'parsing'), p_path, 'parsing', cv2.IMREAD_GRAYSCALE)
            if parsing.shape != img_gt.shape[:2]:
                raise ValueError(f'The parsing map ({self._where(p_path, "parsing")}) has size {parsing.shape}, its '
                                 f'HR image ({self._where(gt_path, "gt")}) {img_gt.shape[:2]}: dataroot_parsing '
                                 'belongs to another dataset or another HR size.')
            if parsing.max() >= NUM_PARSING_CLASSES:
                raise ValueError(f'The parsing map ({self._where(p_path, "parsing")}) has label {parsing.max()} >= '
                                 f'{NUM_PARSING_CLASSES}: it is not a CelebAMask-HQ label map (0..18).')
        if self.degradation is not None:
            img_gt, img_lq = self._degrade(img_gt, gt_path)
        else:  # every read, every phase: a wrong-scale LR set is refused, never cropped and scored
            key = f'key {lq_path}' if self.backend == 'lmdb' else osp.basename(lq_path)
            check_pair_size(img_lq.shape, img_gt.shape, scale, key, self._source('lq'), self._source('gt'))

        if self.phase == 'train':
            if self.gt_hw is not None:
                img_gt, img_lq, parsing = self._random_crop(img_gt, img_lq, parsing, gt_path)
            else:
                img_gt = img_gt[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale]
                if parsing is not None:
                    parsing = parsing[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale]
            arrays = [img_gt, img_lq] + ([parsing] if parsing is not None else [])
            arrays, mirrored = self._augment(arrays)
            img_gt, img_lq = arrays[0], arrays[1]
            if parsing is not None:
                parsing = swap_left_right(arrays[2]) if mirrored else arrays[2]

        img_gt = img_gt.astype(np.float32, order='C') / 255.
        img_lq = img_lq.astype(np.float32, order='C') / 255.
        if self.opt.get('color') == 'y':
            img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
            img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]

        if self.phase != 'train':
            img_gt = img_gt[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale, :]
            if parsing is not None:
                parsing = parsing[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale]

        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
        out = {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}

        if parsing is not None:
            h, w = img_lq.shape[-2:]
            if self.return_parsing:
                out['parsing_gt'] = torch.from_numpy(parsing.astype(np.int64, order='C'))
            if self.return_parsing_lq:
                c = scale // 2
                out['parsing_lq'] = torch.from_numpy(parsing[c::scale, c::scale][:h, :w].astype(np.int64, order='C'))
            if self.return_binary:
                binary = torch.from_numpy((parsing == 1).astype(np.float32))
                out['parsing_bin_gt'] = binary[None]
                out['parsing_bin_lq'] = bicubic_downsample(binary, h, w)[None]
            if self.return_masks:
                out['masks'] = torch.from_numpy(component_masks(parsing))
        return out

    def __len__(self):
        return len(self.paths)

    def close(self):
        """Close this dataset's LMDB readers (an environment closes when no other dataset of the process reads it)."""
        if isinstance(self.file_client, SharedLmdbClient):
            self.file_client.close()
        self.file_client = None


def dataset_root_options(root, scale, **extra):
    """Dataset options (LMDB backend) for a folder written by fsr-prepare: ``root/{hr,lr_x<scale>,parsing}.lmdb``."""
    opt = dict(
        type='FSRFaceDataset',
        dataroot_gt=os.path.join(root, 'hr.lmdb'),
        dataroot_lq=os.path.join(root, f'lr_x{scale}.lmdb'),
        io_backend={'type': 'lmdb'},
        scale=scale)
    if os.path.isdir(os.path.join(root, 'parsing.lmdb')):
        opt['dataroot_parsing'] = os.path.join(root, 'parsing.lmdb')
    opt.update(extra)
    return opt
