"""The built-in priors: the contract kit for each, independent references (scikit-learn,
scipy, torch.distributions), the warm starts, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from click.testing import CliRunner
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from mcvae_framework import ConfigError, build
from mcvae_framework.testing import MixturePriorContract

# ---------------------------------------------------------------- the contract kit


class TestGMMDiagContract(MixturePriorContract):
    prior_config = {"type": "gmm", "n_components": 3}


class TestGMMFullContract(MixturePriorContract):
    prior_config = {"type": "gmm", "n_components": 3, "covariance": "full"}


class TestStudentTContract(MixturePriorContract):
    prior_config = {"type": "student_t", "n_components": 3}


class TestStandardNormalContract(MixturePriorContract):
    prior_config = {"type": "standard_normal"}


def perturbed(config: dict, dim: int, seed: int = 0):
    """A float64 prior whose parameters were moved away from their symmetric start."""
    prior = build("prior", config, dim=dim)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in prior.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=gen))
    return prior.double()


def probe_points(dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    near = 2.0 * torch.randn(200, dim, generator=gen, dtype=torch.float64)
    far = 50.0 * torch.randn(10, dim, generator=gen, dtype=torch.float64)
    return torch.cat([near, far])


def clustered_data(n_per_cluster, k, dim, seed=0, spread=8.0):
    rng = np.random.default_rng(seed)
    centres = spread * rng.standard_normal((k, dim))
    labels = np.repeat(np.arange(k), n_per_cluster)
    return centres[labels] + rng.standard_normal((labels.size, dim)), labels


# ---------------------------------------------------------------- gmm against scikit-learn


def sklearn_mixture_with(prior) -> GaussianMixture:
    """A scikit-learn GaussianMixture holding exactly the prior's parameters."""
    weights = prior.log_weights().exp().detach().numpy()
    means = prior.means.detach().numpy()
    chol = prior.cholesky().detach().numpy()
    gm = GaussianMixture(n_components=prior.n_components, covariance_type=prior.covariance)
    gm.weights_, gm.means_ = weights, means
    if prior.covariance == "diag":
        variances = np.stack([np.diag(c) ** 2 for c in chol])
        gm.covariances_ = variances
        gm.precisions_cholesky_ = 1.0 / np.sqrt(variances)
    else:
        gm.covariances_ = chol @ np.swapaxes(chol, -1, -2)
        # scikit-learn stores P with precision = P P^T; for S = L L^T that is L^-T.
        gm.precisions_cholesky_ = np.swapaxes(np.linalg.inv(chol), -1, -2)
    return gm


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_log_density_matches_sklearn(covariance):
    prior = perturbed({"type": "gmm", "n_components": 4, "covariance": covariance}, dim=3)
    gm = sklearn_mixture_with(prior)
    z = probe_points(3)
    with torch.no_grad():
        np.testing.assert_allclose(prior.log_prob(z).numpy(), gm.score_samples(z.numpy()), rtol=1e-10, atol=1e-5)
        np.testing.assert_allclose(prior.responsibilities(z).numpy(), gm.predict_proba(z.numpy()), atol=1e-5)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_init_from_copies_the_sklearn_fit(covariance):
    data, _ = clustered_data(100, 3, 2, seed=1)
    prior = build("prior", {"type": "gmm", "n_components": 3, "covariance": covariance, "seed": 5}, dim=2).double()
    prior.init_from(torch.as_tensor(data))
    reference = GaussianMixture(3, covariance_type=covariance, random_state=5, reg_covar=1e-6).fit(data)
    z = probe_points(2)
    with torch.no_grad():
        np.testing.assert_allclose(prior.log_prob(z).numpy(), reference.score_samples(z.numpy()), atol=1e-5)


# ---------------------------------------------------------------- student_t against scipy


def test_student_t_log_density_matches_scipy():
    prior = perturbed({"type": "student_t", "n_components": 4, "min_dof": 0.5, "init_dof": 3.0}, dim=3)
    z = probe_points(3).numpy()
    log_w = prior.log_weights().detach().numpy()
    loc, scale, dof = prior.locations.detach().numpy(), prior.log_scales.detach().exp().numpy(), prior.dof().detach().numpy()
    per_component = np.stack(
        [
            log_w[k] + scipy.stats.multivariate_t(loc=loc[k], shape=np.diag(scale[k] ** 2), df=dof[k]).logpdf(z)
            for k in range(4)
        ],
        axis=1,
    )
    with torch.no_grad():
        ours = prior.log_prob_per_component(torch.as_tensor(z)).numpy()
        np.testing.assert_allclose(ours, per_component, rtol=1e-10, atol=1e-5)
        np.testing.assert_allclose(prior.log_prob(torch.as_tensor(z)).numpy(), logsumexp(per_component, axis=1), atol=1e-5)


def test_student_t_covariances_match_scipy():
    prior = perturbed({"type": "student_t", "n_components": 3}, dim=2)
    cov = prior.component_covariances().detach().numpy()
    scale, dof = prior.log_scales.detach().exp().numpy(), prior.dof().detach().numpy()
    for k in range(3):
        expected = [scipy.stats.t(df=dof[k], scale=scale[k, j]).var() for j in range(2)]
        np.testing.assert_allclose(np.diag(cov[k]), expected, rtol=1e-10)
        assert cov[k, 0, 1] == 0.0


def test_student_t_covariance_is_infinite_below_two_dof():
    prior = build("prior", {"type": "student_t", "n_components": 2, "min_dof": 0.5, "init_dof": 1.5}, dim=2)
    assert bool(torch.isinf(torch.diagonal(prior.component_covariances(), dim1=-2, dim2=-1)).all())


@pytest.mark.parametrize("shape", [0.3, 1.0, 2.5, 40.0])
def test_gamma_sampler_matches_scipy(shape):
    from mcvae_builtins.priors.student_t_fit import sample_standard_gamma

    gen = torch.Generator().manual_seed(0)
    draws = sample_standard_gamma(torch.full((100000,), shape, dtype=torch.float64), gen)
    assert bool((draws > 0).all())
    assert scipy.stats.kstest(draws.numpy(), "gamma", args=(shape,)).pvalue > 1e-3


def test_student_t_init_from_estimates_degrees_of_freedom():
    """A heavy-tailed cluster (nu = 3) and a Gaussian one: the EM fit tells them apart."""
    rng = np.random.default_rng(0)
    n, dim = 4000, 2
    heavy = rng.standard_normal((n, dim)) / np.sqrt(rng.chisquare(3.0, (n, 1)) / 3.0) + np.array([-15.0, 0.0])
    gaussian = 2.0 * rng.standard_normal((n, dim)) + np.array([15.0, 0.0])
    prior = build("prior", {"type": "student_t", "n_components": 2, "min_dof": 1.0}, dim=dim).double()
    prior.init_from(torch.as_tensor(np.concatenate([heavy, gaussian])))
    order = prior.locations[:, 0].argsort()
    dof = prior.dof().detach()[order]
    scales = prior.log_scales.detach().exp()[order]
    assert 2.3 < float(dof[0]) < 4.0, f"dof of the nu=3 cluster estimated as {float(dof[0]):.2f}"
    assert float(dof[1]) > 50, f"dof of the Gaussian cluster estimated as {float(dof[1]):.2f}"
    torch.testing.assert_close(scales, torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=torch.float64), rtol=0.06, atol=0)


# ---------------------------------------------------------------- the cluster term against torch.distributions


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_kl_matches_torch_distributions(covariance):
    """The whole VaDE term, rebuilt from torch.distributions' Gaussian KL, with gamma at
    the given sample (and at the mean when no sample is given)."""
    prior = perturbed({"type": "gmm", "n_components": 3, "covariance": covariance}, dim=3, seed=2)
    gen = torch.Generator().manual_seed(1)
    q_mean = 2 * torch.randn(8, 3, generator=gen, dtype=torch.float64)
    q_logvar = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    z = q_mean + torch.exp(0.5 * q_logvar) * torch.randn(8, 3, generator=gen, dtype=torch.float64)
    q = MultivariateNormal(q_mean.unsqueeze(1), scale_tril=torch.diag_embed(torch.exp(0.5 * q_logvar)).unsqueeze(1))
    p = MultivariateNormal(prior.means.detach(), scale_tril=prior.cholesky().detach())
    component_kl = kl_divergence(q, p)  # (8, 3)
    log_pi = prior.log_weights().detach()
    with torch.no_grad():
        for at, z_sample in ((z, z), (q_mean, None)):
            gamma = prior.responsibilities(at)
            expected = (gamma * component_kl).sum(-1) + (gamma * (gamma.log() - log_pi)).sum(-1)
            torch.testing.assert_close(prior.kl(q_mean, q_logvar, z_sample=z_sample), expected)


def test_gmm_full_with_a_diagonal_factor_equals_diag():
    diag = perturbed({"type": "gmm", "n_components": 3}, dim=2)
    full = build("prior", {"type": "gmm", "n_components": 3, "covariance": "full"}, dim=2).double()
    with torch.no_grad():
        full.means.copy_(diag.means)
        full.weights.logits.copy_(diag.weights.logits)
        full.cholesky_raw.copy_(torch.diag_embed(0.5 * diag.log_variances))
    z, logvar = probe_points(2)[:20], torch.full((20, 2), -1.0, dtype=torch.float64)
    torch.testing.assert_close(full.log_prob(z), diag.log_prob(z))
    torch.testing.assert_close(full.kl(z, logvar), diag.kl(z, logvar))


def test_standard_normal_kl_matches_torch_distributions():
    prior = build("prior", {"type": "standard_normal"}, dim=4).double()
    q_mean, q_logvar = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    expected = kl_divergence(Normal(q_mean, torch.exp(0.5 * q_logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(prior.kl(q_mean, q_logvar), expected)
    torch.testing.assert_close(prior.log_prob(q_mean), Normal(0.0, 1.0).log_prob(q_mean).sum(-1))
    assert torch.equal(prior.responsibilities(q_mean), torch.ones(6, 1, dtype=torch.float64))
    assert list(prior.parameters()) == []


def test_standard_normal_init_from_is_a_no_op():
    prior = build("prior", {"type": "standard_normal"}, dim=2)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    prior.init_from(torch.randn(50, 2) + 7)
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())
    torch.testing.assert_close(prior.component_means(), torch.zeros(1, 2))


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("tag", ["gmm", "student_t", "standard_normal"])
def test_sampling_is_reproducible_with_a_generator(tag):
    prior = build("prior", {"type": tag}, dim=3)
    first = prior.sample(100, generator=torch.Generator().manual_seed(4))
    second = prior.sample(100, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("tag", ["gmm", "student_t"])
def test_fixed_weights_stay_uniform(tag):
    prior = build("prior", {"type": tag, "n_components": 3, "learn_weights": False}, dim=2).double()
    assert "weights.logits" not in dict(prior.named_parameters())
    assert "weights.logits" in prior.state_dict()  # still saved with checkpoints
    data = np.concatenate([clustered_data(n, 1, 2, seed=s)[0] + 20 * s for s, n in enumerate((300, 60, 20))])
    prior.init_from(torch.as_tensor(data))
    torch.testing.assert_close(prior.log_weights().exp(), torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("tag", ["gmm", "student_t"])
def test_learned_weights_follow_the_data(tag):
    prior = build("prior", {"type": tag, "n_components": 3}, dim=2).double()
    data = np.concatenate([clustered_data(n, 1, 2, seed=s)[0] + 20 * s for s, n in enumerate((300, 60, 20))])
    prior.init_from(torch.as_tensor(data))
    weights = prior.log_weights().exp().detach().sort().values
    torch.testing.assert_close(weights, torch.tensor([20, 60, 300], dtype=torch.float64) / 380, atol=0.01, rtol=0)


def test_fixed_dof_is_a_buffer():
    prior = build("prior", {"type": "student_t", "n_components": 2, "learn_dof": False, "init_dof": 7.0}, dim=2)
    assert "dof_raw" not in dict(prior.named_parameters())
    torch.testing.assert_close(prior.dof(), torch.full((2,), 7.0))


def test_priors_move_with_to():
    prior = build("prior", {"type": "gmm", "n_components": 2, "covariance": "full"}, dim=2).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in prior.parameters())
    assert prior.log_prob(torch.zeros(1, 2, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "config, path, fragment",
    [
        ({"type": "gmm", "n_components": 0}, "prior.n_components", "greater than or equal to 1"),
        ({"type": "student_t", "n_components": -2}, "prior.n_components", "greater than or equal to 1"),
        ({"type": "student_t", "covariance": "full"}, "prior.covariance", "only diagonal scales"),
        ({"type": "student_t", "min_dof": 0}, "prior.min_dof", "greater than 0"),
        ({"type": "student_t", "min_dof": -1.5}, "prior.min_dof", "greater than 0"),
        ({"type": "student_t", "min_dof": 8.0}, "prior", "min_dof < init_dof <= max_dof"),
        ({"type": "gmm", "covariance": "spherical"}, "prior.covariance", "'diag' or 'full'"),
        ({"type": "gmm", "reg_covar": 0}, "prior.reg_covar", "greater than 0"),
        ({"type": "standard_normal", "n_components": 3}, "prior.n_components", "unknown key"),
    ],
)
def test_bad_configs_are_clear_errors(config, path, fragment):
    with pytest.raises(ConfigError) as info:
        build("prior", config, dim=2)
    assert any(p == path and fragment in m for p, m in info.value.problems), info.value.problems


@pytest.mark.parametrize("dim", [0, -1, 2.5])
def test_bad_dim_is_a_clear_error(dim):
    with pytest.raises(ValueError, match="dim"):
        build("prior", {"type": "gmm"}, dim=dim)


def test_plugins_command_lists_the_priors():
    from mcvae_framework.cli import cli

    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "gmm, standard_normal, student_t" in result.output
