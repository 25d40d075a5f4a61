"""The training-free invariant graph: images compared up to the group's moves, a
neighbour graph, its spectral clusters and synchronised angles (``invariant_graph``), over
pixels or oriented wavelet features (``wavelets``). It needs no model and no trainer."""
