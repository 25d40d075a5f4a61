"""``student_t``: a mixture of multivariate Student-t with diagonal scales."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from mcvae_framework.interfaces import MixturePrior
from mcvae_framework.interfaces import assignment_moments, validate_latents

from ._common import (
    MixtureConfigBase,
    MixtureWeights,
    as_model_tensor,
    check_dim,
    diag_posterior_log_density,
    initial_means,
    reparameterised_sample,
)
from .student_t_fit import fit_student_t_mixture, sample_standard_gamma, student_t_log_density


class StudentTConfig(MixtureConfigBase):
    """Student-t mixture prior: K components with learned weights, locations, diagonal
    scales and degrees of freedom (each kept above ``min_dof``)."""

    type: Literal["student_t"] = "student_t"
    covariance: str = Field("diag", description="only 'diag' (a diagonal scale matrix per component)")
    min_dof: float = Field(
        2.0, gt=0, description="lower bound of every component's degrees of freedom (2 keeps variances finite)"
    )
    init_dof: float = Field(5.0, gt=0, description="degrees of freedom before init_from's estimate")
    max_dof: float = Field(100.0, gt=0, description="upper bound of init_from's degrees-of-freedom estimate")
    learn_dof: bool = Field(True, description="learn the degrees of freedom (false: keep init_from's values fixed)")
    em_steps: int = Field(
        30, ge=0, description="EM (ECM) steps of the Student-t mixture fit in init_from, after the Gaussian fit"
    )
    reg_covar: float = Field(1e-6, gt=0, description="added to the variances of the Gaussian fit in init_from")

    @field_validator("covariance")
    @classmethod
    def _only_diag(cls, value: str) -> str:
        if value != "diag":
            raise ValueError(
                "student_t supports only diagonal scales (covariance: diag); use prior type "
                "gmm with covariance: full for full covariances"
            )
        return value

    @model_validator(mode="after")
    def _dof_order(self):
        if not self.min_dof < self.init_dof <= self.max_dof:
            raise ValueError(
                f"degrees of freedom must satisfy min_dof < init_dof <= max_dof, got min_dof="
                f"{self.min_dof}, init_dof={self.init_dof}, max_dof={self.max_dof}; set init_dof "
                "between the two bounds"
            )
        return self


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """``softplus^-1(x) = log(exp(x) - 1)``, written to stay finite for large ``x``."""
    return x + torch.log(-torch.expm1(-x))


class StudentTMixturePrior(MixturePrior):
    """``sum_k pi_k t_{nu_k}(z; m_k, diag(s_k^2))``.

    Parameters: weight logits (see ``learn_weights``), ``locations (K, d)``,
    ``log_scales (K, d)`` and ``dof_raw (K,)`` with ``nu_k = min_dof + softplus(dof_raw_k)``
    (a buffer when ``learn_dof`` is false). Before :meth:`init_from`: seeded
    standard-normal locations, unit scales, ``nu = init_dof``.

    :param config: the validated :class:`StudentTConfig`.
    :param dim: latent size.
    """

    kl_is_monte_carlo = True

    def __init__(self, config: StudentTConfig, dim: int):
        super().__init__()
        self.config = config
        self.n_components = config.n_components
        self.dim = dim
        self.min_dof = config.min_dof
        self.weights = MixtureWeights(config.n_components, config.learn_weights)
        self.locations = nn.Parameter(initial_means(config.n_components, dim, config.seed))
        self.log_scales = nn.Parameter(torch.zeros(config.n_components, dim))
        raw = _inverse_softplus(torch.full((config.n_components,), config.init_dof - config.min_dof))
        if config.learn_dof:
            self.dof_raw = nn.Parameter(raw)
        else:
            self.register_buffer("dof_raw", raw)

    def log_weights(self) -> torch.Tensor:
        return self.weights.log_weights()

    def dof(self) -> torch.Tensor:
        """``(K,)`` degrees of freedom, each ``> min_dof``."""
        return self.min_dof + F.softplus(self.dof_raw)

    def component_means(self) -> torch.Tensor:
        """``(K, d)`` locations (the mean where ``nu > 1``, which ``min_dof >= 1`` guarantees)."""
        return self.locations

    def component_covariances(self) -> torch.Tensor:
        """``(K, d, d)``: ``nu / (nu - 2) diag(s^2)``, ``inf`` on the diagonal where ``nu <= 2``."""
        dof = self.dof()
        factor = torch.where(dof > 2, dof / (dof - 2).clamp_min(1e-12), torch.full_like(dof, float("inf")))
        return torch.diag_embed(factor.unsqueeze(-1) * torch.exp(2 * self.log_scales))

    def log_prob_per_component(self, z):
        z = as_model_tensor(z, self.locations, self.dim)
        log_t = student_t_log_density(z, self.locations, self.log_scales, self.dof())
        return self.log_weights().unsqueeze(0) + log_t

    def kl(self, q_mean, q_logvar, z_sample=None):
        """Monte-Carlo estimate ``log q(z|x) - log p(z)`` at one reparameterised sample
        ``z`` per row: ``z_sample`` when given, else one drawn here as
        ``q_mean + exp(q_logvar / 2) * eps`` from torch's global RNG.

        Unbiased for ``KL(q(z|x) || p(z))``; a single row can be negative, the estimate is
        ``>= 0`` in expectation. Gradients reach the posterior and every prior parameter.

        :return: ``(N,)``.
        """
        q_mean = as_model_tensor(q_mean, self.locations, self.dim, "q_mean")
        q_logvar = as_model_tensor(q_logvar, self.locations, self.dim, "q_logvar")
        if z_sample is None:
            z = reparameterised_sample(q_mean, q_logvar)
        else:
            z = as_model_tensor(z_sample, self.locations, self.dim, "z_sample")
        return diag_posterior_log_density(z, q_mean, q_logvar) - self.log_prob(z)

    @torch.no_grad()
    def sample(self, n, generator=None):
        """Component ``k ~ Cat(pi)``, then ``z = m_k + s_k * eps * sqrt(nu_k / w)`` with
        ``eps ~ N(0, I)`` and ``w ~ chi2(nu_k) = 2 Gamma(nu_k / 2)``."""
        like = dict(dtype=self.locations.dtype, device=self.locations.device)
        component = torch.multinomial(self.log_weights().exp(), n, replacement=True, generator=generator)
        dof = self.dof()[component]
        eps = torch.randn(n, self.dim, generator=generator, **like)
        chi2 = 2.0 * sample_standard_gamma(0.5 * dof, generator)
        z = self.locations[component] + torch.exp(self.log_scales[component]) * eps * torch.sqrt(dof / chi2).unsqueeze(-1)
        return z, component

    @torch.no_grad()
    def init_from(self, latents):
        """Warm start in two stages, both seeded with ``seed``:

        1. ``sklearn.mixture.GaussianMixture(covariance_type="diag")`` gives weights,
           locations and variances (used as the initial squared scales, ``nu = init_dof``);
        2. ``em_steps`` ECM steps of maximum likelihood for the Student-t mixture refine all
           of them and estimate each component's degrees of freedom (McLachlan & Peel
           2000), kept in ``[min_dof, max_dof]``.

        Weights stay uniform when ``learn_weights`` is false.

        :param latents: ``(N, dim)`` encoded data, ``N >= n_components``, finite.
        :raises ValueError: non-finite latents, a wrong shape or too few points.
        """
        from sklearn.mixture import GaussianMixture  # heavy import, only needed here

        data = validate_latents(latents, self.dim, self.n_components).detach().cpu().double()
        cfg = self.config
        gauss = GaussianMixture(
            n_components=self.n_components, covariance_type="diag", random_state=cfg.seed, reg_covar=cfg.reg_covar,
            n_init=cfg.init_restarts
        ).fit(data.numpy())
        f64 = dict(dtype=torch.float64)
        weights = torch.as_tensor(gauss.weights_, **f64)
        if not cfg.learn_weights:
            weights = torch.full_like(weights, 1.0 / self.n_components)
        dof = torch.full((self.n_components,), cfg.init_dof, **f64)
        weights, loc, scale2, dof = fit_student_t_mixture(
            data,
            weights,
            torch.as_tensor(gauss.means_, **f64),
            torch.as_tensor(gauss.covariances_, **f64),
            dof,
            min_dof=cfg.min_dof,
            max_dof=cfg.max_dof,
            steps=cfg.em_steps,
            fixed_weights=not cfg.learn_weights,
        )
        like = dict(dtype=self.locations.dtype, device=self.locations.device)
        self.weights.set_from(weights)
        self.locations.copy_(loc.to(**like))
        self.log_scales.copy_((0.5 * torch.log(scale2)).to(**like))
        # Keep nu strictly above min_dof so that the softplus inverse stays finite.
        excess = (dof - cfg.min_dof).clamp_min(1e-3)
        self.dof_raw.copy_(_inverse_softplus(excess).to(**like))


    @torch.no_grad()
    def init_from_assignments(self, latents, assignments):
        """Component ``k`` gets the mean of the latents assigned to ``k`` as its location and
        their variance, times ``(nu - 2) / nu``, as its squared scale (so that its
        covariance matches them), with ``nu = init_dof``; their share is its weight unless
        the weights are fixed uniform.

        :param latents: ``(N, dim)`` encoded data.
        :param assignments: ``(N,)`` component indices in ``0..K-1``.
        """
        counts, means, variances = assignment_moments(latents, assignments, self.dim, self.n_components)
        cfg = self.config
        like = dict(dtype=self.locations.dtype, device=self.locations.device)
        dof = float(cfg.init_dof)
        shrink = (dof - 2.0) / dof if dof > 2.0 else 1.0
        self.weights.set_from((counts + 1.0) / (counts.sum() + self.n_components))
        self.locations.copy_(means.to(**like))
        self.log_scales.copy_((0.5 * torch.log(shrink * variances + cfg.reg_covar)).to(**like))
        excess = torch.full((self.n_components,), dof - cfg.min_dof, dtype=torch.float64).clamp_min(1e-3)
        self.dof_raw.copy_(_inverse_softplus(excess).to(**like))


def make_student_t(config: StudentTConfig, dim: int) -> StudentTMixturePrior:
    """Factory registered for the ``student_t`` tag: ``factory(config, dim=d)``."""
    return StudentTMixturePrior(config, check_dim(dim, "student_t"))
