"""Imports every module that registers something into MMPose's registries."""

from . import demo_modules, heads, losses, metrics, vis_backends  # noqa: F401
