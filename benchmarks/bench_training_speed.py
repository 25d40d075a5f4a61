"""Training throughput of one optimisation step, per loss design, on the quickstart model.

Every row trains the *same* model (configs/quickstart.yaml: conv encoder, gated MLP
decoder, SO(2), 10-component GMM) on the same 28x28 batches; only the unsupervised
step's design changes:

* ``plain VAE step`` -- one encoder and decoder pass, no invariance (the floor);
* ``ours: n_augment=M`` -- the M moved copies of every image are encoded in one batched
  pass *without* gradients (fixed targets: ``loss.copy_gradients: false``);
* ``ours: n_augment=M, copy_gradients`` -- the same pass, back-propagated;
* ``reference-style: 25 separate passes`` -- the published implementation's structure:
  25 moved copies per batch, each encoded and back-propagated in its own pass.

Images/s counts dataset images (a batch of 128 is 128 images, whatever the copies).

With ``--encoders conv,rotconv`` it times instead the quickstart's own step
(``n_augment=4``) with each encoder in its default settings, the rest of the model
unchanged (block ``encoder_speed``).

With ``--device cuda`` it times the quickstart's whole unsupervised training step as the
trainer runs it (ELBO, ``n_augment=4`` moved copies, the self-labelling pass, the per-step
finite check, fused Adam), the data resident on the device, for each batch size,
``training.precision`` and ``training.compile`` asked for (block ``gpu_training_speed``).

    python benchmarks/bench_training_speed.py [--steps 20] [--threads 2] [--out FILE] [--no-doc]
    python benchmarks/bench_training_speed.py --encoders conv,rotconv [--no-doc]
    python benchmarks/bench_training_speed.py --device cuda [--batch-sizes 128,1024,4096]
        [--precisions fp32,bf16] [--compiles none,default]

Each block's figures go to ``benchmarks/results/<block>.json``, and the block is rendered
from that file (``render``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import benchmark_parser, publish  # noqa: E402

from mcvae_framework import build, build_model, load_config, validate_config  # noqa: E402
from mcvae_framework.config.experiment import read_config_file  # noqa: E402
from mcvae_framework.runtime.acceleration import configure_acceleration  # noqa: E402
from mcvae_framework.model.guide import Guide  # noqa: E402
from mcvae_framework.model.losses import LossModule, elbo_terms, invariance_terms  # noqa: E402
from mcvae_framework.train.trainer import make_optimizer  # noqa: E402


REFERENCE = "reference-style: 25 separate passes"


def reference_style_step(model, batch, loss_config, generator, copies: int = 25):
    """The ELBO, then ``copies`` separate encoder passes of moved copies, each with its
    own backward pass (gradients accumulate), as the published implementation loops."""
    terms = elbo_terms(model, batch, loss_config.model_copy(update={"mode": "plain"}), generator=generator)
    terms["loss"].backward()
    x = batch["image"]
    enc = model.encode(x)
    canonical = model.decode(enc.z_cluster.mean, enc.z_style.mean if enc.z_style is not None else None)
    for _ in range(copies):
        inv = invariance_terms(model, x, enc, canonical, 1, generator, copy_gradients=True)
        (inv["invariance"] + inv["pose_consistency"]).backward(retain_graph=True)


def time_steps(model, batches, step, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for i in range(2 + steps):
        if i == 2:
            start = time.perf_counter()
        opt.zero_grad()
        step(batches[i % len(batches)])
        opt.step()
    return steps * len(batches[0]["image"]) / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = benchmark_parser(__file__, __doc__, "training_speed", threads=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--encoders", help="comma-separated encoder tags: time the quickstart step with each instead")
    parser.add_argument("--device", help="cuda (or cpu): time the trainer's whole step on this device instead")
    parser.add_argument("--batch-sizes", default="128,1024,4096", help="with --device cuda: batch sizes to time")
    parser.add_argument("--precisions", default="fp32,bf16", help="with --device cuda: training.precision values")
    parser.add_argument("--compiles", default="none,default",
                        help="with --device cuda: training.compile values (modes other than none: largest batch only)")
    args = parser.parse_args(argv)
    if args.device:
        args.block = "gpu_training_speed"
        return publish(device_speed(args), args, argv)
    if args.encoders:
        args.block = "encoder_speed"
        return publish(encoder_speed(args, _csv(args.encoders)), args, argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = load_config(ROOT / "configs" / "quickstart.yaml")
    data = build("data", config.data, split="train").as_tensors()
    n = args.batch_size
    batches = [{k: v[i * n:(i + 1) * n] for k, v in data.items()} for i in range(4)]
    generator = torch.Generator().manual_seed(0)

    def ours(m, copy_gradients=False):
        loss = config.loss.model_copy(update={"n_augment": m, "copy_gradients": copy_gradients})
        return lambda batch: elbo_terms(model, batch, loss, generator=generator)["loss"].backward()

    model = build_model(config, image_shape=tuple(data["image"].shape[1:]))
    n_params = sum(p.numel() for p in model.parameters())
    plain = config.loss.model_copy(update={"mode": "plain"})
    designs = {
        "plain VAE step (no invariance)": lambda b: elbo_terms(model, b, plain, generator=generator)["loss"].backward(),
        "ours: n_augment=1": ours(1),
        "ours: n_augment=2": ours(2),
        "ours: n_augment=4": ours(4),
        "ours: n_augment=2, copy_gradients": ours(2, True),
        REFERENCE: lambda b: reference_style_step(model, b, config.loss, generator),
    }
    rows = []
    for name, step in designs.items():
        steps = max(3, args.steps // 5) if name == REFERENCE else args.steps
        rows.append({"design": name, "images_per_second": time_steps(model, batches, step, steps)})
        print(f"{name:40s} {rows[-1]['images_per_second']:8.0f} images/s", flush=True)
    reference = next(row["images_per_second"] for row in rows if row["design"] == REFERENCE)
    for row in rows:
        row["vs_reference"] = row["images_per_second"] / reference
    return publish({"parameters": n_params, "batch_size": n, "rows": rows}, args, argv)


def render(result: dict) -> str:
    """The block of a result: ``training_speed``, ``encoder_speed`` or ``gpu_training_speed``."""
    return {"training_speed": render_training_speed, "encoder_speed": render_encoder_speed,
            "gpu_training_speed": render_device_speed}[result["block"]](result)


def render_training_speed(result: dict) -> str:
    lines = [
        f"`{result['command']}` on {result['machine']}.",
        "",
        f"The quickstart model ({result['parameters']:,} parameters), batches of {result['batch_size']} images of "
        "28x28, training steps (forward, backward, Adam).",
        "",
        "| step design | images/s | vs reference-style |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {r['design']} | {r['images_per_second']:,.0f} | {r['vs_reference']:.1f}x |" for r in result["rows"]]
    return "\n".join(lines)


def encoder_speed(args, tags: list[str]) -> dict:
    """The quickstart's step (its loss, ``n_augment=4``) with each encoder tag in turn."""
    torch.set_num_threads(args.threads)
    path = ROOT / "configs" / "quickstart.yaml"
    raw = read_config_file(path)
    config = load_config(path)
    data = build("data", config.data, split="train").as_tensors()
    n = args.batch_size
    batches = [{k: v[i * n:(i + 1) * n] for k, v in data.items()} for i in range(4)]
    rows = []
    for tag in tags:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        tagged = validate_config({**raw, "encoder": {"type": tag}}, source=str(path), base_dir=path.parent)
        model = build_model(tagged, image_shape=tuple(data["image"].shape[1:]))
        encoder_params = sum(p.numel() for p in model.encoder.parameters())
        rate = time_steps(model, batches,
                          lambda b, m=model: elbo_terms(m, b, tagged.loss, generator=generator)["loss"].backward(),
                          args.steps)
        rows.append({"encoder": tag, "encoder_parameters": encoder_params, "images_per_second": rate})
        print(f"{tag:10s} {encoder_params:>10,} encoder parameters {rate:8.0f} images/s", flush=True)
    for row in rows:
        row["vs_first"] = row["images_per_second"] / rows[0]["images_per_second"]
    return {"batch_size": n, "rows": rows}


def render_encoder_speed(result: dict) -> str:
    first = result["rows"][0]["encoder"]
    lines = [
        f"`{result['command']}` on {result['machine']}.",
        "",
        f"The quickstart's training step (n_augment=4), batches of {result['batch_size']} images of 28x28, with each "
        "encoder in its default settings; the rest of the model unchanged.",
        "",
        f"| encoder | encoder parameters | images/s | vs {first} |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| `{r['encoder']}` | {r['encoder_parameters']:,} | {r['images_per_second']:,.0f} | {r['vs_first']:.2f}x |"
              for r in result["rows"]]
    return "\n".join(lines)


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def device_step(module, optimizer, batch, generator) -> None:
    """One training step as EpochRunner runs it: loss terms, their finite check on the
    host (the one synchronisation per step), backward, optimiser step."""
    terms = module(batch, epoch=0, generator=generator)
    values = torch.stack([t.detach().reshape(()).float() for t in terms.values()]).cpu()
    if not bool(torch.isfinite(values).all()):
        raise RuntimeError(f"non-finite loss terms: {dict(zip(terms, values.tolist()))}")
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_device_step(args, raw, path, images, guide, batch_size: int, precision: str, compile_mode: str):
    """(images/s, warm-up seconds, peak GPU GiB) of the trainer's step in one configuration."""
    device = torch.device(args.device)
    n_train = len(images)
    training = {**raw["training"], "batch_size": batch_size, "precision": precision,
                "compile": compile_mode, "device": args.device}
    config = validate_config({**raw, "training": training}, source=str(path), base_dir=path.parent)
    torch.manual_seed(0)
    model = build_model(config, image_shape=tuple(images.shape[1:])).to(device)
    configure_acceleration(model, config.training)
    module = LossModule(model, config.loss)
    module.guide = guide
    optimizer = make_optimizer(model.parameters(), config.training, device)
    generator = torch.Generator(device=device).manual_seed(0)
    index = torch.randint(n_train, (8, batch_size), generator=generator, device=device)
    batches = [{"image": images[i], "index": i} for i in index]
    start = time.perf_counter()
    for batch in batches[:3]:  # warm-up: cuDNN autotuning, compilation of each shape
        device_step(module, optimizer, batch, generator)
    synchronize(device)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(args.steps):
        device_step(module, optimizer, batches[step % len(batches)], generator)
    synchronize(device)
    rate = args.steps * batch_size / (time.perf_counter() - start)
    peak = None  # GPU memory: none on a CPU
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return rate, warmup, peak


def device_speed(args) -> dict:
    """The quickstart's unsupervised step on ``args.device`` (block ``gpu_training_speed``)."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
    path = ROOT / "configs" / "quickstart.yaml"
    raw = read_config_file(path)
    base = load_config(path)
    images = build("data", base.data, split="train").as_tensors()["image"].to(device)
    n_train, n_components = len(images), base.prior.n_components
    # the self-labelling pass runs as in a guided run: every image carries a (here random) label
    guide = Guide(labels=torch.randint(n_components, (n_train,), device=device),
                  confident=torch.ones(n_train, dtype=torch.bool, device=device))
    rows = []
    sizes = [int(b) for b in _csv(args.batch_sizes)]
    # every batch size eager; the compiled modes (each costs a compilation) at the largest only
    runs = [(b, p, c) for b in sizes for p in _csv(args.precisions) for c in _csv(args.compiles)
            if c == "none" or b == max(sizes)]
    for batch_size, precision, compile_mode in runs:
        rate, warmup, peak = time_device_step(args, raw, path, images, guide, batch_size, precision, compile_mode)
        rows.append({"batch_size": batch_size, "precision": precision, "compile": compile_mode,
                     "images_per_second": rate, "warmup_seconds": warmup, "peak_gib": peak})
        print(f"batch {batch_size:6d} {precision:5s} compile={compile_mode:16s} {rate:10,.0f} images/s "
              f"(warm-up {warmup:.1f} s, peak {peak or float('nan'):.2f} GiB)", flush=True)
    return {"rows": rows}


def render_device_speed(result: dict) -> str:
    lines = [
        f"`{result['command']}` on {result['machine']}.",
        "",
        "The quickstart model's whole unsupervised training step as the trainer runs it: the ELBO with "
        "`n_augment=4` moved copies made on the device, the self-labelling pass, the per-step finite check "
        "on the host, fused Adam; the 4,000 training images resident on the device. Images/s counts dataset "
        "images; the warm-up (3 steps) includes cuDNN's autotuning and, with compile, the compilation.",
        "",
        "| batch | precision | compile | images/s | warm-up (s) | peak GPU memory (GiB) |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['batch_size']:,} | {r['precision']} | {r['compile']} | {r['images_per_second']:,.0f} | "
              f"{r['warmup_seconds']:.1f} | {'-' if r['peak_gib'] is None else format(r['peak_gib'], '.2f')} |"
              for r in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
