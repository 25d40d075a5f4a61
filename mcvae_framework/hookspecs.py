"""Hook specifications: one hook per component kind.

Each hook receives a ``register`` callback (the pattern of ``llm``): the core owns the
registry and a plugin only calls ``register(ConfigClass, factory)``. ``ConfigClass`` is
a pydantic model (subclass of :class:`mcvae_framework.ComponentConfig`) whose ``type``
field is a one-value ``Literal`` -- that value is the tag users write in a config file.
``factory(config, **context)`` builds the component from a validated config object.

A plugin module implements any subset of these hooks with ``@mcvae_framework.hookimpl``.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "mcvae_framework"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


#: the kinds of data a group can move (``LieGroup.data_kind``; a data section says which it
#: yields through ``ComponentConfig.data_kind``), and the batch layout of each.
DATA_KINDS = {"image": "2-D images (N, C, H, W)", "volume": "3-D volumes (N, C, D, H, W)"}


def data_kind_of_shape(shape) -> str | None:
    """``"image"`` for a ``(C, H, W)`` item shape, ``"volume"`` for ``(C, D, H, W)``, else ``None``."""
    return {3: "image", 4: "volume"}.get(len(tuple(shape)))


@hookspec
def mcvae_register_groups(register):
    """Register Lie groups (the pose latent's space), for the ``group`` config section.

    The factory is called with no context: ``factory(config)`` and must return a
    :class:`mcvae_framework.interfaces.LieGroup`.

    :param register: ``register(config_class, factory)``; call it once per group.
    """


@hookspec
def mcvae_register_encoders(register):
    """Register encoders (backbones), for the ``encoder`` config section.

    The factory is called as ``factory(config, image_shape=(C, H, W))`` and must return
    a :class:`mcvae_framework.interfaces.Encoder` (an ``nn.Module`` with ``feature_dim``).

    :param register: ``register(config_class, factory)``; call it once per encoder.
    """


@hookspec
def mcvae_register_decoders(register):
    """Register decoders, for the ``decoder`` config section.

    The factory is called as ``factory(config, image_shape=(C, H, W), latent_dim=d)``
    and must return a :class:`mcvae_framework.interfaces.Decoder` that maps ``(N, d)``
    latents to canonical images ``(N, C, H, W)`` in ``[0, 1]``.

    :param register: ``register(config_class, factory)``; call it once per decoder.
    """


@hookspec
def mcvae_register_priors(register):
    """Register mixture priors for the cluster latent, for the ``prior`` config section.

    The factory is called as ``factory(config, dim=d)`` and must return a
    :class:`mcvae_framework.interfaces.MixturePrior` over ``d``-dimensional latents.

    :param register: ``register(config_class, factory)``; call it once per prior.
    """


@hookspec
def mcvae_register_datasets(register):
    """Register datasets, for the ``data`` config section.

    The factory is called as ``factory(config, split="train" | "test")`` and must
    return a :class:`mcvae_framework.interfaces.ImageDataset`.

    :param register: ``register(config_class, factory)``; call it once per dataset.
    """


#: hook name -> config section (component kind) it fills.
HOOK_KINDS = {
    "mcvae_register_groups": "group",
    "mcvae_register_encoders": "encoder",
    "mcvae_register_decoders": "decoder",
    "mcvae_register_priors": "prior",
    "mcvae_register_datasets": "data",
}

#: the component kinds, in the order a config file lists them.
KINDS = ("data", "group", "encoder", "decoder", "prior")
