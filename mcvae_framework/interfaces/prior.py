"""The mixture-prior interface for the invariant cluster latent ``z_c``."""

from __future__ import annotations

import abc

import torch
from torch import nn


class MixturePrior(nn.Module, abc.ABC):
    """``p(z) = sum_k pi_k p_k(z)`` over ``dim``-dimensional latents, with learned parameters.

    Components are the clusters: an image's cluster is ``argmax_k responsibilities``.
    Every method works in log space, follows the device and dtype of the module's
    parameters (``prior.to("cuda", torch.float64)`` moves everything) and returns finite
    values for finite inputs, however far they are from every component.

    What :meth:`kl` computes depends on :attr:`kl_is_monte_carlo`:

    * ``False`` (closed form): the VaDE clustering term (Jiang et al. 2017) with
      ``gamma_k = p(k | z)`` evaluated at ``z_sample`` (or at ``q_mean`` when no sample
      is given)::

          sum_k gamma_k KL(q(z | x) || p_k) + KL(gamma || pi)

      It is ``>= 0`` for every row and bounds ``KL(q(z | x) || p(z))`` from above (Jensen);
      it equals the ELBO's cluster term when ``q(c | x)`` is taken to be ``gamma``.
    * ``True`` (Monte Carlo): ``log q(z | x) - log p(z)`` at reparameterised samples ``z``;
      an unbiased estimate of ``KL(q(z | x) || p(z))``, ``>= 0`` only in expectation.
    """

    #: number of mixture components (clusters).
    n_components: int
    #: size of the latent the prior is over.
    dim: int
    #: whether :meth:`kl` is a Monte-Carlo estimate (see the class docstring).
    kl_is_monte_carlo: bool = False

    @abc.abstractmethod
    def log_weights(self) -> torch.Tensor:
        """``(K,)`` log mixture weights ``log pi_k`` (a log-softmax: they sum to 1)."""

    @abc.abstractmethod
    def log_prob_per_component(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: ``log pi_k + log p_k(z)``."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log density of the mixture."""
        return torch.logsumexp(self.log_prob_per_component(z), dim=-1)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: ``p(k | z)``, rows summing to 1."""
        return torch.softmax(self.log_prob_per_component(z), dim=-1)

    @abc.abstractmethod
    def kl(self, q_mean: torch.Tensor, q_logvar: torch.Tensor, z_sample: torch.Tensor | None = None) -> torch.Tensor:
        """``(N,)`` clustering term of the ELBO for the diagonal Gaussian
        ``q(z | x) = N(q_mean, diag(exp(q_logvar)))``; see the class docstring.

        :param q_mean: ``(N, dim)`` posterior means.
        :param q_logvar: ``(N, dim)`` posterior log variances.
        :param z_sample: ``(N, dim)`` reparameterised samples of ``q``, or ``None``.
        """

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z (n, dim), component (n,) int64)``, without gradients.

        :param generator: a ``torch.Generator`` on the prior's device, for reproducible draws.
        """

    @abc.abstractmethod
    def init_from(self, latents: torch.Tensor) -> None:
        """Warm start from encoded data ``(N, dim)`` (e.g. a scikit-learn mixture fit).

        :raises ValueError: non-finite latents, a wrong shape, or fewer points than components.
        """

    def init_from_assignments(self, latents: torch.Tensor, assignments: torch.Tensor) -> None:
        """Warm start with the clusters already known: component ``k`` from the latents
        assigned to ``k`` (its moments, and its share where weights are learned).

        The trainer calls it with the invariant graph's clusters after pretraining, and
        to re-seed a component that lost its images (splitting the largest cluster). A
        prior that cannot do it keeps this default, which raises ``NotImplementedError``:
        the trainer then falls back to :meth:`init_from` and says so in the log.

        :param latents: ``(N, dim)`` encoded data.
        :param assignments: ``(N,)`` int64 component of every row, in ``0..K-1``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement init_from_assignments")

    @abc.abstractmethod
    def component_means(self) -> torch.Tensor:
        """``(K, dim)`` mean of every component (decoded, these are the cluster prototypes)."""

    @abc.abstractmethod
    def component_covariances(self) -> torch.Tensor:
        """``(K, dim, dim)`` covariance of every component (``inf`` where it does not exist)."""


def validate_latents(latents, dim: int, n_components: int, who: str = "init_from") -> torch.Tensor:
    """Check encoded latents before a mixture is fitted to them; return them as a tensor.

    :param latents: ``(N, dim)`` tensor or array.
    :param dim: the prior's latent size.
    :param n_components: the prior's number of components (a fit needs at least as many points).
    :param who: the method name used in the error messages.
    :raises ValueError: naming the problem and its fix.
    """
    latents = torch.as_tensor(latents)
    if latents.ndim != 2 or latents.shape[1] != dim:
        raise ValueError(
            f"{who}: latents must have shape (N, {dim}) for a prior over {dim}-dimensional "
            f"latents, got {tuple(latents.shape)}"
        )
    if not latents.is_floating_point():
        latents = latents.double()
    bad = ~torch.isfinite(latents).all(dim=1)
    if bool(bad.any()):
        raise ValueError(
            f"{who}: {int(bad.sum())} of {latents.shape[0]} latent rows contain NaN or inf "
            f"(first bad row: {int(bad.nonzero()[0, 0])}); the encoder diverged or the data "
            "holds non-finite values. Fix the encoder/data (or lower the learning rate) before "
            "fitting the prior."
        )
    if latents.shape[0] < n_components:
        raise ValueError(
            f"{who}: {latents.shape[0]} latent points cannot fit {n_components} mixture "
            f"components; give at least {n_components} points (ideally many more) or lower "
            "prior.n_components"
        )
    return latents


def assignment_moments(latents, assignments, dim: int, n_components: int,
                       who: str = "init_from_assignments") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, mean and diagonal variance of the latents of every component (float64).

    A component with no latents gets the mean of a seeded random row and the variance of
    all the data, so that it can win images back.

    :returns: ``(counts (K,), means (K, dim), variances (K, dim))``.
    :raises ValueError: as :func:`validate_latents`, or assignments of the wrong shape or range.
    """
    latents = validate_latents(latents, dim, n_components, who).detach().cpu().double()
    assignments = torch.as_tensor(assignments).detach().cpu().long().reshape(-1)
    if assignments.shape[0] != latents.shape[0]:
        raise ValueError(f"{who}: {assignments.shape[0]} assignments for {latents.shape[0]} latent rows; "
                         "give one component index per row")
    if assignments.numel() and (int(assignments.min()) < 0 or int(assignments.max()) >= n_components):
        raise ValueError(f"{who}: assignments must lie in 0..{n_components - 1}, got values in "
                         f"{int(assignments.min())}..{int(assignments.max())}")
    counts = torch.bincount(assignments, minlength=n_components).double()
    sums = torch.zeros(n_components, dim, dtype=torch.float64).index_add_(0, assignments, latents)
    squares = torch.zeros(n_components, dim, dtype=torch.float64).index_add_(0, assignments, latents.square())
    means = sums / counts.clamp_min(1).unsqueeze(1)
    variances = (squares / counts.clamp_min(1).unsqueeze(1) - means.square()).clamp_min(0)
    overall = latents.var(dim=0, unbiased=False)
    empty = counts == 0
    if bool(empty.any()):
        pick = torch.randint(len(latents), (int(empty.sum()),), generator=torch.Generator().manual_seed(0))
        means[empty] = latents[pick]
    # A single member has no spread: borrow the data's own. A floor of a tenth of the data's
    # spread keeps responsibilities from turning into hard, brittle decisions.
    thin = counts < 2
    variances[thin] = overall
    variances = torch.maximum(variances, 0.1 * overall)
    return counts, means, variances
