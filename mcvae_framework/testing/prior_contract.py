"""Contract tests every :class:`~mcvae_framework.interfaces.MixturePrior` plugin must pass.

    from mcvae_framework.testing import MixturePriorContract

    class TestMyPrior(MixturePriorContract):
        prior_config = {"type": "my_prior", "n_components": 3}

The kit builds the prior with ``mcvae_framework.build("prior", prior_config, dim=...)``,
then moves every learned parameter by seeded noise so that the checks do not run on a
symmetric initial state (equal weights, unit covariances). It checks that densities
integrate to 1 (1-D and 2-D quadrature), that samples follow the density and match
the declared weights, means and covariances, that :meth:`kl` agrees with a Monte-Carlo
estimate of what it claims to compute (see ``MixturePrior.kl_is_monte_carlo``), that
gradients reach every learned parameter and are finite, and that far-away points give
finite values -- in float32 and float64, on the CPU and (when present) on CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from mcvae_framework import build
from mcvae_framework.interfaces import MixturePrior

DEVICE_DTYPES = [
    ("cpu", torch.float32),
    ("cpu", torch.float64),
    ("cuda", torch.float32),
    ("cuda", torch.float64),
]


def _device_id(param) -> str:
    device, dtype = param
    return f"{device}-{str(dtype).removeprefix('torch.')}"


def _diag_gaussian_log_density(z, mean, logvar):
    """log N(z; mean, diag exp(logvar)), summed over the last axis (the kit's own formula)."""
    return -0.5 * (math.log(2 * math.pi) * z.shape[-1] + logvar.sum(-1) + ((z - mean) ** 2 / logvar.exp()).sum(-1))


def _mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


class _MixturePriorDensityChecks:
    """The first half of :class:`MixturePriorContract`: its settings, building, shapes and
    bookkeeping, and the densities."""

    #: the prior's config section, e.g. ``{"type": "gmm", "n_components": 3}`` (required).
    prior_config: dict | None = None
    #: size of the latent the prior is built for (the factory's ``dim``).
    dim: int = 3
    #: std of the seeded noise added to every learned parameter, so that no check passes at the init.
    perturbation: float = 0.4
    #: samples of the Monte-Carlo estimates the densities and the KL are compared with.
    n_monte_carlo: int = 20000

    # ------------------------------------------------------------------ building

    def make_prior(self, dim: int | None = None, *, device="cpu", dtype=torch.float64, seed: int = 0) -> MixturePrior:
        """The prior under test, with every learned parameter moved by seeded noise."""
        if self.prior_config is None:
            raise TypeError(f"{type(self).__name__} must set prior_config = {{'type': ...}}")
        prior = build("prior", dict(self.prior_config), dim=self.dim if dim is None else dim)
        assert isinstance(prior, MixturePrior), f"the factory returned {type(prior).__name__}, not a MixturePrior"
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in prior.parameters():
                param.add_(self.perturbation * torch.randn(param.shape, generator=gen, dtype=param.dtype))
        return prior.to(device=device, dtype=dtype)

    @pytest.fixture(params=DEVICE_DTYPES, ids=_device_id)
    def device_dtype(self, request):
        device, dtype = request.param
        if device == "cuda" and not torch.cuda.is_available():
            pytest.skip("CUDA is not available")
        return device, dtype

    def _posteriors(self, prior: MixturePrior, n: int, seed: int = 1):
        """Diagonal Gaussian posteriors near (and some far from) the components."""
        gen = torch.Generator().manual_seed(seed)
        like = dict(dtype=prior.component_means().dtype)
        centres = prior.component_means().detach().cpu()[torch.arange(n) % prior.n_components]
        q_mean = centres + 1.5 * torch.randn(n, prior.dim, generator=gen, **like)
        q_logvar = -2.0 + 2.5 * torch.rand(n, prior.dim, generator=gen, **like)
        device = prior.component_means().device
        return q_mean.to(device), q_logvar.to(device)

    # ------------------------------------------------------------------ shape and bookkeeping

    def test_declares_components_and_weights(self):
        prior = self.make_prior()
        assert isinstance(prior.n_components, int) and prior.n_components >= 1
        assert prior.dim == self.dim
        log_w = prior.log_weights()
        assert log_w.shape == (prior.n_components,)
        torch.testing.assert_close(torch.logsumexp(log_w, 0), log_w.new_zeros(()), atol=1e-10, rtol=0)
        assert prior.component_means().shape == (prior.n_components, self.dim)
        assert prior.component_covariances().shape == (prior.n_components, self.dim, self.dim)

    def test_outputs_follow_device_and_dtype(self, device_dtype):
        device, dtype = device_dtype
        prior = self.make_prior(device=device, dtype=dtype)
        z = torch.randn(7, self.dim, dtype=dtype, device=device)
        q_logvar = torch.zeros_like(z)
        gen = torch.Generator(device=device).manual_seed(0)
        samples, component = prior.sample(5, generator=gen)
        outputs = {
            "log_prob": (prior.log_prob(z), (7,)),
            "log_prob_per_component": (prior.log_prob_per_component(z), (7, prior.n_components)),
            "responsibilities": (prior.responsibilities(z), (7, prior.n_components)),
            "kl": (prior.kl(z, q_logvar), (7,)),
            "kl with z_sample": (prior.kl(z, q_logvar, z_sample=z + 0.1), (7,)),
            "sample": (samples, (5, self.dim)),
        }
        for name, (value, shape) in outputs.items():
            assert value.shape == shape, f"{name}: shape {tuple(value.shape)}, expected {shape}"
            assert value.dtype == dtype and value.device.type == device, f"{name}: {value.dtype} on {value.device}"
        assert component.shape == (5,) and component.dtype == torch.long
        assert int(component.min()) >= 0 and int(component.max()) < prior.n_components

    def test_float32_agrees_with_float64(self):
        p64 = self.make_prior()
        p32 = self.make_prior(dtype=torch.float32)
        z = torch.randn(50, self.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(p32.log_prob(z.float()).double(), p64.log_prob(z), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            p32.responsibilities(z.float()).double(), p64.responsibilities(z), rtol=1e-4, atol=1e-5
        )

    def test_state_dict_round_trip(self):
        prior = self.make_prior()
        fresh = build("prior", dict(self.prior_config), dim=self.dim).double()
        fresh.load_state_dict(prior.state_dict())
        z = torch.randn(20, self.dim, dtype=torch.float64)
        torch.testing.assert_close(fresh.log_prob(z), prior.log_prob(z))

    # ------------------------------------------------------------------ densities

    def test_log_prob_is_logsumexp_of_components(self, device_dtype):
        device, dtype = device_dtype
        prior = self.make_prior(device=device, dtype=dtype)
        z = 3 * torch.randn(40, self.dim, dtype=dtype, device=device)
        per_component = prior.log_prob_per_component(z)
        torch.testing.assert_close(prior.log_prob(z), torch.logsumexp(per_component, -1))
        torch.testing.assert_close(prior.responsibilities(z), torch.softmax(per_component, -1))

    def _quadrature_nodes(self, prior: MixturePrior, n: int):
        """Midpoint nodes ``z = c + s tan(theta)`` covering the whole line, with weights
        ``s sec^2(theta) dtheta``: heavy tails are integrated, not cut off. ``c`` and ``s``
        are the sample median and spread of the prior along each axis."""
        samples, _ = prior.sample(4000, generator=torch.Generator().manual_seed(5))
        centre = samples.median(0).values
        q = torch.quantile(samples, torch.tensor([0.25, 0.75], dtype=samples.dtype), dim=0)
        spread = (q[1] - q[0]).clamp_min(1e-3)
        step = math.pi / n
        theta = -math.pi / 2 + step * (torch.arange(n, dtype=torch.float64) + 0.5)
        nodes = centre.unsqueeze(0) + spread.unsqueeze(0) * torch.tan(theta).unsqueeze(1)  # (n, d)
        weights = spread.unsqueeze(0) * step / torch.cos(theta).square().unsqueeze(1)  # (n, d)
        return nodes, weights

    def test_density_integrates_to_one_1d(self):
        prior = self.make_prior(dim=1)
        nodes, weights = self._quadrature_nodes(prior, 20000)
        with torch.no_grad():
            total = (prior.log_prob(nodes).exp() * weights[:, 0]).sum()
        assert abs(float(total) - 1.0) < 1e-3, f"1-D density integrates to {float(total):.6f}, not 1"

    def test_density_integrates_to_one_2d(self):
        prior = self.make_prior(dim=2)
        nodes, weights = self._quadrature_nodes(prior, 800)
        grid = torch.stack(torch.meshgrid(nodes[:, 0], nodes[:, 1], indexing="ij"), -1).reshape(-1, 2)
        area = (weights[:, 0].unsqueeze(1) * weights[:, 1].unsqueeze(0)).reshape(-1)
        with torch.no_grad():
            total = sum((prior.log_prob(chunk).exp() * a).sum() for chunk, a in zip(grid.split(65536), area.split(65536)))
        assert abs(float(total) - 1.0) < 1e-3, f"2-D density integrates to {float(total):.6f}, not 1"

    def test_samples_follow_the_density_1d(self):
        """Kolmogorov-Smirnov distance between samples and the CDF of the numerically
        integrated density."""
        prior = self.make_prior(dim=1)
        nodes, weights = self._quadrature_nodes(prior, 20000)
        with torch.no_grad():
            mass = prior.log_prob(nodes).exp() * weights[:, 0]
        cdf_at_nodes = torch.cumsum(mass, 0) - 0.5 * mass  # midpoint: half of each cell
        cdf_at_nodes = cdf_at_nodes / mass.sum()
        n = 20000
        samples, _ = prior.sample(n, generator=torch.Generator().manual_seed(11))
        sorted_samples = samples[:, 0].sort().values
        idx = torch.searchsorted(nodes[:, 0].contiguous(), sorted_samples).clamp(1, nodes.shape[0] - 1)
        lo, hi = nodes[idx - 1, 0], nodes[idx, 0]
        frac = ((sorted_samples - lo) / (hi - lo)).clamp(0, 1)
        model_cdf = cdf_at_nodes[idx - 1] + frac * (cdf_at_nodes[idx] - cdf_at_nodes[idx - 1])
        empirical_hi = torch.arange(1, n + 1, dtype=torch.float64) / n
        ks = torch.maximum(empirical_hi - model_cdf, model_cdf - (empirical_hi - 1.0 / n)).max()
        critical = 1.95 / math.sqrt(n) + 2e-3  # alpha = 0.001, plus the quadrature's error
        assert float(ks) < critical, f"KS distance {float(ks):.4f} >= {critical:.4f}: samples do not follow the density"

    def test_sample_moments_match_parameters(self):
        prior = self.make_prior()
        n = 150000
        z, component = prior.sample(n, generator=torch.Generator().manual_seed(7))
        weights = prior.log_weights().exp().detach()
        means = prior.component_means().detach()
        covariances = prior.component_covariances().detach()
        freq = torch.bincount(component, minlength=prior.n_components).double() / n
        tol = 5 * torch.sqrt(weights * (1 - weights) / n) + 1e-9
        assert bool(((freq - weights).abs() <= tol).all()), f"component frequencies {freq} vs weights {weights}"
        for k in range(prior.n_components):
            zk = z[component == k]
            if zk.shape[0] < 200:
                continue
            # Tolerances from the sample's own spread: valid for heavy tails too.
            centred = zk - zk.mean(0)
            mean_se = centred.std(0) / math.sqrt(zk.shape[0])
            assert bool(((zk.mean(0) - means[k]).abs() <= 6 * mean_se + 1e-9).all()), (
                f"component {k}: sample mean {zk.mean(0)} vs declared {means[k]}"
            )
            if not bool(torch.isfinite(covariances[k]).all()):
                continue
            products = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (n_k, d, d)
            cov_se = products.std(0) / math.sqrt(zk.shape[0])
            sample_cov = products.mean(0)
            assert bool(((sample_cov - covariances[k]).abs() <= 6 * cov_se + 1e-9).all()), (
                f"component {k}: sample covariance\n{sample_cov}\nvs declared\n{covariances[k]}"
            )

    def test_responsibilities_sum_to_one(self, device_dtype):
        device, dtype = device_dtype
        prior = self.make_prior(device=device, dtype=dtype)
        z = torch.cat([4 * torch.randn(30, self.dim), 1e4 * torch.randn(5, self.dim)]).to(device, dtype)
        gamma = prior.responsibilities(z)
        assert bool(torch.isfinite(gamma).all()) and bool((gamma >= 0).all())
        torch.testing.assert_close(gamma.sum(-1), torch.ones(35, dtype=dtype, device=device))

    def test_far_points_give_finite_values(self, device_dtype):
        device, dtype = device_dtype
        prior = self.make_prior(device=device, dtype=dtype)
        direction = torch.tensor([1.0] + [-0.5] * (self.dim - 1))
        z = torch.stack([s * direction for s in (1e2, -1e3, 1e4, 1e6)]).to(device, dtype)
        q_logvar = torch.zeros_like(z)
        values = {
            "log_prob": prior.log_prob(z),
            "log_prob_per_component": prior.log_prob_per_component(z),
            "responsibilities": prior.responsibilities(z),
            "kl": prior.kl(z, q_logvar),
            "kl with z_sample": prior.kl(z, q_logvar, z_sample=z),
        }
        for name, value in values.items():
            assert bool(torch.isfinite(value).all()), f"{name} is not finite far from the components: {value}"
        assert bool((values["log_prob"] < prior.log_prob(prior.component_means()[:1]).detach()).all())

    def test_gradients_are_finite_for_every_learned_parameter(self, device_dtype):
        device, dtype = device_dtype
        prior = self.make_prior(device=device, dtype=dtype)
        z = torch.cat([2 * torch.randn(16, self.dim), 1e4 * torch.ones(2, self.dim)]).to(device, dtype)
        q_mean = z.clone().requires_grad_(True)
        q_logvar = torch.full_like(z, -1.0).requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            loss = (
                prior.log_prob(z).sum()
                + prior.responsibilities(z)[:, 0].sum()
                + prior.kl(q_mean, q_logvar).sum()
                + prior.kl(q_mean, q_logvar, z_sample=q_mean + 0.1).sum()
            )
            loss.backward()
        for name, param in prior.named_parameters():
            assert param.grad is not None, f"parameter {name} gets no gradient from log_prob/kl"
            assert bool(torch.isfinite(param.grad).all()), f"parameter {name} has a non-finite gradient"
        for name, tensor in (("q_mean", q_mean), ("q_logvar", q_logvar)):
            assert tensor.grad is not None and bool(torch.isfinite(tensor.grad).all()), f"{name} gradient"


class MixturePriorContract(_MixturePriorDensityChecks):
    """Generic tests for a mixture prior plugin; subclass it in a ``Test*`` class.

    :cvar prior_config: the prior's config dict (with ``type``); required.
    :cvar dim: latent size used by the checks that are not tied to 1-D or 2-D.
    :cvar perturbation: std of the seeded noise added to every learned parameter.
    :cvar n_monte_carlo: samples per Monte-Carlo estimate.
    """

    # ------------------------------------------------------------------ the ELBO's cluster term

    def _mc_kl_terms(self, prior, mean, logvar, n, gen):
        """``(log q(z), log p(z), log p_k(z) (n, K))`` at ``n`` draws of one posterior."""
        z = mean + torch.exp(0.5 * logvar) * torch.randn(n, prior.dim, generator=gen, dtype=mean.dtype)
        log_q = _diag_gaussian_log_density(z, mean, logvar)
        per_component = prior.log_prob_per_component(z)
        return log_q, torch.logsumexp(per_component, -1), per_component - prior.log_weights()

    @torch.no_grad()
    def test_kl_is_nonnegative(self):
        prior = self.make_prior()
        q_mean, q_logvar = self._posteriors(prior, 64)
        if not prior.kl_is_monte_carlo:
            kl = prior.kl(q_mean, q_logvar)
            assert bool((kl >= -1e-9).all()), f"closed-form kl is negative: {kl.min()}"
            return
        # A Monte-Carlo kl is >= 0 in expectation: average many draws per posterior.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for i in range(4):
                reps = 4000
                kl = prior.kl(q_mean[i].expand(reps, -1), q_logvar[i].expand(reps, -1))
                mean, se = _mean_and_se(kl)
                assert mean >= -5 * se, f"posterior {i}: average kl {mean:.4f} +- {se:.4f} is negative"

    @torch.no_grad()
    def test_kl_agrees_with_monte_carlo(self):
        """Closed form: the VaDE quantity ``E_q[sum_k gamma_k (log q - log p_k)] + KL(gamma||pi)``
        with ``gamma`` fixed at ``q_mean``. Monte Carlo: the average of many ``kl`` calls
        against the kit's own estimate of ``E_q[log q - log p]``."""
        prior = self.make_prior()
        q_mean, q_logvar = self._posteriors(prior, 6)
        gen = torch.Generator().manual_seed(2)
        n = self.n_monte_carlo
        for i in range(q_mean.shape[0]):
            log_q, log_p, log_pk = self._mc_kl_terms(prior, q_mean[i], q_logvar[i], n, gen)
            if prior.kl_is_monte_carlo:
                reference, ref_se = _mean_and_se(log_q - log_p)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(i)
                    value, value_se = _mean_and_se(prior.kl(q_mean[i].expand(n, -1), q_logvar[i].expand(n, -1)))
                tol = 5 * math.hypot(ref_se, value_se) + 1e-6
            else:
                log_gamma = torch.log_softmax(prior.log_prob_per_component(q_mean[i : i + 1]), -1)[0]
                gamma = log_gamma.exp()
                categorical = float((gamma * (log_gamma - prior.log_weights())).sum())
                reference, ref_se = _mean_and_se(((log_q.unsqueeze(-1) - log_pk) * gamma).sum(-1))
                reference += categorical
                value = float(prior.kl(q_mean[i : i + 1], q_logvar[i : i + 1])[0])
                tol = 5 * ref_se + 1e-6 * (1 + abs(reference))
            assert abs(value - reference) <= tol, (
                f"posterior {i}: kl {value:.5f} vs Monte-Carlo {reference:.5f} (tolerance {tol:.5f})"
            )

    @torch.no_grad()
    def test_kl_uses_z_sample(self):
        prior = self.make_prior()
        q_mean, q_logvar = self._posteriors(prior, 16)
        z = q_mean + torch.exp(0.5 * q_logvar) * torch.randn(q_mean.shape, dtype=q_mean.dtype)
        if prior.kl_is_monte_carlo:
            expected = _diag_gaussian_log_density(z, q_mean, q_logvar) - prior.log_prob(z)
            torch.testing.assert_close(prior.kl(q_mean, q_logvar, z_sample=z), expected)
        else:
            # gamma is evaluated at z_sample when given and at q_mean otherwise.
            torch.testing.assert_close(prior.kl(q_mean, q_logvar, z_sample=q_mean), prior.kl(q_mean, q_logvar))
            assert bool(torch.isfinite(prior.kl(q_mean, q_logvar, z_sample=z)).all())

    @torch.no_grad()
    def test_closed_form_kl_bounds_the_mixture_kl(self):
        """Jensen: the VaDE term is >= KL(q || mixture) (estimated by Monte Carlo)."""
        prior = self.make_prior()
        if prior.kl_is_monte_carlo:
            pytest.skip("the Monte-Carlo kl estimates KL(q || p) itself")
        q_mean, q_logvar = self._posteriors(prior, 6, seed=4)
        gen = torch.Generator().manual_seed(3)
        kl = prior.kl(q_mean, q_logvar)
        for i in range(q_mean.shape[0]):
            log_q, log_p, _ = self._mc_kl_terms(prior, q_mean[i], q_logvar[i], self.n_monte_carlo, gen)
            mixture_kl, se = _mean_and_se(log_q - log_p)
            assert float(kl[i]) >= mixture_kl - 5 * se - 1e-9, (
                f"posterior {i}: kl {float(kl[i]):.5f} below KL(q || mixture) ~ {mixture_kl:.5f} +- {se:.5f}"
            )

    # ------------------------------------------------------------------ init_from

    def _clustered_latents(self, n_per_cluster: int, k: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        centres = 10.0 * torch.randn(k, self.dim, generator=gen, dtype=torch.float64)
        labels = torch.arange(k).repeat_interleave(n_per_cluster)
        latents = centres[labels] + 0.5 * torch.randn(labels.shape[0], self.dim, generator=gen, dtype=torch.float64)
        return latents, labels

    def test_init_from_recovers_separated_clusters(self):
        prior = self.make_prior()
        k = prior.n_components
        latents, labels = self._clustered_latents(150, k)
        before = float(prior.log_prob(latents).mean().detach())
        prior.init_from(latents)
        after = float(prior.log_prob(latents).mean().detach())
        assert after >= before - 1e-6, f"init_from lowered the mean log-likelihood: {before:.3f} -> {after:.3f}"
        if k == 1:
            return
        predicted = prior.responsibilities(latents).argmax(-1)
        # Every true cluster must map to one component and no two clusters share one.
        matches = {int(labels[i]): int(predicted[i]) for i in range(latents.shape[0])}
        agreement = (predicted == torch.tensor([matches[int(c)] for c in labels])).double().mean()
        assert float(agreement) > 0.99 and len(set(matches.values())) == k, (
            f"init_from did not recover {k} separated clusters (agreement {float(agreement):.3f})"
        )

    def test_init_from_rejects_bad_latents(self):
        prior = self.make_prior()
        latents, _ = self._clustered_latents(20, max(prior.n_components, 2))
        bad_values = latents.clone()
        bad_values[3, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            prior.init_from(bad_values)
        bad_values[3, 0] = float("inf")
        with pytest.raises(ValueError, match="inf"):
            prior.init_from(bad_values)
        with pytest.raises(ValueError, match="shape"):
            prior.init_from(latents[:, :-1] if self.dim > 1 else latents.repeat(1, 2))
        with pytest.raises(ValueError, match="components"):
            prior.init_from(latents[: prior.n_components - 1])
