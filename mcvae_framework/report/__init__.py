"""Layer 4, using a trained model (``mcvae evaluate``, ``predict``, ``plot``): loading a run
and running its model (``inference``), the metrics (``evaluation``, ``pose_evaluation``), the
report files (``reports``), prediction files (``prediction``) and figures (``plotting``).

Nothing here imports :mod:`mcvae_framework.train`: evaluating a run needs its checkpoint,
not the code that trained it.
"""
