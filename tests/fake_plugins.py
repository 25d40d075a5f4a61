"""Small real plugins used by the core's tests, registered directly (no entry point)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mcvae_framework import ComponentConfig, hookimpl


class FakeGroupConfig(ComponentConfig):
    type: Literal["fake_group"] = "fake_group"
    angle_deg: tuple[float, float] = (-180.0, 180.0)


class FakeEncoderConfig(ComponentConfig):
    type: Literal["fake_encoder"] = "fake_encoder"
    width: int = Field(32, ge=1)


class FakeDecoderConfig(ComponentConfig):
    type: Literal["fake_decoder"] = "fake_decoder"


class FakePriorConfig(ComponentConfig):
    type: Literal["fake_prior"] = "fake_prior"
    n_components: int = Field(10, ge=1)


class OtherPriorConfig(ComponentConfig):
    type: Literal["other_prior"] = "other_prior"


class FakeDataConfig(ComponentConfig):
    type: Literal["fake_data"] = "fake_data"
    limit: int | None = Field(None, ge=1)


def _record(config, **context):
    return {"config": config, "context": context}


class AllKinds:
    """One plugin registering a component of every kind."""

    @hookimpl
    def mcvae_register_groups(self, register):
        register(FakeGroupConfig, _record)

    @hookimpl
    def mcvae_register_encoders(self, register):
        register(FakeEncoderConfig, _record)

    @hookimpl
    def mcvae_register_decoders(self, register):
        register(FakeDecoderConfig, _record)

    @hookimpl
    def mcvae_register_priors(self, register):
        register(FakePriorConfig, _record)
        register(OtherPriorConfig, _record)

    @hookimpl
    def mcvae_register_datasets(self, register):
        register(FakeDataConfig, _record)


class DuplicatePrior:
    """Claims a prior tag that AllKinds already registers."""

    @hookimpl
    def mcvae_register_priors(self, register):
        register(FakePriorConfig, _record)


class Misspelled:
    @hookimpl
    def mcvae_register_group(self, register):  # missing the final "s"
        pass


VALID = {
    "data": {"type": "fake_data"},
    "group": {"type": "fake_group"},
    "encoder": {"type": "fake_encoder"},
    "decoder": {"type": "fake_decoder"},
    "prior": {"type": "fake_prior", "n_components": 3},
}
