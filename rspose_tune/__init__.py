"""rspose_tune: tune RSPose ranking losses for MMPose with Ray Tune and Optuna.

Layers, from the bottom up (each only imports the ones below it):

- :mod:`rspose_tune.losses` - pure-torch Spatial Rank / Spatial Sort / Instance Sort.
- :mod:`rspose_tune.mmpose_adapter` - MMPose registration (losses, heads) and config building.
- :mod:`rspose_tune.training` - one rank of a trial (an MMPose Runner), without Ray.
- :mod:`rspose_tune.search` / :mod:`rspose_tune.report` / :mod:`rspose_tune.export` - the CLIs.

The Ray Tune trainable is the top-level package ``trainables``: it imports this package, never the
other way round (the search loads it by name, ``--trainable``; docs/ARCHITECTURE.md).

Importing this package defines names only: no MMPose, Ray or torch import, no patching.
"""

__version__ = "0.1.0"

#: Default storage root of runs, the CLIs' ``--storage``: ``results`` relative to the working
#: directory when a CLI runs (the repository's ``results/`` when run from its root); never a
#: folder inside the installed package.
DEFAULT_STORAGE = "results"

__all__ = ["DEFAULT_STORAGE", "__version__"]
