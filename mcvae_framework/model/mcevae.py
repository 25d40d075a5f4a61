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

from dataclasses import dataclass

import torch
from torch import nn

from ..config.components import build
from ..errors import ConfigError
from ..hookspecs import DATA_KINDS, data_kind_of_shape
from .pose_head import PoseEncoding, PoseHead, Posterior, head_body  # noqa: F401  (Posterior: re-exported)


@dataclass
class Encoding:
    """The three posteriors; ``tau`` is ``None`` without a group, ``z_style`` when its size is 0.

    ``tau`` is the pose head's :class:`~mcvae_framework.model.pose_head.PoseEncoding`: for a
    group with a discrete part the posterior of the most probable component, with every
    component's and the component logits beside it.
    """

    tau: Posterior | None
    z_cluster: Posterior
    z_style: Posterior | None

    @property
    def pose(self) -> PoseEncoding | None:
        """The pose head's output (``tau``), ``None`` without a group."""
        return self.tau if isinstance(self.tau, PoseEncoding) else None

    @property
    def component(self) -> torch.Tensor | None:
        """``(N,)`` the most probable component of the pose, ``None`` for a connected group."""
        return self.pose.component if self.pose is not None else None


@dataclass
class MCEVAEOutput:
    reconstruction: torch.Tensor  # (N, C, H, W): the canonical image moved by the pose
    canonical: torch.Tensor  # (N, C, H, W): the decoded, pose-free image
    tau: torch.Tensor | None  # (N, group.dim) pose coordinates used
    pose: torch.Tensor | None  # (N, *group.element_shape): element(tau, component)
    encoding: Encoding
    z_cluster: torch.Tensor
    z_style: torch.Tensor | None


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


class MCEVAE(nn.Module):
    """Multi-Clustering Equivariant VAE assembled from components.

    :param group: a :class:`~mcvae_framework.interfaces.LieGroup`, or ``None`` (plain VAE).
    :param encoder: an :class:`~mcvae_framework.interfaces.Encoder`.
    :param decoder: a :class:`~mcvae_framework.interfaces.Decoder` over ``z_c ++ z_v``.
    :param prior: a :class:`~mcvae_framework.interfaces.MixturePrior` over ``z_c``.
    :param config: the experiment config it was built from (kept for saving).
    """

    def __init__(self, group, encoder, decoder, prior, *, z_cluster_dim: int, z_style_dim: int,
                 head_hidden: int = 0, canonicalize: bool = True, prealign: bool = False,
                 average_components: bool = True, config=None):
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
        self.average_components = (average_components and group is not None and not self.canonicalize
                                   and int(getattr(group, "n_components", 1)) > 1)
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
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.encoder.image_shape)

    def pose_element(self, tau: torch.Tensor, component: torch.Tensor | None = None) -> torch.Tensor:
        """The group element of coordinates ``tau`` in ``component`` (``exp(tau)`` for a
        connected group)."""
        return self.group.element(tau, component)

    # ------------------------------------------------------------------ inference
    def encode(self, x: torch.Tensor) -> Encoding:
        """Posterior parameters of the three latents for images ``x``."""
        features, pose = self._read(x)
        features = self._invariant_features(x, features, pose)
        z_style = self.style_head(features) if self.style_head is not None else None
        return Encoding(tau=pose, z_cluster=self.cluster_head(features), z_style=z_style)

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder features the cluster and style heads read: those of ``x`` itself, of
        ``group.prealign(x)`` with ``model.prealign``, or of ``x`` moved back by its mean
        pose with ``model.canonicalize``; with ``model.average_components`` (a group with a
        discrete part) averaged over ``x`` moved by each component's representative."""
        if self.canonicalize:
            features, tau = self._read(x)
            return self._invariant_features(x, features, tau)
        return self._invariant_features(x, None, None)

    def _read(self, x: torch.Tensor) -> tuple[torch.Tensor, PoseEncoding | None]:
        """One encoder pass over ``x``: its features and the pose posterior."""
        if self.reads_pose:
            features, pose_features, orientation = self._network(self.encoder.forward_with_pose, x)
            return features, self.pose_head(torch.cat([features, pose_features], dim=-1), orientation)
        features = self._network(self.encoder, x)
        return features, (self.pose_head(features) if self.pose_head is not None else None)

    def _invariant_features(self, x: torch.Tensor, features: torch.Tensor | None,
                            pose: PoseEncoding | None) -> torch.Tensor:
        if self.canonicalize:
            # Read the content from the image moved back to its canonical pose: the
            # invariant heads then see (nearly) the same input for every pose of x.
            undo = self.group.inverse(self.pose_element(pose.mean, pose.component))
            return self._network(self.encoder, self.group.act(x, undo))
        if self.prealign:
            # The group's data-driven normal form (e.g. centred on the centre of mass) takes the
            # shifts out before the invariant heads read the image; a group whose prealign
            # returns its input unchanged costs no second pass.
            aligned = self.group.prealign(x)
            if aligned is not x or features is None:
                features, x = self._network(self.encoder, aligned), aligned
        features = features if features is not None else self._network(self.encoder, x)
        if self.average_components:
            # the mean over the image moved by every component's representative (the image and
            # its mirror image): invariant to the discrete part when the representatives form a group
            representatives = self.group.component_elements(dtype=x.dtype, device=x.device)[1:]
            moved = [self._network(self.encoder, self.group.act(x, r[None])) for r in representatives]
            features = torch.stack([features, *moved]).mean(0)
        return features

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

    def move(self, images: torch.Tensor, tau: torch.Tensor | None,
             component: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images`` moved by ``element(tau, component)`` (unchanged without a group)."""
        if self.group is None or tau is None:
            return images, None
        pose = self.pose_element(tau, component)
        return self.group.act(images, pose), pose

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> MCEVAEOutput:
        """Encode, decode the canonical image, move it by the pose (of the most probable
        component, for a group with a discrete part)."""
        enc = self.encode(x)
        pick = (lambda p: p.sample(generator)) if sample else (lambda p: p.mean)
        z_cluster = pick(enc.z_cluster)
        z_style = pick(enc.z_style) if enc.z_style is not None else None
        tau = pick(enc.tau) if enc.tau is not None else None
        canonical = self.decode(z_cluster, z_style)
        reconstruction, pose = self.move(canonical, tau, enc.component)
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
        ``tau`` (with a group), for a group with a discrete part the most probable
        ``component`` and the ``component_probabilities``, the ``canonical`` image and its
        ``reconstruction`` (the canonical image moved by the pose). The single path from
        images to predictions:
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
        if enc.component is not None:
            result["component"] = enc.component
            result["component_probabilities"] = torch.softmax(enc.pose.logits, dim=-1)
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
    check_data_fits_group(group, image_shape, config.group)
    encoder = build("encoder", config.encoder, image_shape=image_shape)
    decoder = build("decoder", config.decoder, image_shape=image_shape, latent_dim=m.z_cluster_dim + m.z_style_dim)
    prior = build("prior", config.prior, dim=m.z_cluster_dim)
    return MCEVAE(group, encoder, decoder, prior, z_cluster_dim=m.z_cluster_dim, z_style_dim=m.z_style_dim,
                  head_hidden=m.head_hidden, canonicalize=m.canonicalize, prealign=m.prealign,
                  average_components=m.average_components, config=config)


def check_data_fits_group(group, image_shape, group_config=None) -> None:
    """Refuse data the group cannot move (2-D images for a volume group, or the reverse).

    :raises ConfigError: naming the group, the kind it moves and the data's shape.
    """
    if group is None:
        return
    wanted, actual = getattr(group, "data_kind", "image"), data_kind_of_shape(image_shape)
    if actual is not None and actual != wanted:
        tag = getattr(group_config, "type", None) or type(group).__name__
        raise ConfigError([("group.type", f"the group {tag!r} moves {DATA_KINDS.get(wanted, wanted)}, but the data "
                            f"holds {DATA_KINDS[actual]} of shape {tuple(image_shape)}; pick a group for "
                            f"{actual}s (see `mcvae plugins`) or data of {wanted}s")])
