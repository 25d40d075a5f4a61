"""Layer 1, configs and plugins: experiment files validated as a whole (``experiment``), the
core's own sections (``sections``), the plugin manager and the registry it fills
(``plugins``, ``registry``), and ``build``, a component from its config (``components``).

Nothing here imports the model, the trainer or the report layer.
"""
