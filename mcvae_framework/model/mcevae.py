"""The MCE-VAE: a pose latent on a Lie group and invariant latents under a mixture prior.

Assembled from registered components only (group, encoder, decoder, prior); the core
never names a concrete one. Data flow of :meth:`MCEVAE.forward`::

    x --encoder--> q(tau|x)                                  (pose head)
      (an encoder with forward_with_pose also hands the pose head an orientation)
    x --un-move by exp(tau)^-1 (if model.canonicalize)--> x_canon
      --encoder--> q(z_c|x), q(z_v|x)                        (invariant heads)
    (z_c, z_v) --decoder--> canonical image --act(exp(tau))--> reconstruction
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config.components import build


@dataclass
class Posterior:
    """A diagonal Gaussian ``q(. | x)`` given by its mean and log-variance, ``(N, d)`` each."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # The noise is drawn where the generator lives (the trainer's is on the CPU).
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        noise = noise.to(self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def entropy(self) -> torch.Tensor:
        """``(N,)`` differential entropy."""
        d = self.mean.shape[-1]
        return 0.5 * (self.logvar.sum(-1) + d * (1.0 + math.log(2 * math.pi)))

    def kl_standard_normal(self) -> torch.Tensor:
        """``(N,)`` closed-form ``KL(q || N(0, I))``."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)


@dataclass
class Encoding:
    """The three posteriors; ``tau`` is ``None`` without a group, ``z_style`` when its size is 0."""

    tau: Posterior | None
    z_cluster: Posterior
    z_style: Posterior | None


@dataclass
class MCEVAEOutput:
    reconstruction: torch.Tensor  # (N, C, H, W): the canonical image moved by the pose
    canonical: torch.Tensor  # (N, C, H, W): the decoded, pose-free image
    tau: torch.Tensor | None  # (N, group.dim) pose coordinates used
    pose: torch.Tensor | None  # (N, 3, 3) exp(tau)
    encoding: Encoding
    z_cluster: torch.Tensor
    z_style: torch.Tensor | None


def head_body(in_features: int, hidden: int) -> tuple[nn.Module, int]:
    """The optional hidden layer of a posterior head, and the width it leaves."""
    if not hidden:
        return nn.Sequential(), in_features
    return nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU()), hidden


class PosteriorHead(nn.Module):
    """Features -> (mean, log-variance) of a diagonal Gaussian; starts at unit variance."""

    def __init__(self, in_features: int, dim: int, hidden: int = 0):
        super().__init__()
        self.body, width = head_body(in_features, hidden)
        self.out = nn.Linear(width, 2 * dim)
        self.dim = dim
        with torch.no_grad():
            self.out.bias[dim:].zero_()

    def forward(self, features: torch.Tensor) -> Posterior:
        mean, logvar = self.out(self.body(features)).chunk(2, dim=-1)
        # Bounded log-variance keeps exp() finite early in training.
        return Posterior(mean, logvar.clamp(-12.0, 6.0))


class PoseHead(nn.Module):
    """Features -> ``q(tau | x)``, with each angle predicted as a ``(cos, sin)`` pair.

    A real-valued output cannot follow an angle all around the circle without a jump; the
    pair can, and ``atan2`` turns it into ``theta`` on the principal branch. The head
    starts at the identity for every input: zero weights, and ``(cos, sin) = (1, 0)``.
    """

    def __init__(self, in_features: int, group, hidden: int = 0, logvar_init: float = -6.0):
        super().__init__()
        self.dim = group.dim
        self.angles = list(group.angle_coordinates)
        self.body, width = head_body(in_features, hidden)
        # outputs: dim values (an angle's cos in its own column), one sin per angle, dim log-variances
        self.out = nn.Linear(width, 2 * self.dim + len(self.angles))
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()
            self.out.bias[self.angles] = 1.0
            self.out.bias[self.dim + len(self.angles):] = logvar_init

    def forward(self, features: torch.Tensor, orientation: torch.Tensor | None = None) -> Posterior:
        """``orientation``: an ``(N,)`` angle the encoder read (see
        :class:`~mcvae_framework.interfaces.PoseReadout`); the first angle is then that
        angle plus the head's own, which starts at 0."""
        raw = self.out(self.body(features))
        n_raw = self.dim + len(self.angles)
        mean, logvar = raw[:, : self.dim], raw[:, n_raw:]
        if self.angles:
            cos, sin = mean[:, self.angles], raw[:, self.dim:n_raw]
            if orientation is not None:
                # Turn the first (cos, sin) pair by the orientation: atan2 then wraps the sum.
                c, s = torch.cos(orientation), torch.sin(orientation)
                first = torch.stack([c * cos[:, 0] - s * sin[:, 0], s * cos[:, 0] + c * sin[:, 0]])
                cos = torch.cat([first[0, :, None], cos[:, 1:]], dim=1)
                sin = torch.cat([first[1, :, None], sin[:, 1:]], dim=1)
            theta = torch.atan2(sin, cos)
            mean = mean.index_copy(1, torch.tensor(self.angles, device=mean.device), theta)
        return Posterior(mean, logvar.clamp(-12.0, 6.0))


class MCEVAE(nn.Module):
    """Multi-Clustering Equivariant VAE assembled from components.

    :param group: a :class:`~mcvae_framework.interfaces.LieGroup`, or ``None`` (plain VAE).
    :param encoder: an :class:`~mcvae_framework.interfaces.Encoder`.
    :param decoder: a :class:`~mcvae_framework.interfaces.Decoder` over ``z_c ++ z_v``.
    :param prior: a :class:`~mcvae_framework.interfaces.MixturePrior` over ``z_c``.
    :param config: the experiment config it was built from (kept for saving).
    """

    def __init__(self, group, encoder, decoder, prior, *, z_cluster_dim: int, z_style_dim: int,
                 head_hidden: int = 0, canonicalize: bool = True, prealign: bool = False, config=None):
        super().__init__()
        self.group = group
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.config = config
        self.z_cluster_dim = z_cluster_dim
        self.z_style_dim = z_style_dim
        self.canonicalize = canonicalize and group is not None
        self.prealign = prealign and group is not None and not self.canonicalize
        # bfloat16 (or None: float32) for the encoder and decoder passes; set by
        # acceleration.configure_acceleration from training.precision, never saved.
        self.network_dtype: torch.dtype | None = None
        # loss.gaussian_std: auto: the noise level the trainer estimates from the training images,
        # kept with the weights so that evaluating the run uses the same value
        loss = getattr(config, "loss", None)
        estimated = loss is not None and loss.likelihood == "gaussian" and loss.gaussian_std == "auto"
        self.register_buffer("noise_std", torch.tensor(float("nan")) if estimated else None)
        features = encoder.feature_dim
        self.cluster_head = PosteriorHead(features, z_cluster_dim, head_hidden)
        self.style_head = PosteriorHead(features, z_style_dim, head_hidden) if z_style_dim else None
        # An encoder with a pose readout (interfaces.PoseReadout) gives the pose head more to read.
        self.reads_pose = group is not None and hasattr(encoder, "forward_with_pose")
        pose_features = features + (int(getattr(encoder, "pose_feature_dim", 0)) if self.reads_pose else 0)
        if group is not None:
            self.pose_head = PoseHead(pose_features, group, head_hidden)
        else:
            self.pose_head = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.encoder.image_shape)

    # ------------------------------------------------------------------ inference
    def encode(self, x: torch.Tensor) -> Encoding:
        """Posterior parameters of the three latents for images ``x``."""
        features, tau = self._read(x)
        features = self._invariant_features(x, features, tau)
        z_style = self.style_head(features) if self.style_head is not None else None
        return Encoding(tau=tau, z_cluster=self.cluster_head(features), z_style=z_style)

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder features the cluster and style heads read: those of ``x`` itself, of
        ``group.prealign(x)`` with ``model.prealign``, or of ``x`` moved back by its mean
        pose with ``model.canonicalize``."""
        if self.canonicalize:
            features, tau = self._read(x)
            return self._invariant_features(x, features, tau)
        return self._invariant_features(x, None, None)

    def _read(self, x: torch.Tensor) -> tuple[torch.Tensor, Posterior | None]:
        """One encoder pass over ``x``: its features and the pose posterior."""
        if self.reads_pose:
            features, pose_features, orientation = self._network(self.encoder.forward_with_pose, x)
            return features, self.pose_head(torch.cat([features, pose_features], dim=-1), orientation)
        features = self._network(self.encoder, x)
        return features, (self.pose_head(features) if self.pose_head is not None else None)

    def _invariant_features(self, x: torch.Tensor, features: torch.Tensor | None,
                            tau: Posterior | None) -> torch.Tensor:
        if self.canonicalize:
            # Read the content from the image moved back to its canonical pose: the
            # invariant heads then see (nearly) the same input for every pose of x.
            undo = self.group.inverse(self.group.exp(tau.mean))
            return self._network(self.encoder, self.group.act(x, undo))
        if self.prealign:
            # The group's data-driven normal form (e.g. centred on the centre of mass) takes the
            # shifts out before the invariant heads read the image; a group whose prealign
            # returns its input unchanged costs no second pass.
            aligned = self.group.prealign(x)
            if aligned is not x or features is None:
                return self._network(self.encoder, aligned)
        return features if features is not None else self._network(self.encoder, x)

    def _network(self, network, x: torch.Tensor):
        """``network(x)``, under autocast to ``network_dtype`` when one is set; floating
        outputs come back in float32, so that heads, group actions and losses never see bf16."""
        if self.network_dtype is None:
            return network(x)
        with torch.autocast(x.device.type, dtype=self.network_dtype):
            out = network(x)
        if isinstance(out, tuple):
            return tuple(o.float() if torch.is_tensor(o) and o.is_floating_point() else o for o in out)
        return out.float()

    def invariant_latent(self, z_cluster: torch.Tensor, z_style: torch.Tensor | None) -> torch.Tensor:
        return z_cluster if z_style is None else torch.cat([z_cluster, z_style], dim=-1)

    def decode(self, z_cluster: torch.Tensor, z_style: torch.Tensor | None = None) -> torch.Tensor:
        """The canonical (pose-free) image for invariant latents."""
        if z_style is None and self.z_style_dim:
            z_style = z_cluster.new_zeros(z_cluster.shape[0], self.z_style_dim)
        return self._network(self.decoder, self.invariant_latent(z_cluster, z_style))

    def move(self, images: torch.Tensor, tau: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images`` moved by ``exp(tau)`` (unchanged without a group)."""
        if self.group is None or tau is None:
            return images, None
        pose = self.group.exp(tau)
        return self.group.act(images, pose), pose

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> MCEVAEOutput:
        enc = self.encode(x)
        pick = (lambda p: p.sample(generator)) if sample else (lambda p: p.mean)
        z_cluster = pick(enc.z_cluster)
        z_style = pick(enc.z_style) if enc.z_style is not None else None
        tau = pick(enc.tau) if enc.tau is not None else None
        canonical = self.decode(z_cluster, z_style)
        reconstruction, pose = self.move(canonical, tau)
        return MCEVAEOutput(reconstruction, canonical, tau, pose, enc, z_cluster, z_style)

    @torch.no_grad()
    def cluster_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: the prior's responsibilities at the posterior mean of ``z_c``."""
        return self.prior.responsibilities(self.encode(x).z_cluster.mean)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the model says about images ``x``, from one pass with every latent at its
        posterior mean: ``cluster``, cluster ``probabilities`` (the prior's responsibilities
        at the mean of ``z_c``), ``z_cluster``, ``z_style`` (with a style latent), the pose
        ``tau`` (with a group), the ``canonical`` image and its ``reconstruction`` (the
        canonical image moved by the pose). The single path from images to predictions:
        evaluation, ``mcvae predict`` and the figures batch it
        (:func:`mcvae_framework.report.inference.predict_images`)."""
        out = self(x, sample=False)
        enc = out.encoding
        probabilities = self.prior.responsibilities(enc.z_cluster.mean)
        result = {
            "cluster": probabilities.argmax(-1),
            "probabilities": probabilities,
            "z_cluster": enc.z_cluster.mean,
            "canonical": out.canonical,
            "reconstruction": out.reconstruction,
        }
        if enc.tau is not None:
            result["tau"] = enc.tau.mean
        if enc.z_style is not None:
            result["z_style"] = enc.z_style.mean
        return result

    @torch.no_grad()
    def fit_prior(self, latents: torch.Tensor) -> None:
        """Warm-start the mixture prior from encoded ``z_c`` means ``(N, z_cluster_dim)``."""
        self.prior.init_from(latents)


def build_model(config, image_shape: tuple[int, int, int] | None = None) -> MCEVAE:
    """Assemble an :class:`MCEVAE` from an experiment config.

    :param config: a validated experiment config (see :func:`mcvae_framework.load_config`).
    :param image_shape: ``(C, H, W)`` of the data; read from the test split when omitted.
    """
    if image_shape is None:
        image_shape = tuple(build("data", config.data, split="test").image_shape)
    m = config.model
    group = build("group", config.group) if config.group is not None else None
    encoder = build("encoder", config.encoder, image_shape=image_shape)
    decoder = build("decoder", config.decoder, image_shape=image_shape, latent_dim=m.z_cluster_dim + m.z_style_dim)
    prior = build("prior", config.prior, dim=m.z_cluster_dim)
    return MCEVAE(group, encoder, decoder, prior, z_cluster_dim=m.z_cluster_dim, z_style_dim=m.z_style_dim,
                  head_hidden=m.head_hidden, canonicalize=m.canonicalize, prealign=m.prealign, config=config)
