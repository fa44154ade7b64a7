"""Imports every module that registers something into MMPose's registries."""

from . import heads, losses  # noqa: F401
