"""training.precision and training.compile: what they change (the networks' arithmetic,
compiled networks) and what they must not (float32 heads and losses, parameter names,
checkpoints, the random streams)."""

from __future__ import annotations

import pytest
import torch
from test_training import fixed_batch, tiny_config

from mcvae_framework import ConfigError, validate_config
from mcvae_framework.runtime.acceleration import configure_acceleration, optimizer_options
from mcvae_framework.runtime.checkpoint import load_checkpoint
from mcvae_framework.model.losses import LossModule
from mcvae_framework.model.mcevae import build_model
from mcvae_framework.train.trainer import make_optimizer, train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def accelerated(tmp_path, **training):
    config = validate_config(tiny_config(tmp_path, **training))
    data, batch = fixed_batch(config)
    torch.manual_seed(0)
    model = build_model(config, image_shape=data.image_shape)
    configure_acceleration(model, config.training)
    return config, model, batch


def layer_dtypes(model) -> dict[str, torch.dtype]:
    """The dtype each Linear layer of the networks and heads computed in, on the next pass."""
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)  # returns None: the output is left as it is
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(record(name))
    return seen


def test_bf16_runs_the_networks_in_bfloat16_and_everything_else_in_float32(tmp_path):
    config, model, batch = accelerated(tmp_path, precision="bf16")
    seen = layer_dtypes(model)
    terms = LossModule(model, config.loss)(batch, generator=torch.Generator().manual_seed(7))
    networks = {n: d for n, d in seen.items() if n.startswith(("encoder.", "decoder."))}
    heads = {n: d for n, d in seen.items() if n.startswith(("cluster_head", "style_head", "pose_head"))}
    assert networks and set(networks.values()) == {torch.bfloat16}
    assert heads and set(heads.values()) == {torch.float32}
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())
    out = model(batch["image"], generator=torch.Generator().manual_seed(7))
    assert out.canonical.dtype == out.reconstruction.dtype == out.tau.dtype == torch.float32


def test_bf16_loss_is_close_to_the_float32_loss_and_its_gradients_reach_every_parameter(tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        config, model, batch = accelerated(tmp_path, precision=precision)  # same seed: same weights
        terms = LossModule(model, config.loss)(batch, generator=torch.Generator().manual_seed(7))
        terms["loss"].backward()
        losses[precision] = terms["loss"].item()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{precision}: no finite gradient reaches {missing}"
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_bf16_near_certain_pixels_keep_the_bernoulli_loss_finite(tmp_path):
    # a decoder whose sigmoid rounds to exactly 0 or 1 in bf16 must not give log(0)
    config, model, batch = accelerated(tmp_path, precision="bf16")
    with torch.no_grad():
        last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.fill_(40.0)
    terms = LossModule(model, config.loss)(batch, generator=torch.Generator().manual_seed(7))
    assert torch.isfinite(terms["loss"])


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with Dynamo's eager backend: the networks are traced as in a compiled
    run (graph capture, guards, one graph per batch shape) without the minutes that
    Inductor's code generation takes on a CPU. The GPU check runs the real backend."""
    real = torch.compile
    modes = []

    def compile_eager(fn, *, mode=None, **kwargs):
        modes.append(mode)
        return real(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eager)
    torch._dynamo.reset()
    yield modes
    torch._dynamo.reset()


def test_compile_keeps_parameter_names_losses_and_the_random_stream(tmp_path, eager_compile):
    results = {}
    for mode in ("none", "default"):
        config, model, batch = accelerated(tmp_path, compile=mode)
        generator = torch.Generator().manual_seed(7)
        terms = LossModule(model, config.loss)(batch, generator=generator)
        results[mode] = (list(model.state_dict()), terms["loss"].item(), generator.initial_seed(),
                         torch.rand(1, generator=generator).item())
    assert eager_compile == ["default", "default"]  # encoder and decoder, with the configured mode
    assert results["default"][0] == results["none"][0]  # no `_orig_mod.` prefixes in checkpoints
    assert results["default"][1] == pytest.approx(results["none"][1], rel=1e-5)
    assert results["default"][3] == results["none"][3]  # the loss drew as many random numbers


def test_a_compiled_bf16_run_trains_checkpoints_and_reloads(tmp_path, eager_compile):
    run_dir = train(validate_config(tiny_config(tmp_path / "run", epochs=1, precision="bf16", compile="default")))
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    eager = build_model(validate_config(tiny_config(tmp_path / "eager")), image_shape=(1, 8, 8))
    assert set(state["model"]) == set(eager.state_dict())
    eager.load_state_dict(state["model"])  # a compiled run's checkpoint loads into an eager model
    assert all(torch.isfinite(p).all() for p in eager.parameters())


def test_fused_adam_only_on_cuda(tmp_path):
    assert optimizer_options(torch.device("cpu")) == {}
    assert optimizer_options(torch.device("cuda", 0)) == {"fused": True}
    config = validate_config(tiny_config(tmp_path))
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(3))], config.training, torch.device("cpu"))
    assert not optimizer.defaults.get("fused")


@pytest.mark.parametrize("field, value, named", [("precision", "fp16", "precision"),
                                                  ("compile", "fast", "compile")])
def test_unknown_precision_or_compile_mode_is_refused_by_name(tmp_path, field, value, named):
    with pytest.raises(ConfigError, match=rf"training\.{named}"):
        validate_config(tiny_config(tmp_path, **{field: value}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision, compile_mode", [("fp32", "none"), ("bf16", "none"), ("bf16", "default")])
def test_cuda_training_step_is_finite_and_lowers_the_loss(tmp_path, precision, compile_mode):
    config = validate_config(tiny_config(tmp_path, precision=precision, compile=compile_mode, device="cuda"))
    data, batch = fixed_batch(config)
    batch = {k: v.cuda() for k, v in batch.items()}
    torch.manual_seed(0)
    model = build_model(config, image_shape=data.image_shape).cuda()
    configure_acceleration(model, config.training)
    module = LossModule(model, config.loss)
    optimizer = make_optimizer(model.parameters(), config.training, torch.device("cuda"))
    assert optimizer.defaults.get("fused")
    losses = []
    for _ in range(30):
        terms = module(batch, generator=torch.Generator(device="cuda").manual_seed(7))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
