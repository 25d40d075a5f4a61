"""Layer 3, training (``mcvae train``): the ``Trainer`` (``trainer``), its batch sources
(``batching``), epochs (``epochs``), the graph's guidance and label refinement (``guidance``,
``refinement``), the run folder and its logs (``run_folder``, ``run_logging``)."""
