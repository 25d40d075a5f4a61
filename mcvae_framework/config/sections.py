"""The core's own config sections: ``model``, ``loss`` and ``training``.

Components (``data``, ``group``, ``encoder``, ``decoder``, ``prior``) are chosen by their
``type`` tag and validated by their plugin's config class; these three sections belong to
the core and are the same for every experiment.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(Section):
    """Sizes of the three latents' heads (the pose latent's size is the group's ``dim``)."""

    z_cluster_dim: int = Field(10, ge=1, description="size of the invariant cluster latent z_c")
    z_style_dim: int = Field(3, ge=0, description="size of the invariant style latent z_v (0 disables it)")
    head_hidden: int = Field(0, ge=0, description="hidden width of the posterior heads (0: linear heads)")
    canonicalize: bool = Field(
        True,
        description="read z_c and z_v from the image moved back by the predicted pose (a second "
        "encoder pass that builds invariance into the encoder); ignored without a group",
    )
    prealign: bool = Field(
        False,
        description="read z_c and z_v from the image in the group's cheap normal form (group.prealign: the "
        "built-in groups with shifts centre it on its centre of mass, those with scales normalise its "
        "size), so the encoder need not learn those parts of the invariance; a second encoder pass "
        "where the normal form differs from the image; ignored when canonicalize is on",
    )
    average_components: bool = Field(
        True,
        description="for a group with a discrete part (a reflection, a finite group): read z_c and z_v from the "
        "encoder's features averaged over the image moved by each component's representative (for a reflection "
        "group the image and its mirror image), so that they ignore the discrete part by construction when the representatives "
        "form a group; one more encoder pass per component; ignored when canonicalize is on",
    )


@dataclass(frozen=True)
class GuidedTerm:
    """A loss term that learns from the invariant graph, declared once here. The config
    validator refuses its weight without ``graph.enabled``, :func:`without_graph` zeroes its
    fields, the trainer fills the parts of the guide (:class:`~mcvae_framework.model.guide.Guide`)
    it reads, and the loss runs it when the guide holds them."""

    #: the term's name in the loss terms (and ``train_<name>`` in metrics.csv).
    name: str
    #: the ``loss`` field that switches it on (> 0).
    weight: str
    #: every ``loss`` field of the term, its weight first.
    fields: tuple[str, ...]
    #: the :class:`~mcvae_framework.model.guide.Guide` fields it reads.
    reads: tuple[str, ...]
    #: what of the graph it learns from (for messages).
    learns_from: str
    #: ``loss`` fields that only tune the term (null turns them off; 0 may be out of their range).
    tuning: tuple[str, ...] = ()


#: The loss terms that learn from the invariant graph.
GUIDED_TERMS = (
    GuidedTerm("self_label", "self_label_weight", ("self_label_weight", "self_label_copies"),
               ("labels", "confident"), "clusters", tuning=("self_label_target",)),
    GuidedTerm("neighbour", "neighbour_weight", ("neighbour_weight",), ("neighbours", "images"), "neighbours"),
    GuidedTerm("pose_guide", "pose_guide_weight", ("pose_guide_weight", "pose_guide_component_weight"),
               ("angles", "angle_clusters", "confident"),
               "synchronised angles"),
)


class LossConfig(Section):
    """Terms and weights of the modified ELBO."""

    mode: Literal["unsupervised", "supervised", "plain"] = Field(
        "unsupervised",
        description="unsupervised: invariance from random group actions; supervised: also "
        "reconstruct the dataset's canonical images; plain: no invariance terms",
    )
    likelihood: Literal["bernoulli", "gaussian"] = Field("bernoulli", description="p(x | ...) of the reconstruction term")
    gaussian_std: Union[float, Literal["auto"]] = Field(
        0.1, description="std of the Gaussian likelihood; auto: the noise level of the training images, estimated "
        "once before training (Immerkaer's estimator: real-valued images with additive noise, e.g. particles)")
    beta: float = Field(1.0, ge=0, description="weight of the style KL")
    cluster_weight: float = Field(1.0, ge=0, description="weight of the mixture KL of z_c")
    pose_weight: float = Field(1.0, ge=0, description="weight of the pose KL / prior term")
    n_augment: int = Field(8, ge=0, description="random group elements per image for the invariance terms")
    invariance_weight: float = Field(1.0, ge=0, description="weight of the invariance terms (invariant means and canonical decodings of moved copies)")
    copy_gradients: bool = Field(
        False,
        description="back-propagate through the moved copies too; false (default) encodes them "
        "without gradients, as fixed targets the original image's latents and pose are pulled to, "
        "which costs a forward pass per copy instead of a forward and a backward pass",
    )
    pose_consistency_weight: float = Field(
        1.0, ge=0, description="weight of the pose-consistency term |log(exp(tau(h.x))^-1 h exp(tau(x)))|^2 (unsupervised mode)"
    )
    supervised_weight: float = Field(1.0, ge=0, description="weight of the canonical reconstruction term (supervised mode)")
    warmup_epochs: int = Field(0, ge=0, description="epochs over which beta and the invariance weight ramp up from 0")
    pretrain_epochs: int = Field(0, ge=0, description="epochs of pretraining (autoencoding, then the prior is fitted "
                                 "to the encoded z_c) before the training.epochs ELBO epochs; not counted in "
                                 "training.epochs")
    self_label_weight: float = Field(
        0.0, ge=0,
        description="weight of the self-labelling term: cross-entropy between the prior's responsibilities "
        "q(c|x) and the invariant graph's cluster of x, on the graph's confident images (needs graph.enabled)",
    )
    self_label_copies: int = Field(
        0, ge=0,
        description="moved copies h.x of every confident image that the self-labelling term also asks to "
        "carry the label of x (encoded with gradients, h drawn from the group's pose distribution): the "
        "clusters are then learned at every pose, not only at each image's own",
    )
    self_label_target: Union[float, None] = Field(
        None, gt=0, le=1,
        description="the share of the invariant graph's unanimous images (those whose neighbours all share their "
        "cluster) the model must keep in their graph cluster: after every epoch's check (train/graph_check) that "
        "finds fewer, self_label_weight doubles for the rest of the run, at most 4 times its value (logged, and "
        "in report.json's model checks); null leaves the weight as it is. For data on which the model learns the "
        "graph's clusters slowly and ends below its graph (handwriting mirrored at random, configs/o2_mnist.yaml: "
        "91% of the training images by the last epoch)",
    )
    neighbour_weight: float = Field(
        0.0, ge=0,
        description="weight of the neighbour-consistency term -log sum_k q(k|x) q(k|x_n), x_n a random one of "
        "x's invariant-graph neighbours (SCAN-style; needs graph.enabled and a dataset held in memory)",
    )
    balance_weight: float = Field(
        0.0, ge=0,
        description="weight of the balance term KL(mean over the batch of q(c|x) || uniform), which keeps "
        "every component in use",
    )
    pose_guide_weight: float = Field(
        0.0, ge=0,
        description="weight of the pose-guidance term: the pose head's angle theta(x) follows the invariant "
        "graph's synchronised angle a(x) up to one offset per graph cluster, mean of 1 - cos(theta - a - o_c) "
        "over the confident images, o_c the batch's circular mean of theta - a in x's cluster (needs "
        "graph.enabled and a group with a rotation)",
    )
    pose_guide_component_weight: float = Field(
        1.0, ge=0,
        description="for a group with a discrete part (a reflection): the weight of the cross-entropy that "
        "teaches q(k|x) the graph's synchronised component (in the graph's own frame: each cluster's offset is a "
        "rotation), relative to pose_guide_weight. The ELBO barely tells a digit from its mirror image where the "
        "cluster's canonical shape is nearly symmetric (a '9' as a lollipop), so at 0.1 the model kept the graph's "
        "reflection for 87-95% of the images it clustered right against the graph's 99% (the development half of "
        "configs/o2_mnist.yaml, three seeds); 1 keeps 98-99% (reflection 0.79-0.87 -> 0.89-0.90, accuracy "
        "unchanged)",
    )
    reseed_below: float = Field(
        0.1, ge=0, lt=1,
        description="after every epoch of ELBO training, a component holding fewer than this share of its "
        "fair part (N/K) of the training images is re-seeded by splitting the largest cluster in two "
        "(logged, and counted in metrics.csv as reseeded_components); 0 disables",
    )

    @model_validator(mode="after")
    def _target_needs_the_term(self):
        if self.self_label_target is not None and self.self_label_weight <= 0:
            raise ValueError("self_label_target raises the self-labelling term's weight, but self_label_weight is "
                             f"{self.self_label_weight}: set self_label_weight > 0, or self_label_target: null")
        return self

    def guided_terms(self) -> tuple[GuidedTerm, ...]:
        """The graph-guided terms this section switches on (weight > 0)."""
        return tuple(term for term in GUIDED_TERMS if getattr(self, term.weight) > 0)

    @field_validator("gaussian_std")
    @classmethod
    def _std_or_auto(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("must be 'auto' or a positive number")
        return value


#: ``graph.pca_dim: auto``: features larger than this are projected onto this many PCA axes
AUTO_PCA_DIM = 128


class GraphConfig(Section):
    """The training-free invariant graph (:mod:`mcvae_framework.graph.invariant_graph`): built over the
    training images before training, its clusters warm-start the mixture prior and its confident
    images feed the self-labelling term."""

    enabled: bool = Field(False, description="build the invariant graph and let it guide training")
    neighbours: Union[int, Literal["auto"]] = Field(
        "auto", description="neighbours of every image in the graph; auto: round(ln N) for N images, at least 5 "
        "(a k-NN graph needs about log N neighbours to stay connected)")
    embedding_dim: int = Field(0, ge=0, description="size of the spectral embedding (0: twice the component count)")
    diffusion_time: float = Field(
        5.0, ge=0, description="eigenvector i of the graph is weighted by eigenvalue_i ** diffusion_time (a "
        "diffusion map: the cluster-level directions dominate, so embedding_dim matters little)")
    features: Literal["pixels", "wavelets", "auto"] = Field(
        "pixels", description="what two images are compared by: 'pixels' (blurred by blur_sigma) or 'wavelets' "
        "(oriented edge maps, the first layer of a scattering transform, each feature standardised; for "
        "textured or varied objects, where pixels of one class rarely match); auto: both are clustered and the "
        "one with the higher modularity is kept")
    wavelet_orientations: int = Field(8, ge=4, description="edge orientations of the 'wavelets' features")
    silhouettes: Union[bool, Literal["auto"]] = Field(
        "auto", description="also cluster the images' filled silhouettes (the foreground, gaps closed and holes "
        "filled: two outlines of one shape at different sizes share few pixels but most of their inside) and keep "
        "them where their modularity is higher; auto: offered unless features is 'wavelets', for single-channel "
        "images whose foreground stands at least 15 noise deviations above their background (never noisy "
        "particles); true: always (single-channel 2-D images only: volumes and colour images are refused); false: never")
    blur_sigma: Union[float, Literal["auto"]] = Field(
        "auto", description="Gaussian blur in pixels (after max_side's averaging) before images are compared "
        "(pixels features; the silhouettes take it too, 1 when auto); auto: 0 and 1 are both clustered and the one "
        "with the higher modularity is kept")
    search_size: Union[int, Literal["auto"]] = Field(
        "auto", description="relative moves tried between two images (the group's search_poses; a group with "
        "a reflection also tries each mirrored); auto: the group's own grid (the built-in planar groups: a rotation every 10 degrees, over "
        "the full circle when the angle range is the full circle, else over +-60 degrees or half the range; the "
        "built-in rotations of space: 100 rotations within the group's search_reach_deg)")
    pca_dim: Union[int, Literal["auto"]] = Field(
        "auto", description="compare images in a PCA space of this size (0: the features themselves); keeps "
        "large datasets in bounded memory and time and denoises; auto (features larger than 128): the PCA axes "
        "whose variance rises above the features' noise floor (the median eigenvalue, to the Marchenko-Pastur "
        "edge), at most 128, each weighted by its share of signal (1 - noise / variance), as steerable PCA "
        "denoises particles")
    max_side: int = Field(
        32, ge=8, description="images larger than this are averaged down by a whole factor (2x2 pixels into one, "
        "...) before they are compared: a speed setting (64-px particles: the same clusters at a sixth of the time)")
    confident_fraction: float = Field(
        0.7, gt=0, le=1, description="share of each graph cluster, nearest its centre, whose labels are trusted")
    kmeans_restarts: int = Field(20, ge=1, description="k-means restarts on the spectral embedding")
    balanced: bool = Field(
        False, description="hold the graph's clusters to equal sizes (an optimal-transport assignment after "
        "k-means); for data whose classes are about equally frequent, where k-means merges similar classes")
    split_merge: bool = Field(
        True, description="after the spectral clusters are found (and the features chosen), make the moves that "
        "lower their normalised cut at the same cluster count: one cluster cut in two along its own graph while two "
        "others, or a half and another, join (graph/spectral.split_and_merge; the moves are logged). k-means on a "
        "spectral embedding favours clusters of similar sizes: on a particle stack whose classes hold 35% down to "
        "5% of the particles it split the largest class and joined the two smallest; ignored with balanced")
    partition: Literal["kmeans", "merge"] = Field(
        "kmeans", description="how the spectral embedding is cut into the clusters: 'kmeans' (k-means into the "
        "cluster count, then the split_merge moves) or 'merge' (k-means into twice as many clusters, then joined two "
        "at a time, each join the one that leaves the lowest normalised cut; graph/spectral.merged_partition). merge "
        "suits noisy images whose classes are of very unequal sizes, where k-means halves the largest class and joins "
        "two small ones (a development particle stack at SNR 0.05 whose classes hold 35% down to 5%: 0.780 -> 0.986); "
        "it is not the default because where classes differ by little (views of one volume 6 degrees apart) it cut a "
        "held-out stack worse (0.877 -> 0.845), as it did scikit-learn's handwritten digit images (0.90 -> 0.87); "
        "ignored with balanced")
    repair_epochs: int = Field(
        3, ge=1, description="a model whose clusters never matched the graph's (checked after every epoch from the end "
        "of pretraining: agreement on the graph's unanimous images, empty components) gets its prior re-seeded apart "
        "and the graph's clusters taught directly for this many passes")
    neighbour_search: Literal["auto", "exact", "approximate"] = Field(
        "auto", description="how every image's neighbours are found: 'exact' compares every pair (work grows as "
        "N^2), 'approximate' asks an inverted-file index over the moved copies (faiss, or pynndescent; the "
        "'large' extra), 'auto' is exact up to approximate_above images and approximate above")
    approximate_above: int = Field(
        20_000, ge=1, description="with neighbour_search: auto, the number of images above which the search "
        "is approximate")
    relabel_every: int = Field(
        0, ge=0, description="self-labelling: every N epochs of ELBO training, the model's own clusters of the "
        "training images replace the labels the self-labelling term learns from, its most probable "
        "confident_fraction of each cluster trusted (0: keep the graph's labels)")
    refine_epochs: int = Field(
        0, ge=0, description="before the VAE trains, warm the encoder up for N passes over the graph's confident "
        "images: a linear read-out learns their labels (at random poses) while every image agrees with its graph "
        "neighbours; its labels of all training images then replace the graph's, every image trusted (0: off)")
    pose_warmup_steps: int = Field(
        0, ge=0, description="before the VAE trains, teach the encoder and the pose head the graph's synchronised "
        "poses alone (the pose_guide term on batches of its confident images, no decoder) for up to N steps, "
        "stopping once the term's mean over 50 steps is below 0.02; for rotations of volumes, which the pose "
        "head otherwise learns only after a plateau longer than a run (0: off)")
    refine_smoothing: int = Field(
        0, ge=0, description="rounds of label propagation over the graph applied to the refinement's read-out "
        "before its labels are read: q <- (p + mean of the neighbours' q) / 2")
    refine_lr: float = Field(3e-3, gt=0, description="peak learning rate of the refinement's one-cycle schedule")
    refine_neighbour_weight: float = Field(
        1.0, ge=0, description="weight of the refinement's neighbour-agreement term, -log sum_k p(k|x) p(k|x_n)")
    refine_balance_weight: float = Field(
        1.0, ge=0, description="weight of the refinement's balance term, KL(mean_x p(.|x) || uniform)")

    @field_validator("neighbours", "search_size", "pca_dim")
    @classmethod
    def _positive_or_auto(cls, value, info):
        least = {"neighbours": 2, "search_size": 1, "pca_dim": 0}[info.field_name]
        if value != "auto" and value < least:
            raise ValueError(f"must be 'auto' or an integer of at least {least}")
        return value

    @field_validator("blur_sigma")
    @classmethod
    def _blur_or_auto(cls, value):
        if value != "auto" and value < 0:
            raise ValueError("must be 'auto' or a number of pixels, at least 0")
        return value

    def resolved_neighbours(self, n_images: int) -> int:
        """``neighbours``, with ``auto`` read from the number of images."""
        return max(5, round(math.log(max(n_images, 2)))) if self.neighbours == "auto" else self.neighbours

    def resolved_pca_dim(self, feature_dim: int) -> int:
        """``pca_dim``, with ``auto`` read from the size of the compared features."""
        if self.pca_dim != "auto":
            return self.pca_dim
        return AUTO_PCA_DIM if feature_dim > AUTO_PCA_DIM else 0

    def candidates(self) -> list[dict]:
        """The feature settings the graph clusters and compares (one unless some are ``auto``)."""
        features = ("pixels", "wavelets") if self.features == "auto" else (self.features,)
        if self.silhouettes is True or (self.silhouettes == "auto" and self.features != "wavelets"):
            features += ("silhouettes",)
        out = []
        for name in features:
            blurs = (0.0, 1.0) if self.blur_sigma == "auto" and name == "pixels" else (
                1.0 if self.blur_sigma == "auto" else self.blur_sigma,)
            out += [{"features": name, "blur_sigma": float(blur)} for blur in blurs]
        return out


def without_graph(raw: dict) -> dict:
    """A copy of the raw config dict ``raw`` with the invariant graph switched off, and with it
    every loss term that learns from the graph (every field of :data:`GUIDED_TERMS` zeroed, its
    tuning fields null)."""
    config = copy.deepcopy(raw)
    config["graph"] = {**(config.get("graph") or {}), "enabled": False}
    config["loss"] = {**(config.get("loss") or {}),
                      **dict.fromkeys((name for term in GUIDED_TERMS for name in term.fields), 0),
                      **dict.fromkeys((name for term in GUIDED_TERMS for name in term.tuning), None)}
    return config


class TrainingConfig(Section):
    """Optimisation, devices, evaluation, checkpoints and where the run folder goes."""

    epochs: int = Field(20, ge=1, description="ELBO training epochs, run after loss.pretrain_epochs epochs of "
                        "pretraining: a run lasts pretrain_epochs + epochs epochs")
    batch_size: int = Field(128, ge=1, description="images per optimisation step (per process under torchrun)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay (decoupled for adamw)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimiser")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of the sgd optimiser")
    scheduler: Literal["none", "cosine", "step"] = Field(
        "none",
        description="learning-rate schedule, stepped once per epoch: cosine anneals to min_lr over "
        "all epochs; step multiplies by lr_gamma every lr_step_size epochs",
    )
    min_lr: float = Field(0.0, ge=0, description="final learning rate of the cosine schedule")
    lr_step_size: int = Field(10, ge=1, description="epochs between decays of the step schedule")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="decay factor of the step schedule")
    grad_clip: float = Field(0.0, ge=0, description="max gradient norm (0 disables clipping)")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of python, numpy, torch and the trainer's own generators")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="arithmetic of the encoder and decoder: bf16 runs them under bfloat16 autocast (fast "
        "on GPUs with bf16 units; slow on most CPUs); the poses, posteriors and loss terms stay in float32")
    compile: Literal["none", "default"] = Field(
        "none", description="default: torch.compile (Inductor) of the encoder and decoder; none: eager. The first "
        "steps of each batch shape pay the compilation; worth it on long GPU runs, rarely on a CPU. (The CUDA-graph "
        "modes, reduce-overhead and max-autotune, are not offered: they were not tested with this step, which "
        "runs the encoder several times)")
    num_workers: int = Field(0, ge=0, description="DataLoader workers (only for datasets not held in memory)")
    num_threads: int = Field(
        0, ge=0, description="CPU threads torch may use (0: torch's default); 1 avoids oversubscription on busy machines"
    )
    eval_every: int = Field(1, ge=0, description="evaluate on the test split every N epochs and after the last (0: never)")
    eval_batch_size: int = Field(512, ge=1, description="images per batch when evaluating and encoding")
    checkpoint_every: int = Field(
        0, ge=0, description="also keep checkpoints/epoch_NNNN.pt every N epochs (0: only last.pt, written every epoch)"
    )
    log_every: int = Field(10, ge=1, description="steps between refreshes of the progress bar's running loss terms")
    min_steps_per_epoch: int = Field(
        0, ge=0,
        description="a training epoch of a small dataset held in memory repeats its shuffled order until it has "
        "at least this many steps, so that an epoch count means enough optimisation on a folder of a few "
        "hundred images too (0: one pass)")
    batch_norm_images: int = Field(
        1024, ge=0,
        description="after every epoch, the batch-norm layers' running statistics are recomputed from one plain pass "
        "over this many training images (a fixed sample), so that evaluation, the graph checks and predictions "
        "normalise an image as training did; the running averages of the training passes mix the moved copies' "
        "statistics in, and on a folder of a few hundred shapes they put a model that agreed with its graph on "
        "100% of the images under a plain batch's statistics at 95% (0: keep those averages)")
    transductive: bool = Field(
        False, description="also train on the test split's images, without their labels (unsupervised modes "
        "only): the invariant graph, the self-labels and the ELBO cover every image, as a clustering of one "
        "fixed collection does; the test split is still what evaluation scores")
    progress: bool = Field(True, description="show a progress bar (only on a terminal, only on rank 0)")
    out_dir: str = Field("runs/experiment", description="run folder (config, metrics.csv, checkpoints, log)")
    tensorboard: bool = Field(
        False, description="also write TensorBoard event files to RUN/tensorboard: every loss term, images/s, the "
        "learning rate and a grid of reconstructions per epoch (needs `pip install tensorboard`)"
    )
    best_metric: str = Field(
        "test_loss", pattern=r"^(train|test)_[A-Za-z0-9_]+$",
        description="metrics.csv column (lower is better) that picks checkpoints/best.pt among the ELBO epochs; "
        "test_ columns exist on the epochs that evaluate (training.eval_every)"
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, d: str) -> str:
        if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ValueError(f"device {d!r} is not one of auto, cpu, cuda, cuda:N")
        return d


class ExperimentBase(Section):
    """Base of the experiment config class that :mod:`mcvae_framework.config.experiment` assembles
    once plugins are loaded; cross-section checks live here."""

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    graph: GraphConfig = GraphConfig()
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _group_needed_for_invariance(self):
        if getattr(self, "group", None) is None and self.loss.mode in ("unsupervised", "supervised"):
            raise ValueError(
                f"loss.mode {self.loss.mode!r} needs a group: set the `group` section "
                "(`{type: ...}` with a group type that `mcvae plugins` lists) or use loss.mode: plain"
            )
        return self

    @model_validator(mode="after")
    def _transductive_is_unsupervised(self):
        if self.training.transductive and self.loss.mode == "supervised":
            raise ValueError(
                "training.transductive trains on the test images without their labels, but loss.mode "
                "'supervised' learns from canonical images: set training.transductive: false, or loss.mode: "
                "unsupervised"
            )
        return self

    @model_validator(mode="after")
    def _graph_guided_terms_need_the_graph(self):
        terms = self.loss.guided_terms()
        if terms and not self.graph.enabled:
            weights = " and ".join(f"loss.{term.weight}" for term in terms)
            learned = " and ".join(term.learns_from for term in terms)
            raise ValueError(
                f"{weights} > 0 {'learns' if len(terms) == 1 else 'learn'} from the invariant graph's {learned}, "
                f"but graph.enabled is false: set graph.enabled: true, or {weights}: 0"
            )
        if self.graph.enabled and getattr(self, "group", None) is None:
            raise ValueError(
                "graph.enabled needs a group to search over: set the `group` section "
                "(`{type: ...}` with a group type that `mcvae plugins` lists) or graph.enabled: false"
            )
        return self
