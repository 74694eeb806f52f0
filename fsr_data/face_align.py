"""Face detection (5 landmarks) and 5-point similarity alignment, shared by ``fsr-prepare`` and ``fsr-infer``.

- :class:`FaceDetector`: ``backend='mtcnn'`` uses the MTCNN weights that ``facenet-pytorch`` ships
  (``pnet/rnet/onet.pt``, offline); ``backend='retinaface'`` uses facexlib's RetinaFace with a local weights file
  (``detection_Resnet50_Final.pth`` or ``detection_mobilenet0.25_Final.pth``; never downloaded). ``detect`` returns,
  per face, ``box`` (x1, y1, x2, y2), ``landmarks`` (5, 2) = [left eye, right eye, nose, left mouth corner, right
  mouth corner] where left/right are the image's left/right (MTCNN's and RetinaFace's order), and ``score``.
- :func:`template_5pts`: where the 5 points go in an ``out_h x out_w`` crop. The positions are the mean landmarks of
  CelebA's aligned crops (``img_align_celeba``, 178x218, ``list_landmarks_align_celeba.txt``), scaled so that the crop
  width maps to 178 pixels of that frame and centred vertically: 218x178 gives CelebA's aligned framing, 128x128 the
  central square of it (the usual CelebA 128x128 FSR framing: face, some hair and background). ``zoom`` > 1 tightens
  it.
- :func:`align_face`: similarity transform (rotation, uniform scale, translation) from the 5 detected points to the
  template (``cv2.estimateAffinePartial2D``), then a warp. Large faces are first shrunk with area interpolation so the
  warp never aliases; ``M`` is always the 2x3 transform from source-image coordinates to crop coordinates.
- :func:`inverse_affine`: crop -> source image coordinates (to paste a restored face back).
- :func:`box_crop` (LAAT's crop: the detector's box made square, resized) and :func:`openface_crop` (W-Net's: OpenFace's
  ``AlignDlib`` affine transform of dlib landmarks 39, 42, 57), the other ``fsr-prepare --crop`` modes; both return
  the 2x3 source -> crop transform too.
"""
import cv2
import numpy as np
import os

# mean 5 landmarks of CelebA's aligned 178x218 crops (x, y): left eye, right eye, nose, left mouth, right mouth
CELEBA_ALIGNED_5PTS = np.array([[69.2, 111.0], [107.6, 111.2], [88.4, 134.7], [72.4, 152.3], [105.0, 152.5]],
                               dtype=np.float64)
CELEBA_ALIGNED_SIZE = (218, 178)  # (h, w)


def _as_hw(size):
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def template_5pts(out_h, out_w, zoom=1.0):
    """Template positions (5, 2) float32 of the 5 landmarks in an ``out_h x out_w`` aligned face crop.

    Args:
        out_h (int): crop height.
        out_w (int): crop width.
        zoom (float): > 1 makes the face larger in the crop (points spread from the crop centre). Default 1 (CelebA).
    """
    ref_h, ref_w = CELEBA_ALIGNED_SIZE
    s = out_w / ref_w * zoom
    pts = np.empty_like(CELEBA_ALIGNED_5PTS)
    pts[:, 0] = (CELEBA_ALIGNED_5PTS[:, 0] - ref_w / 2) * s + out_w / 2
    pts[:, 1] = (CELEBA_ALIGNED_5PTS[:, 1] - ref_h / 2) * s + out_h / 2
    return pts.astype(np.float32)


def estimate_similarity(src_pts, dst_pts):
    """2x3 similarity transform (float64) mapping ``src_pts`` to ``dst_pts`` in the least-squares sense."""
    src = np.asarray(src_pts, np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, np.float64).reshape(-1, 2)
    M, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if M is None:  # degenerate points: fall back to the closed-form least squares (Umeyama without reflection)
        from skimage.transform import SimilarityTransform
        tform = SimilarityTransform()
        if not tform.estimate(src, dst):
            raise ValueError(f'Cannot estimate a similarity transform from landmarks {src.tolist()}.')
        M = tform.params[:2]
    return M.astype(np.float64)


def transform_scale(M):
    """Uniform scale factor of a 2x3 similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(M)[:, :2]))))


def inverse_affine(M):
    """Inverse of a 2x3 affine transform (crop -> source coordinates)."""
    return cv2.invertAffineTransform(np.asarray(M, np.float64))


def apply_affine(M, pts):
    """Apply a 2x3 transform to points (N, 2)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ np.asarray(M, np.float64)[:, :2].T + np.asarray(M, np.float64)[:, 2]


def align_face(img, landmarks5, out_size=(128, 128), template=None, border=cv2.BORDER_REFLECT_101):
    """Crop and align a face by its 5 landmarks.

    Args:
        img (ndarray): source image (H, W, C) or (H, W), uint8 or float.
        landmarks5 (ndarray): (5, 2) landmarks in ``img`` coordinates (order of :class:`FaceDetector`).
        out_size (int | tuple): (out_h, out_w) of the crop. Default (128, 128).
        template (ndarray | None): (5, 2) target positions; default ``template_5pts(out_h, out_w)``.
        border (int): OpenCV border mode for parts of the crop outside the photo. Default reflect-101.

    Returns:
        tuple: ``crop`` (out_h, out_w[, C]) same dtype as ``img``, and ``M`` (2, 3) float64 such that
        ``crop = cv2.warpAffine(img, M, (out_w, out_h))`` up to the anti-aliasing pre-shrink.
    """
    out_h, out_w = _as_hw(out_size)
    if template is None:
        template = template_5pts(out_h, out_w)
    M = estimate_similarity(landmarks5, template)
    return warp_face(img, M, (out_h, out_w), border), M


def warp_face(img, M, out_size, border=cv2.BORDER_REFLECT_101):
    """``cv2.warpAffine(img, M, out_size)`` with bicubic interpolation; a transform that shrinks by more than 2x first
    shrinks the image with area interpolation (anti-aliasing) and warps at a scale close to 1."""
    out_h, out_w = _as_hw(out_size)
    s = transform_scale(M)
    src, M_src = img, np.asarray(M, np.float64)
    if s < 0.5:
        f = s * 1.25
        src = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / img.shape[1], src.shape[0] / img.shape[0]
        S_inv = np.array([[1 / fx, 0, 0], [0, 1 / fy, 0], [0, 0, 1]], np.float64)
        M_src = M_src @ S_inv
    return cv2.warpAffine(src, M_src, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=border)


def square_box(box, margin=0.0):
    """(x0, y0, side) of the square with the centre of ``box`` (x1, y1, x2, y2) and side ``max(w, h) * (1 + margin)``
    (the detector's box made square, LAAT's "MTCNN to crop the face region")."""
    x1, y1, x2, y2 = [float(v) for v in box]
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def box_crop(img, box, out_size=(128, 128), margin=0.0, border=cv2.BORDER_REFLECT_101):
    """Crop the detector box made square (:func:`square_box`) and resize it to ``out_size``.

    The square region ``[x0, x0 + side)`` (continuous pixel-area coordinates) is mapped onto the output grid, so
    ``crop = warpAffine(img, M)`` with ``M = [[s, 0, -s*x0 + (s-1)/2], [0, s', ...]]`` (s = out_w / side); a non-square
    ``out_size`` stretches the square. Shrinking uses area interpolation (a plain resize of the integer region when the
    box lies inside the photo), enlarging bicubic. Returns ``(crop, M, side)``.
    """
    out_h, out_w = _as_hw(out_size)
    x0, y0, side = square_box(box, margin)
    sx, sy = out_w / side, out_h / side
    M = np.array([[sx, 0, -sx * x0 + (sx - 1) / 2], [0, sy, -sy * y0 + (sy - 1) / 2]], np.float64)
    H, W = img.shape[:2]
    xi, yi, si = int(round(x0)), int(round(y0)), int(round(side))
    if xi >= 0 and yi >= 0 and xi + si <= W and yi + si <= H and si > 0:
        region = img[yi:yi + si, xi:xi + si]
        interp = cv2.INTER_AREA if si > max(out_h, out_w) else cv2.INTER_CUBIC
        crop = cv2.resize(region, (out_w, out_h), interpolation=interp)
        sx, sy = out_w / si, out_h / si  # the transform of what was actually cut
        M = np.array([[sx, 0, -sx * xi + (sx - 1) / 2], [0, sy, -sy * yi + (sy - 1) / 2]], np.float64)
    else:  # the square leaves the photo: warp with reflected borders
        crop = warp_face(img, M, (out_h, out_w), border)
    return crop, M, side


# OpenFace (cmusatyalab/openface, ``openface/align_dlib.py``): ``AlignDlib.align`` maps three of dlib's 68 landmarks,
# INNER_EYES_AND_BOTTOM_LIP = [39, 42, 57], with ``cv2.getAffineTransform`` onto ``imgDim * MINMAX_TEMPLATE[...]``,
# where MINMAX_TEMPLATE is its mean-landmark TEMPLATE normalised to [0, 1] by the template's min/max (x: points 0 and
# 16, y: points 24 and 8). The three normalised points, computed from TEMPLATE's values:
OPENFACE_INDICES = (39, 42, 57)
OPENFACE_TEMPLATE = (
    (np.array([[0.403718978315, 0.33867711083], [0.631326076346, 0.334136672344], [0.525398405766, 0.841706377792]]) -
     np.array([0.0792396913815, 0.182360984545])) /
    (np.array([0.971193274221, 1.06080371126]) - np.array([0.0792396913815, 0.182360984545])))


def openface_crop(img, landmarks68, out_size=(128, 128), border=cv2.BORDER_REFLECT_101):
    """Crop a face the way OpenFace's ``AlignDlib.align`` does (W-Net: "OpenFace to detect 68 facial keypoints and crop
    the images based on these keypoints"): the affine transform taking landmarks 39, 42 (inner eye corners) and 57
    (bottom lip) to :data:`OPENFACE_TEMPLATE` scaled to ``out_size``. Returns ``(crop, M)``.

    DEVIATION (documented): OpenFace warps with bilinear interpolation and zero borders; here bicubic, reflected borders
    and an area pre-shrink for large faces, as for the other crops.
    """
    out_h, out_w = _as_hw(out_size)
    src = np.asarray(landmarks68, np.float32).reshape(68, 2)[list(OPENFACE_INDICES)]
    dst = (OPENFACE_TEMPLATE * np.array([out_w, out_h])).astype(np.float32)
    M = cv2.getAffineTransform(src, dst).astype(np.float64)
    return warp_face(img, M, (out_h, out_w), border), M


def check_detector_weights(weights, option='option weights / --detector-weights'):
    """Raise ``FileNotFoundError`` naming ``option`` unless ``weights`` is a RetinaFace weights file (checked before any
    work: ``fsr-prepare`` calls it before it writes or deletes anything)."""
    if weights is None or not os.path.isfile(str(weights)):
        raise FileNotFoundError(
            f'RetinaFace needs a local weights file ({option}), got {weights!r}: '
            'download detection_Resnet50_Final.pth (or detection_mobilenet0.25_Final.pth) from '
            'https://github.com/xinntao/facexlib/releases on a machine with internet and pass its path. '
            "The default backend 'mtcnn' needs no download.")
    return weights


class FaceDetector:
    """Face detector returning boxes, 5 landmarks and scores.

    Args:
        backend (str): ``'mtcnn'`` (facenet-pytorch's shipped weights) or ``'retinaface'`` (facexlib; needs
            ``weights``).
        weights (str | None): RetinaFace weights file (``detection_Resnet50_Final.pth`` or
            ``detection_mobilenet0.25_Final.pth`` from facexlib's releases). MTCNN: optional folder holding
            ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (default: those inside facenet_pytorch).
        device (str): torch device. Default 'cpu'.
        min_face (int): smallest face (box side in pixels) searched for. Default 20 (MTCNN's own default).
        threshold (float): RetinaFace confidence threshold. Default 0.8 (facexlib's).
    """

    def __init__(self, backend='mtcnn', weights=None, device='cpu', min_face=20, threshold=0.8):
        import torch
        self.backend = backend
        self.device = torch.device(device)
        self.min_face = min_face
        self.threshold = threshold
        if backend == 'mtcnn':
            self._init_mtcnn(weights)
        elif backend in ('retinaface', 'retinaface_resnet50', 'retinaface_mobile0.25'):
            self._init_retinaface(weights)
        else:
            raise ValueError(f"Unknown face detector backend {backend!r}: use 'mtcnn' or 'retinaface'.")

    def _init_mtcnn(self, weights):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise ImportError('The MTCNN detector needs facenet-pytorch: pip install --no-deps facenet-pytorch==2.6.0 '
                              f'(its metadata pins old torch/numpy; the code runs with current ones). ({e})') from e
        self.model = MTCNN(keep_all=True, min_face_size=self.min_face, device=self.device, post_process=False)
        if weights is not None:
            import torch
            for name in ('pnet', 'rnet', 'onet'):
                path = os.path.join(weights, f'{name}.pt')
                if not os.path.isfile(path):
                    raise FileNotFoundError(f'MTCNN weights folder {weights} has no {name}.pt (option weights).')
                getattr(self.model, name).load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        self.model.eval()

    def _init_retinaface(self, weights):
        import torch
        check_detector_weights(weights)
        from facexlib.detection.retinaface import RetinaFace
        if self.backend == 'retinaface':
            network = 'mobile0.25' if 'mobile' in os.path.basename(str(weights)).lower() else 'resnet50'
        else:
            network = self.backend.split('_', 1)[1]
        state = torch.load(weights, map_location='cpu', weights_only=True)
        state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
        model = RetinaFace(network_name=network, half=False, device=self.device)
        model.load_state_dict(state, strict=True)
        self.model = model.to(self.device).eval()

    def detect(self, img_rgb_uint8):
        """Detect faces in an RGB uint8 image (H, W, 3).

        Returns:
            list[dict]: per face, sorted by decreasing box area: ``box`` ndarray (4,) x1, y1, x2, y2; ``landmarks``
            ndarray (5, 2) float32; ``score`` float.
        """
        img = np.ascontiguousarray(img_rgb_uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'FaceDetector.detect expects an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}.')
        import torch
        faces = []
        with torch.no_grad():
            if self.backend == 'mtcnn':
                boxes, probs, points = self.model.detect(img, landmarks=True)
                if boxes is not None:
                    for b, p, lm in zip(boxes, probs, points):
                        faces.append(
                            dict(box=np.asarray(b, np.float32), landmarks=np.asarray(lm, np.float32), score=float(p)))
            else:
                dets = self.model.detect_faces(img[..., ::-1].copy(), conf_threshold=self.threshold)
                for d in dets:
                    box = np.asarray(d[:4], np.float32)
                    if min(box[2] - box[0], box[3] - box[1]) < self.min_face:
                        continue
                    faces.append(
                        dict(box=box, landmarks=np.asarray(d[5:15], np.float32).reshape(5, 2), score=float(d[4])))
        faces.sort(key=lambda f: -(f['box'][2] - f['box'][0]) * (f['box'][3] - f['box'][1]))
        return faces
