"""``gmm``: a Gaussian mixture prior with diagonal or full covariances."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from mcvae_framework.interfaces import MixturePrior
from mcvae_framework.interfaces import assignment_moments, validate_latents

from ._common import (
    LOG_2PI,
    MixtureConfigBase,
    MixtureWeights,
    as_model_tensor,
    categorical_kl,
    check_dim,
    diag_gaussian_log_density,
    initial_means,
)


class GMMConfig(MixtureConfigBase):
    """Gaussian mixture prior: K components with learned weights, means and covariances."""

    type: Literal["gmm"] = "gmm"
    covariance: Literal["diag", "full"] = Field(
        "diag", description="diag: one variance per latent axis; full: a full covariance (Cholesky factor) per component"
    )
    reg_covar: float = Field(
        1e-6, gt=0, description="added to the covariance diagonals in init_from's scikit-learn fit"
    )


class GaussianMixturePrior(MixturePrior):
    """``sum_k pi_k N(z; m_k, S_k)``.

    Parameters: weight logits (see ``learn_weights``), ``means (K, d)`` and either
    ``log_variances (K, d)`` (``diag``) or ``cholesky_raw (K, d, d)`` (``full``: the
    Cholesky factor is its strict lower triangle plus ``exp`` of its diagonal, so it is
    always a valid factor; the upper triangle is unused). Before :meth:`init_from` the
    means are seeded standard-normal draws and the covariances identities.

    :param config: the validated :class:`GMMConfig`.
    :param dim: latent size.
    """

    def __init__(self, config: GMMConfig, dim: int):
        super().__init__()
        self.config = config
        self.n_components = config.n_components
        self.dim = dim
        self.covariance = config.covariance
        self.weights = MixtureWeights(config.n_components, config.learn_weights)
        self.means = nn.Parameter(initial_means(config.n_components, dim, config.seed))
        if self.covariance == "diag":
            self.log_variances = nn.Parameter(torch.zeros(config.n_components, dim))
        else:
            self.cholesky_raw = nn.Parameter(torch.zeros(config.n_components, dim, dim))

    # ---------------------------------------------------------------- parameters

    def log_weights(self) -> torch.Tensor:
        return self.weights.log_weights()

    def cholesky(self) -> torch.Tensor:
        """``(K, d, d)`` lower-triangular Cholesky factors ``L_k`` of the covariances
        (``diag(exp(log_variances / 2))`` for diagonal covariances)."""
        if self.covariance == "diag":
            return torch.diag_embed(torch.exp(0.5 * self.log_variances))
        raw = self.cholesky_raw
        return torch.tril(raw, diagonal=-1) + torch.diag_embed(torch.exp(torch.diagonal(raw, dim1=-2, dim2=-1)))

    def component_means(self) -> torch.Tensor:
        return self.means

    def component_covariances(self) -> torch.Tensor:
        chol = self.cholesky()
        return chol @ chol.transpose(-1, -2)

    # ---------------------------------------------------------------- densities

    def _component_log_density(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` log N(z; m_k, S_k)."""
        if self.covariance == "diag":
            return diag_gaussian_log_density(z, self.means, self.log_variances)
        chol = self.cholesky()
        diff = (z.unsqueeze(1) - self.means.unsqueeze(0)).unsqueeze(-1)  # (N, K, d, 1)
        white = torch.linalg.solve_triangular(chol.unsqueeze(0), diff, upper=False).squeeze(-1)
        log_det = 2.0 * torch.diagonal(self.cholesky_raw, dim1=-2, dim2=-1).sum(-1)  # log|S_k|
        return -0.5 * (self.dim * LOG_2PI + log_det.unsqueeze(0) + white.square().sum(-1))

    def log_prob_per_component(self, z: torch.Tensor) -> torch.Tensor:
        z = as_model_tensor(z, self.means, self.dim)
        return self.log_weights().unsqueeze(0) + self._component_log_density(z)

    # ---------------------------------------------------------------- the ELBO's cluster term

    def gaussian_kl_to_components(self, q_mean: torch.Tensor, q_logvar: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` closed-form KL(N(q_mean, diag exp(q_logvar)) || N(m_k, S_k))."""
        diff = q_mean.unsqueeze(1) - self.means.unsqueeze(0)  # (N, K, d)
        q_var = torch.exp(q_logvar).unsqueeze(1)  # (N, 1, d)
        if self.covariance == "diag":
            inv_var = torch.exp(-self.log_variances).unsqueeze(0)  # (1, K, d)
            trace = (q_var * inv_var).sum(-1)
            maha = (diff.square() * inv_var).sum(-1)
            log_det = self.log_variances.sum(-1)
        else:
            chol = self.cholesky()
            eye = torch.eye(self.dim, dtype=chol.dtype, device=chol.device).expand_as(chol)
            chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # L_k^-1
            # (S_k^-1)_jj = sum_i (L_k^-1)_ij^2: the trace term needs only the diagonal.
            precision_diag = chol_inv.square().sum(-2)  # (K, d)
            trace = (q_var * precision_diag.unsqueeze(0)).sum(-1)
            maha = (chol_inv.unsqueeze(0) @ diff.unsqueeze(-1)).squeeze(-1).square().sum(-1)
            log_det = 2.0 * torch.diagonal(self.cholesky_raw, dim1=-2, dim2=-1).sum(-1)
        return 0.5 * (log_det.unsqueeze(0) - q_logvar.sum(-1, keepdim=True) + trace + maha - self.dim)

    def kl(self, q_mean, q_logvar, z_sample=None):
        """The VaDE closed form (Jiang et al. 2017):
        ``sum_k gamma_k KL(q(z|x) || N(m_k, S_k)) + KL(gamma || pi)``.

        ``gamma = p(k | z)`` is evaluated at ``z_sample`` when given (a reparameterised
        sample of ``q``, as in VaDE), else at ``q_mean``; gradients flow through ``gamma``.
        This is exactly the ELBO's cluster term when ``q(c | x)`` is taken to be ``gamma``;
        it is ``>= 0`` and an upper bound on ``KL(q(z|x) || p(z))``.

        :param q_mean: ``(N, dim)`` posterior means.
        :param q_logvar: ``(N, dim)`` posterior log variances.
        :param z_sample: ``(N, dim)`` optional reparameterised sample.
        :return: ``(N,)``.
        """
        q_mean = as_model_tensor(q_mean, self.means, self.dim, "q_mean")
        q_logvar = as_model_tensor(q_logvar, self.means, self.dim, "q_logvar")
        z_ref = q_mean if z_sample is None else as_model_tensor(z_sample, self.means, self.dim, "z_sample")
        log_gamma = torch.log_softmax(self.log_prob_per_component(z_ref), dim=-1)
        expected_kl = (log_gamma.exp() * self.gaussian_kl_to_components(q_mean, q_logvar)).sum(-1)
        return expected_kl + categorical_kl(log_gamma, self.log_weights())

    # ---------------------------------------------------------------- sampling and fitting

    @torch.no_grad()
    def sample(self, n, generator=None):
        weights = self.log_weights().exp()
        component = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, 1, generator=generator, dtype=self.means.dtype, device=self.means.device)
        z = self.means[component] + (self.cholesky()[component] @ eps).squeeze(-1)
        return z, component

    @torch.no_grad()
    def init_from(self, latents):
        """Fit ``sklearn.mixture.GaussianMixture(n_components=K, covariance_type=covariance,
        random_state=seed, reg_covar=reg_covar, n_init=init_restarts)`` to the latents and copy its weights
        (unless ``learn_weights`` is false: they stay uniform), means and covariances in.

        :param latents: ``(N, dim)`` encoded data, ``N >= n_components``, finite.
        :raises ValueError: non-finite latents, a wrong shape or too few points.
        """
        from sklearn.mixture import GaussianMixture  # heavy import, only needed here

        data = validate_latents(latents, self.dim, self.n_components).detach().cpu().double().numpy()
        fit = GaussianMixture(
            n_components=self.n_components,
            covariance_type=self.covariance,
            random_state=self.config.seed,
            reg_covar=self.config.reg_covar,
            n_init=self.config.init_restarts,
        ).fit(data)
        like = dict(dtype=self.means.dtype, device=self.means.device)
        self.weights.set_from(fit.weights_)
        self.means.copy_(torch.as_tensor(fit.means_, **like))
        covariances = torch.as_tensor(fit.covariances_, dtype=torch.float64)
        if self.covariance == "diag":
            self.log_variances.copy_(torch.log(covariances).to(**like))
        else:
            chol = torch.linalg.cholesky(covariances)
            raw = torch.tril(chol, diagonal=-1) + torch.diag_embed(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)))
            self.cholesky_raw.copy_(raw.to(**like))


    @torch.no_grad()
    def init_from_assignments(self, latents, assignments):
        """Component ``k`` gets the mean and covariance (diagonal or full, plus ``reg_covar``)
        of the latents assigned to ``k``, and their share as its weight (unless the weights
        are fixed uniform); an empty component sits on a random latent with the data's spread.

        :param latents: ``(N, dim)`` encoded data.
        :param assignments: ``(N,)`` component indices in ``0..K-1``.
        """
        counts, means, variances = assignment_moments(latents, assignments, self.dim, self.n_components)
        like = dict(dtype=self.means.dtype, device=self.means.device)
        self.weights.set_from((counts + 1.0) / (counts.sum() + self.n_components))
        self.means.copy_(means.to(**like))
        variances = variances + self.config.reg_covar
        if self.covariance == "diag":
            self.log_variances.copy_(torch.log(variances).to(**like))
            return
        data = torch.as_tensor(latents).detach().cpu().double()
        labels = torch.as_tensor(assignments).detach().cpu().long().reshape(-1)
        raw = torch.zeros(self.n_components, self.dim, self.dim, dtype=torch.float64)
        for k in range(self.n_components):
            members = data[labels == k]
            if len(members) > self.dim:
                cov = torch.cov(members.T, correction=0) + self.config.reg_covar * torch.eye(self.dim, dtype=torch.float64)
            else:
                cov = torch.diag(variances[k])
            chol = torch.linalg.cholesky(cov)
            raw[k] = torch.tril(chol, diagonal=-1) + torch.diag(torch.log(torch.diagonal(chol)))
        self.cholesky_raw.copy_(raw.to(**like))


def make_gmm(config: GMMConfig, dim: int) -> GaussianMixturePrior:
    """Factory registered for the ``gmm`` tag: ``factory(config, dim=d)``."""
    return GaussianMixturePrior(config, check_dim(dim, "gmm"))
