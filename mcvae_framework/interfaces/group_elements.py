"""What a group declares besides its Lie algebra: the data it moves, the shape of its
elements, and a discrete part. :class:`~mcvae_framework.interfaces.LieGroup` inherits it;
every attribute and method here has a default that is right for a connected group of
planar maps, so a group written before these existed keeps working unchanged.

The data a group moves (:attr:`GroupElements.data_kind`)
---------------------------------------------------------
``"image"`` (the default): ``(N, C, H, W)`` batches, ``H == W``. ``"volume"``:
``(N, C, D, H, W)`` batches of cubes, ``D == H == W``, in the normalised coordinates of
:func:`torch.nn.functional.affine_grid` with ``align_corners=False``: ``x`` along the
width, ``y`` along the height, ``z`` along the depth, each from ``-1`` to ``+1``.

Elements (:attr:`GroupElements.element_shape`)
----------------------------------------------
``(3, 3)`` by default, the homogeneous matrices of planar maps; a group of rotations of
3-D space uses ``(3, 3)`` rotation matrices, a group with 3-D translations would use
``(4, 4)`` homogeneous matrices. The core only composes, inverts and passes elements
back to the group, so any matrix shape works.

A discrete part (:attr:`GroupElements.n_components`)
----------------------------------------------------
A group that is not connected -- rotations *and* a reflection, or a finite group such as
the four quarter turns -- has ``n_components > 1`` components, and an element is

    ``g = exp(tau) . r_k``      (the component's representative ``r_k`` first)

with ``k`` the component index and ``r_0`` the identity (:meth:`component_elements`).
``exp`` alone reaches only the component of the identity; ``tau`` may even be empty
(``dim = 0``: a finite group). The model's pose head then predicts a categorical ``k``
next to ``tau``, the loss enumerates the components, and evaluation reports how often
``k`` is right (up to one offset per cluster).
"""

from __future__ import annotations

import math

import torch

from ..hookspecs import DATA_KINDS, data_kind_of_shape  # noqa: F401  (re-exported for plugins)

class GroupElements:
    """The parts of the group interface beyond the algebra (see the module docstring).

    Attributes a group sets, methods it may override; the defaults describe a connected
    group of planar maps whose elements are ``(3, 3)`` matrices.
    """

    #: ``"image"`` (``(N, C, H, W)``) or ``"volume"`` (``(N, C, D, H, W)``): what ``act`` moves.
    data_kind: str = "image"
    #: the shape of one element (``exp`` returns ``(N, *element_shape)``).
    element_shape: tuple[int, ...] = (3, 3)
    #: number of connected components (the size of the discrete part); 1: connected.
    n_components: int = 1
    #: a name per component, e.g. ``("identity", "reflection")`` (plots, reports).
    component_names: tuple[str, ...] = ()
    #: what the discrete part is called in reports (``"reflection"``: evaluation then
    #: reports a ``reflection_accuracy``).
    discrete_part: str = "component"
    #: size ``d`` of the orthogonal matrices :meth:`orthogonal_part` returns; 0 (the
    #: default) when the group offers none. The invariant graph synchronises the poses of
    #: such a group (rotations, reflections) with ``d x d`` blocks.
    orthogonal_dim: int = 0
    #: how many numbers a network predicts for the mean of ``tau`` when the group turns
    #: them into ``tau`` itself (:meth:`tau_from_network`), e.g. 6 for a rotation of 3-D
    #: space (two columns of its matrix: a representation without a jump). 0 (the
    #: default): the pose head predicts ``tau`` directly, each angle as a ``(cos, sin)`` pair.
    network_pose_size: int = 0

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes: the spatial axes of a batch after ``(N, C)``."""
        return 3 if self.data_kind == "volume" else 2

    # ------------------------------------------------------------ the discrete part

    def component_elements(self, *, dtype=None, device=None) -> torch.Tensor:
        """``(n_components, *element_shape)``: the representative ``r_k`` of every
        component, ``r_0`` the identity. Default: the identity alone."""
        return self.identity(1, dtype=dtype, device=device)

    def element(self, tau: torch.Tensor, component: torch.Tensor | None = None) -> torch.Tensor:
        """``exp(tau) . r_k``: the element with continuous coordinates ``tau`` ``(N, dim)`` in
        component ``component`` ``(N,)`` (``None``: the identity component, ``exp(tau)``)."""
        g = self.exp(tau)
        if component is None or self.n_components == 1:
            return g
        representatives = self.component_elements(dtype=g.dtype, device=g.device)
        return self.compose(g, representatives[component.to(g.device).long()])

    def component_of(self, g: torch.Tensor) -> torch.Tensor:
        """``(N,)`` int64: the component of every element. Default: all 0 (connected)."""
        return torch.zeros(g.shape[0], dtype=torch.int64, device=g.device)

    def split_element(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(component (N,), tau (N, dim))`` with ``g = element(tau, component)``."""
        component = self.component_of(g)
        if self.n_components == 1:
            return component, self.log(g)
        representatives = self.component_elements(dtype=g.dtype, device=g.device)
        return component, self.log(self.compose(g, self.inverse(representatives[component])))

    def log_component_prior(self, *, dtype=None, device=None) -> torch.Tensor:
        """``(n_components,)`` log prior probability of each component (the ELBO's pose term
        has ``KL(q(k|x) || p(k))``). Default: uniform."""
        k = self.n_components
        return torch.full((k,), -math.log(k), dtype=dtype or torch.get_default_dtype(), device=device)

    def sample_component(self, n: int, generator: torch.Generator | None = None, *, device=None) -> torch.Tensor:
        """``(n,)`` int64 components drawn from the configured pose distribution. Default:
        uniform over the components (no random number is drawn for a connected group)."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        if self.n_components == 1:
            return torch.zeros(n, dtype=torch.int64, device=device)
        return torch.randint(self.n_components, (n,), generator=generator, device=device)

    def sample_elements(self, n: int, generator: torch.Generator | None = None, *, dtype=None,
                        device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` draws of the pose distribution as ``(elements, tau, component)``: ``tau``
        from :meth:`sample`, then (a group with a discrete part) the component from
        :meth:`sample_component`. What datasets move images by and the loss moves copies by."""
        tau = self.sample(n, generator, dtype=dtype, device=device)
        component = self.sample_component(n, generator, device=tau.device)
        return self.element(tau, component), tau, component

    # ------------------------------------------------------------ the invariant graph

    def search_elements(self, n: int) -> torch.Tensor:
        """``(M, *element_shape)`` relative moves the invariant graph tries between two
        images. Default: ``exp`` of :meth:`search_poses` (a group with a discrete part
        should add its other components, e.g. every search rotation also reflected)."""
        return self.exp(self.search_poses(n))

    def orthogonal_part(self, g: torch.Tensor) -> torch.Tensor:
        """``(N, d, d)`` orthogonal matrices (``d = orthogonal_dim``): the rotation (or
        reflection) of every element, which the invariant graph synchronises over its
        neighbour pairs. Only for a group with ``orthogonal_dim > 0``."""
        raise NotImplementedError(f"{type(self).__name__} has no orthogonal part (orthogonal_dim = 0)")

    def from_orthogonal(self, matrices: torch.Tensor) -> torch.Tensor:
        """``(N, d, d)`` orthogonal matrices -> ``(N, *element_shape)`` elements whose
        :meth:`orthogonal_part` they are (the rest at the identity)."""
        raise NotImplementedError(f"{type(self).__name__} has no orthogonal part (orthogonal_dim = 0)")

    # ------------------------------------------------------------ the pose head

    def tau_from_network(self, raw: torch.Tensor) -> torch.Tensor:
        """``(N, network_pose_size)`` numbers a network predicted -> ``(N, dim)`` ``tau``;
        ``raw = 0`` must give the identity (the pose head starts there). Only for a group
        with ``network_pose_size > 0``."""
        raise NotImplementedError(f"{type(self).__name__} predicts tau directly (network_pose_size = 0)")


class OrthogonalBlock2D:
    """Mixin for a planar group whose ``2 x 2`` linear block is orthogonal (rotations,
    reflections: O(2), C_n, D_n): that block is the orthogonal part the invariant graph
    synchronises. Put it before ``AffineGroup2D`` among the bases."""

    orthogonal_dim = 2

    def orthogonal_part(self, g: torch.Tensor) -> torch.Tensor:
        """The ``2 x 2`` block."""
        return g[:, :2, :2]

    def from_orthogonal(self, matrices: torch.Tensor) -> torch.Tensor:
        """``(N, 2, 2)`` -> ``(N, 3, 3)`` homogeneous matrices without translation."""
        out = torch.zeros(*matrices.shape[:-2], 3, 3, dtype=matrices.dtype, device=matrices.device)
        out[..., :2, :2] = matrices
        out[..., 2, 2] = 1.0
        return out
