"""Ray Tune trainables that run MMPose training with RSPose losses (see :mod:`.mmpose_trainable`)."""
