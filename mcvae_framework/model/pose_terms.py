"""The ELBO's pose terms for a group with a discrete part, and pose guidance by
synchronised orthogonal matrices (see :mod:`mcvae_framework.model.losses` for the whole loss).

With ``K`` components the pose posterior is ``q(k | x) q(tau | x, k)``
(:class:`~mcvae_framework.model.pose_head.PoseEncoding`). The components are enumerated:

* reconstruction: ``sum_k q(k|x) E_q(tau|x,k)[ -log p(x | element(tau, k) . D(z)) ]``, one
  decoded canonical image moved by ``K`` elements (one reparameterised ``tau`` each);
* pose KL: ``KL(q(k|x) || p(k)) + sum_k q(k|x) KL(q(tau|x,k) || p(tau))``, the second part
  estimated as ``-entropy - log_prior(tau)`` on the same samples;

both exact in ``k`` and differentiable in the logits. A connected group (``K = 1``) keeps
the terms it always had.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_elements(group, n: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``n`` elements drawn from the group's pose distribution (a component too, for a
    group with a discrete part), on ``like``'s device and dtype: the random moves of the
    invariance terms and of the moved copies. The draws are made on the generator's device
    in the default dtype, then moved, so a connected group draws exactly what ``sample`` did."""
    tau = group.sample(n, generator=generator).to(device=like.device, dtype=like.dtype)
    component = group.sample_component(n, generator)
    return group.element(tau, component.to(like.device) if int(getattr(group, "n_components", 1)) > 1 else None)


def log_component_posterior(enc) -> torch.Tensor:
    """``(N, K)`` ``log q(k | x)``."""
    return torch.log_softmax(enc.pose.logits, dim=-1)


def enumerated_pose_terms(model, x: torch.Tensor, enc, canonical: torch.Tensor, nll, generator=None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reconstruction (N,), pose_kl (N,))`` with every component enumerated (see the
    module docstring).

    :param nll: ``(prediction, target) -> (N,)`` negative log-likelihood per image.
    """
    group, per_component = model.group, enc.pose.per_component
    n, k = per_component.mean.shape[:2]
    tau = per_component.sample(generator)  # (N, K, dim)
    components = torch.arange(k, device=x.device).repeat(n)
    moved = group.act(canonical.repeat_interleave(k, dim=0), model.pose_element(tau.flatten(0, 1), components))
    nll_k = nll(moved, x.repeat_interleave(k, dim=0)).view(n, k)
    log_q = log_component_posterior(enc)
    q = log_q.exp()
    log_p = group.log_component_prior(dtype=log_q.dtype, device=log_q.device)
    tau_kl = (-per_component.entropy() - group.log_prior(tau.flatten(0, 1)).view(n, k))
    pose_kl = (q * (log_q - log_p)).sum(-1) + (q * tau_kl).sum(-1)
    return (q * nll_k).sum(-1), pose_kl


def every_component_consistency(model, enc, enc_copies, h: torch.Tensor, n_augment: int) -> torch.Tensor:
    """``(N * n_augment,)`` the pose consistency of every component's ``tau``, not only the
    most probable one's: under hypothesis ``k`` for ``x``, the copy ``h . x`` lies in the
    component ``k'`` of ``h r_k``, and ``element(tau_k(x), k)`` should equal
    ``h^-1 element(tau_k'(h . x), k')``; the squared ``tau`` of the residual, summed over
    ``k``. So every component's pose head learns to follow the moves, whichever component
    ``q(k|x)`` currently prefers (a head the reconstruction seldom weights would otherwise
    stay untrained, and its component never win)."""
    group = model.group
    own, copies = enc.pose.per_component.mean, enc_copies.pose.per_component.mean
    m, k, dim = copies.shape
    representatives = group.component_elements(dtype=own.dtype, device=own.device)
    hypotheses = torch.arange(k, device=own.device).repeat(m)
    moved = group.component_of(group.compose(h.repeat_interleave(k, dim=0), representatives[hypotheses]))
    copy_tau = copies.gather(1, moved.view(m, k, 1).expand(m, k, dim)).reshape(m * k, dim)
    implied = group.compose(group.inverse(h).repeat_interleave(k, dim=0), model.pose_element(copy_tau, moved))
    mine = model.pose_element(own.repeat_interleave(n_augment, dim=0).reshape(m * k, dim), hypotheses)
    _, residual = group.split_element(group.compose(group.inverse(mine), implied))
    return residual.pow(2).sum(-1).view(m, k).sum(-1)


def component_consistency(enc, implied: torch.Tensor, n_augment: int) -> torch.Tensor:
    """``(N * n_augment,)`` cross-entropy between ``q(k | x)`` and the component each moved
    copy of ``x`` implies for ``x`` (``component_of(h^-1 g(h . x))``)."""
    log_q = log_component_posterior(enc).repeat_interleave(n_augment, dim=0)
    return F.nll_loss(log_q, implied, reduction="none")


def nearest_orthogonal(m: torch.Tensor, special: bool) -> torch.Tensor:
    """``(C, d, d)`` -> the nearest orthogonal matrices (polar factor by SVD); with
    ``special`` those of determinant +1 (the last singular direction flipped where needed)."""
    u, _, vh = torch.linalg.svd(m)
    if special:
        sign = torch.sign(torch.linalg.det(u @ vh))
        u = torch.cat([u[..., :-1], u[..., -1:] * sign.view(-1, 1, 1)], dim=-1)
    return u @ vh


def orthogonal_guidance(model, enc, targets: torch.Tensor, clusters: torch.Tensor, weight: torch.Tensor,
                        n_clusters: int, component_weight: float = 1.0) -> torch.Tensor:
    """Pose guidance by synchronised orthogonal matrices ``T`` (the invariant graph's, up to
    one orthogonal offset per graph cluster).

    The model's pose of image ``x`` has orthogonal part ``M(x)``; the offset of its cluster
    ``c``, ``O_c``, is the orthogonal matrix nearest ``sum_x w(x) T(x)^T M(x)`` over the
    batch (held fixed: the term pulls every pose towards its cluster's consensus frame). For a
    group with a discrete part the sum runs over the pairs whose ``T(x)^T M(x)`` lies in the
    identity component, so ``O_c`` does too: each cluster keeps the graph's discrete frame
    (which reflection is "unmirrored" is a free choice per cluster, and the evaluation allows
    one flip per cluster). Chosen per batch from the model's own reflections, as before, the
    flip of ``O_c`` rested on the few images of a cluster in a batch (about six of 64) while
    the model's reflections were still near chance, and so changed from batch to batch: the
    cross-entropy below then taught each image both reflections in turn and the model never
    learned them (development digits, other MNIST images mirrored and turned, seed 0:
    reflection 0.62, its graph's 0.90; with the graph's frame 0.87). The
    term is ``sum_x w(x) |M'(x) - T(x) O_c|^2 / 4 / sum_x w(x)`` -- ``1 - cos`` of the angle
    between them for a rotation of the plane or of space -- where ``M'(x)`` is the pose in
    the component ``T(x) O_c`` lies in; for a group with a discrete part the weighted
    cross-entropy of ``q(k|x)`` with that component is added (a mirror image is taught to
    be one, in its cluster's graph frame: without it the reflection accuracy of mirrored
    digits fell from 0.85 to 0.62), times ``component_weight`` (``loss.pose_guide_component_weight``).
    Before each cluster kept the graph's frame, full weight cost the clustering 3 points (mirrored
    digits, seed 0: 0.847 at 1 against 0.875 at 0.1); in the graph's frame it costs none, and
    the pose head then keeps the graph's reflection where the ELBO cannot tell (a nearly
    symmetric canonical "9"): 98-99% of the rightly clustered mirror-asymmetric digits at 1,
    87-95% at 0.1 (development digits, three seeds).
    """
    group = model.group
    discrete = int(getattr(group, "n_components", 1)) > 1
    dtype = enc.tau.mean.dtype
    own = group.orthogonal_part(model.pose_element(enc.tau.mean, enc.component)).to(dtype)
    targets = targets.to(dtype)
    with torch.no_grad():
        d = targets.shape[-1]
        sums = torch.zeros(n_clusters, d, d, dtype=dtype, device=targets.device)
        relative = targets.transpose(1, 2) @ own
        pairs = weight.to(dtype)
        if discrete:  # the offset stays in the identity component: only pairs that agree on it count
            pairs = pairs * (group.component_of(group.from_orthogonal(relative)) == 0).to(dtype)
        sums.index_add_(0, clusters, pairs.view(-1, 1, 1) * relative)
        aim = targets @ nearest_orthogonal(sums, special=True)[clusters]
        wanted = group.component_of(group.from_orthogonal(aim)) if discrete else None
    total = weight.sum().clamp_min(1.0)
    term = 0.0
    if discrete:
        tau = enc.pose.per_component.select(wanted).mean
        own = group.orthogonal_part(model.pose_element(tau, wanted)).to(dtype)
        cross_entropy = F.nll_loss(log_component_posterior(enc), wanted, reduction="none")
        term = component_weight * (weight * cross_entropy).sum() / total
    squared = (own - aim).pow(2).flatten(1).sum(-1) / 4
    return term + (weight * squared).sum() / total
