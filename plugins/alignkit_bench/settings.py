"""How big a bench run is: the default suite and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("cca", "cca_cfg", "dpo", "unlearn", "nca", "gft", "ddo")


@dataclass(frozen=True)
class BenchSettings:
    suite: str
    base_epochs: float
    finetune_steps: int | None  # None: the recipe's one epoch
    train_images: int | None  # None: the whole training split
    samples_per_class: int
    cfg_sweep: tuple[float, ...]
    lambda_sweep: tuple[float, ...]
    classifier_epochs: int
    sample_batch: int = 100
    seed: int = 0
    test_fraction: float = 0.1
    inception_images: int = 100
    inception_reference: int = 500


DEFAULT = BenchSettings(
    suite="mnist", base_epochs=12, finetune_steps=None, train_images=None, samples_per_class=100,
    cfg_sweep=(0.25, 0.5, 1.0, 2.0, 3.0), lambda_sweep=(0.1, 0.3, 1.0, 3.0, 10.0),
    classifier_epochs=4)

QUICK = BenchSettings(
    suite="mnist-quick", base_epochs=10, finetune_steps=6, train_images=1000, samples_per_class=10,
    cfg_sweep=(1.0, 3.0), lambda_sweep=(0.3, 3.0), classifier_epochs=1, sample_batch=50, inception_images=0)
