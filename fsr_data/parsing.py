"""Face parsing label maps with the 19 CelebAMask-HQ classes (see ``fsr_data.face_dataset.PARSING_LABELS``).

Two sources:

- :class:`BiSeNetParser`: facexlib's BiSeNet trained on CelebAMask-HQ (the W-Net paper's choice), from a local
  ``parsing_bisenet.pth`` (a file, or a folder holding it). Never downloaded: a missing file is an error that says
  where to get it.
- :class:`LandmarkParser`: offline, from dlib's 68 landmarks (``shape_predictor_68_face_landmarks.dat`` shipped by
  ``face_recognition_models``). This is an APPROXIMATION drawn with polygons: skin (jaw line closed by a forehead arc
  raised above the brows), brows (the brow line thickened towards the eye), eyes (the 6-point eye contours), nose
  (bridge and nostrils), upper and lower lip (between outer and inner lip contours) and inner mouth (the inner lip
  contour). It has no hair, ears, neck, cloth, hat or glasses (they stay background) and the forehead height is a
  guess (0.3 to 0.45 x the brow-to-chin distance above the brows). Good enough for the component masks and the W-Net
  skin map of a demo set; for papers' numbers use BiSeNet maps.

Left/right: ``l_*`` labels (2, 4, 7) are given to the brow/eye on the image's left, which is the convention of the
5-point detectors (MTCNN/RetinaFace's "left eye"). CelebAMask-HQ's own convention could not be checked here (no
annotations available); pass ``left_is_image_left=False`` to flip it. Horizontal-flip augmentation swaps the labels
either way (``fsr_data.face_dataset``).
"""
import cv2
import importlib.util
import numpy as np
import os

SKIN, L_BROW, R_BROW, L_EYE, R_EYE, NOSE, MOUTH, U_LIP, L_LIP = 1, 2, 3, 4, 5, 10, 11, 12, 13

# dlib 68-point indices (0-based)
JAW = list(range(0, 17))
BROW_IMG_LEFT = list(range(17, 22))
BROW_IMG_RIGHT = list(range(22, 27))
NOSE_BRIDGE = list(range(27, 31))
NOSE_LOWER = list(range(31, 36))
EYE_IMG_LEFT = list(range(36, 42))
EYE_IMG_RIGHT = list(range(42, 48))
LIP_OUTER = list(range(48, 60))
LIP_INNER = list(range(60, 68))


def face_recognition_models_dir():
    """Folder of the dlib models of face_recognition_models (found without importing it: it needs pkg_resources)."""
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('face_recognition_models is not installed: pip install face_recognition_models==0.3.0 '
                          '(it ships shape_predictor_68_face_landmarks.dat, CC0).')
    return os.path.join(spec.submodule_search_locations[0], 'models')


def box_from_5pts(pts5):
    """dlib-detector-like box (left, top, right, bottom) from 5 landmarks (calibrated on dlib's HOG detector boxes)."""
    pts5 = np.asarray(pts5, np.float64)
    eye_c = (pts5[0] + pts5[1]) / 2
    d = np.linalg.norm(pts5[1] - pts5[0])
    mouth_c = (pts5[3] + pts5[4]) / 2
    d = max(d, 0.8 * np.linalg.norm(mouth_c - eye_c))
    return (eye_c[0] - 1.09 * d, eye_c[1] - 0.55 * d, eye_c[0] + 1.09 * d, eye_c[1] + 1.6 * d)


def _fill(label_map, pts, label):
    cv2.fillPoly(label_map, [np.round(np.asarray(pts) * 16).astype(np.int32)], int(label), lineType=cv2.LINE_8, shift=4)


def labels_from_68(shape_hw, pts68, left_is_image_left=True):
    """Draw the approximate 19-class label map (uint8, ``shape_hw``) from 68 landmarks (68, 2) in map coordinates."""
    p = np.asarray(pts68, np.float64)
    h, w = shape_hw
    out = np.zeros((h, w), np.uint8)
    eye_l, eye_r = p[EYE_IMG_LEFT].mean(0), p[EYE_IMG_RIGHT].mean(0)
    # the face's "up" direction: perpendicular to the eye line, pointing away from the chin
    ex = (eye_r - eye_l) / max(np.linalg.norm(eye_r - eye_l), 1e-6)
    up = np.array([ex[1], -ex[0]])
    if np.dot(p[8] - (eye_l + eye_r) / 2, up) > 0:
        up = -up
    brow_pts = p[BROW_IMG_LEFT + BROW_IMG_RIGHT]
    brow_to_chin = np.dot(brow_pts.mean(0) - p[8], up)
    # skin: jaw line 0..16 closed by the brows raised into a forehead arc (highest in the middle)
    forehead = []
    for i in range(26, 16, -1):
        t = (i - 21.5) / 4.5  # -1 .. 1 across the brows
        forehead.append(p[i] + up * brow_to_chin * (0.3 + 0.15 * (1 - t * t)))
    _fill(out, np.concatenate([p[JAW], np.array(forehead)]), SKIN)
    # nose: bridge (narrow at the top) and the lower nose, widened slightly at the nostrils
    nose_w = np.linalg.norm(p[35] - p[31])
    side = ex * nose_w * 0.18
    nose = [
        p[27] - side, p[30] - side * 1.6, p[31] - ex * nose_w * 0.12, p[32], p[33], p[34], p[35] + ex * nose_w * 0.12,
        p[30] + side * 1.6, p[27] + side
    ]
    _fill(out, nose, NOSE)
    labels_left, labels_right = ((L_BROW, L_EYE), (R_BROW, R_EYE)) if left_is_image_left else ((R_BROW, R_EYE), (L_BROW,
                                                                                                                 L_EYE))
    for brow_idx, eye_idx, (brow_label, eye_label) in ((BROW_IMG_LEFT, EYE_IMG_LEFT, labels_left),
                                                       (BROW_IMG_RIGHT, EYE_IMG_RIGHT, labels_right)):
        brow = p[brow_idx]
        eye_c = p[eye_idx].mean(0)
        thick = max(np.dot(brow.mean(0) - eye_c, up) * 0.35, 1.0)
        lower = brow - up * thick
        lower[0] += up * thick * 0.5  # thinner at the ends
        lower[-1] += up * thick * 0.5
        _fill(out, np.concatenate([brow, lower[::-1]]), brow_label)
        _fill(out, p[eye_idx], eye_label)
    # lips: upper = outer top 48..54 + inner top 64..60; lower = outer bottom 54..59,48 + inner bottom 60,67..64
    _fill(out, np.concatenate([p[48:55], p[[64, 63, 62, 61, 60]]]), U_LIP)
    _fill(out, np.concatenate([p[[54, 55, 56, 57, 58, 59, 48]], p[[60, 67, 66, 65, 64]]]), L_LIP)
    _fill(out, p[LIP_INNER], MOUTH)
    return out


class LandmarkParser:
    """Approximate parsing maps from dlib's 68-point shape predictor (offline; see the module docstring).

    Args:
        predictor_path (str | None): ``shape_predictor_68_face_landmarks.dat``; default: face_recognition_models' copy.
        left_is_image_left (bool): give ``l_*`` labels to the image-left brow/eye. Default True.
        work_size (int): the face crop is upscaled so that its width is at least this many pixels before the
            landmarks are fitted (dlib's HOG detector and predictor work on faces of 80+ pixels). Default 256.
    """

    def __init__(self, predictor_path=None, left_is_image_left=True, work_size=256):
        import dlib
        if predictor_path is None:
            predictor_path = os.path.join(face_recognition_models_dir(), 'shape_predictor_68_face_landmarks.dat')
        if not os.path.isfile(predictor_path):
            raise FileNotFoundError(f'dlib 68-landmark model {predictor_path} not found: pip install '
                                    'face_recognition_models==0.3.0 or pass predictor_path.')
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(predictor_path)
        self.left_is_image_left = left_is_image_left
        self.work_size = work_size
        self._dlib = dlib

    def landmarks68(self, face_rgb, pts5=None):
        """68 landmarks (68, 2) of the face in ``face_rgb`` (uint8 RGB crop) in crop coordinates.

        The predictor starts from dlib's HOG detection in the crop (the one closest to the box implied by ``pts5`` when
        given); without a detection, from the box implied by ``pts5`` (default: the alignment template's points).
        """
        h, w = face_rgb.shape[:2]
        f = max(1.0, self.work_size / w)
        up = cv2.resize(face_rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC) if f > 1 else face_rgb
        if pts5 is None:
            from fsr_data.face_align import template_5pts
            pts5 = template_5pts(h, w)
        ref = np.array(box_from_5pts(pts5)) * f
        dets = list(self.detector(np.ascontiguousarray(up), 0))
        rect = None
        if dets:
            centres = [np.array([(d.left() + d.right()) / 2, (d.top() + d.bottom()) / 2]) for d in dets]
            ref_c = np.array([(ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2])
            i = int(np.argmin([np.linalg.norm(c - ref_c) for c in centres]))
            if np.linalg.norm(centres[i] - ref_c) < 0.5 * (ref[2] - ref[0]):
                rect = dets[i]
        if rect is None:
            rect = self._dlib.rectangle(*[int(round(v)) for v in ref])
        shape = self.predictor(np.ascontiguousarray(up), rect)
        return np.array([[pt.x, pt.y] for pt in shape.parts()], np.float64) / f

    def parse(self, face_rgb, pts5=None):
        """Label map (H, W) uint8 of an aligned face crop (uint8 RGB). Returns (labels, landmarks68)."""
        pts68 = self.landmarks68(face_rgb, pts5)
        return labels_from_68(face_rgb.shape[:2], pts68, self.left_is_image_left), pts68


def resolve_bisenet_weights(weights):
    """Path of ``parsing_bisenet.pth`` from a file or a folder; clear error when missing."""
    if weights is None:
        raise FileNotFoundError('BiSeNet parsing needs local weights (--bisenet-weights FILE_OR_DIR): download '
                                'parsing_bisenet.pth from https://github.com/xinntao/facexlib/releases (v0.2.0) on a '
                                'machine with internet, or use --parsing landmarks (offline, approximate).')
    path = os.path.join(weights, 'parsing_bisenet.pth') if os.path.isdir(weights) else weights
    if not os.path.isfile(path):
        raise FileNotFoundError(f'BiSeNet weights {path} not found (--bisenet-weights {weights}): download '
                                'parsing_bisenet.pth from https://github.com/xinntao/facexlib/releases (v0.2.0) and '
                                'pass the file or its folder; nothing is downloaded at run time.')
    return path


class BiSeNetParser:
    """facexlib's BiSeNet (19 CelebAMask-HQ classes) from local weights.

    Equivalent to ``facexlib.parsing.init_parsing_model('bisenet', model_rootpath=DIR)`` with
    ``DIR/parsing_bisenet.pth`` present, but the state dict is loaded here directly so that a missing file can never
    trigger a download.

    Args:
        weights (str): ``parsing_bisenet.pth`` or the folder that holds it.
        device (str): torch device. Default 'cpu'.
        batch_size (int): faces per forward in :meth:`parse_batch`. Default 8.
    """

    def __init__(self, weights, device='cpu', batch_size=8):
        import torch
        from facexlib.parsing.bisenet import BiSeNet
        path = resolve_bisenet_weights(weights)
        self.device = torch.device(device)
        self.model = BiSeNet(num_class=19)
        self.model.load_state_dict(torch.load(path, map_location='cpu', weights_only=True), strict=True)
        self.model.eval().to(self.device)
        self.batch_size = batch_size
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def parse_batch(self, faces_rgb):
        """Label maps (uint8, each at its face's size) of a list of uint8 RGB face crops (512x512 network input, as
        facexlib/GFPGAN feed it)."""
        import torch
        out = []
        for i in range(0, len(faces_rgb), self.batch_size):
            chunk = faces_rgb[i:i + self.batch_size]
            x = np.stack([cv2.resize(f, (512, 512), interpolation=cv2.INTER_LINEAR) for f in chunk])
            x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
            x = ((x - self.mean) / self.std).to(self.device)
            with torch.no_grad():
                labels = self.model(x)[0].argmax(1).to(torch.uint8).cpu().numpy()
            for f, lab in zip(chunk, labels):
                out.append(cv2.resize(lab, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_NEAREST))
        return out

    def parse(self, face_rgb, pts5=None):
        """Label map (H, W) uint8 of one face crop. Returns (labels, None) like :meth:`LandmarkParser.parse`."""
        return self.parse_batch([face_rgb])[0], None


# colours of the CelebAMask-HQ visualisations (RGB), for drawings
PARSING_COLORS = np.array(
    [[0, 0, 0], [204, 0, 0], [76, 153, 0], [204, 204, 0], [51, 51, 255], [204, 0, 204], [0, 255, 255], [255, 204, 204],
     [102, 51, 0], [255, 0, 0], [102, 204, 0], [255, 255, 0], [0, 0, 153], [0, 0, 204], [255, 51, 153], [0, 204, 204],
     [0, 51, 0], [255, 153, 51], [0, 204, 0]], np.uint8)


def colorize(labels):
    """RGB uint8 visualisation of a label map."""
    return PARSING_COLORS[np.asarray(labels)]
