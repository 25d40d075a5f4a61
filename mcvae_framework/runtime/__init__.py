"""What training and a trained model's use both stand on: a dataset as stacked tensors
(``data``), checkpoint files written atomically and loaded safely (``checkpoint``), the
process group and devices (``distributed``) and the GPU options (``acceleration``).
"""
