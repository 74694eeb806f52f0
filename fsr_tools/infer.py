"""``fsr-infer`` (kept as the import path of earlier versions): the command line is :mod:`fsr_tools.infer_cli`.

The parts, each its own module:

- :mod:`fsr_tools.infer_io`: reading photos (gray/RGB/RGBA, 8/16 bit, EXIF orientation), writing results, listing
  inputs; no input is ever written over.
- :mod:`fsr_tools.infer_net`: options, network, safe checkpoint loading, batched forward pass.
- :mod:`fsr_tools.face_geometry`: per-face plan (cut without resampling / resample once / keep), LR crops, paste-back.
- :mod:`fsr_tools.restorer`: :class:`~fsr_tools.restorer.FaceRestorer`, the library API (load once, ``restore(img)``).
- :mod:`fsr_tools.infer_cli`: argument parsing, the run over files, summary and profile.
"""
from fsr_tools.face_geometry import blend_mask, cut_window, make_lr, paste_warped, paste_window, plan_face  # noqa: F401
from fsr_tools.infer_cli import build_parser, main  # noqa: F401
from fsr_tools.infer_io import InferError, SkipImage, list_inputs, read_image, write_image  # noqa: F401
from fsr_tools.infer_net import load_weights, read_checkpoint, run_network  # noqa: F401
from fsr_tools.restorer import FaceRestorer, detect_faces  # noqa: F401

paste_face = paste_warped  # the name of earlier versions

if __name__ == '__main__':
    import sys
    sys.exit(main())
