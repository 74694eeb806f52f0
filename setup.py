#!/usr/bin/env python
"""Face super-resolution plugin for BasicSR: LAAT, AMINet/AMIGAN, TANet and W-Net.

Install torch/torchvision first, then ``basicsr==1.4.2`` with ``--no-build-isolation`` (see README), then this package.
Besides the packages, the wheel carries ``fsr_basicsr_hook.pth``: a one-line import hook that loads the plugin when,
and only when, a process imports basicsr, so BasicSR's own ``train.py``/``test.py`` find the plugin's classes.
"""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

import os

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK_PTH = 'fsr_basicsr_hook.pth'
# fsr-export and OnnxNetwork (fsr_tools/export.py); in `dev` too, so that `scripts/install.sh --dev` (CI) tests them.
# onnx 1.15 / onnxruntime 1.17 are the first to know opset 20, the highest the TorchScript exporter writes.
EXPORT_REQUIRES = ['onnx>=1.15', 'onnxruntime>=1.17']


class BuildPyWithHook(build_py):
    """Copy the import-hook ``.pth`` file next to the packages (site-packages) of the wheel."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, HOOK_PTH), os.path.join(self.build_lib, HOOK_PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK_PTH)]


def read(name):
    with open(os.path.join(HERE, name), encoding='utf-8') as f:
        return f.read()


setup(
    name='basicsr-fsr',
    version='0.1.0',
    description='Face super-resolution networks (LAAT, AMINet/AMIGAN, TANet, W-Net) as a BasicSR plugin',
    long_description=read('README.md'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(
        include=['fsr_arch', 'fsr_data', 'fsr_losses', 'fsr_metrics', 'fsr_models', 'fsr_tools', 'fsr_utils']),
    py_modules=['fsr_basicsr_hook'],
    cmdclass={'build_py': BuildPyWithHook},
    install_requires=[
        # torch and torchvision are not listed on purpose: install the build that fits the machine first (README).
        'basicsr==1.4.2',
        'facexlib>=0.3.0',
        'lpips>=0.1.4',
        'lmdb>=1.4',
        'opencv-python>=4.5',
        'numpy>=1.24',
        'scipy>=1.10',
        'scikit-image>=0.21',
        'matplotlib>=3.7',  # ships grace_hopper.jpg, one of the demo photos
        'Pillow>=9.0',
        'pytorch-fid>=0.3.0',  # FID's Inception network (weights from a local file)
        'pyyaml>=6.0',
        'tqdm>=4.60',
        'tensorboard>=2.10',
        'dlib-bin>=19.24',
        'face_recognition_models>=0.3.0',
    ],
    extras_require={
        'export': EXPORT_REQUIRES,
        'dev': ['pytest>=7', 'flake8>=6', 'isort>=5.12', 'yapf>=0.40', 'sewar>=0.4.6'] + EXPORT_REQUIRES,
    },
    entry_points={
        'console_scripts': [
            'fsr-train=fsr_tools.cli:train',
            'fsr-test=fsr_tools.cli:test',
            'fsr-prepare=fsr_data.prepare:main',
            'fsr-degrade=fsr_data.degradations:main',
            'fsr-benchmark=fsr_metrics.benchmark:main',
            'fsr-speed=fsr_tools.speed:main',
            'fsr-infer=fsr_tools.infer_cli:main',
            'fsr-export=fsr_tools.export:main',
        ]
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
