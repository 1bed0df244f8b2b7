"""How big a bench run is (the default suite and ``--quick``), and each row's knob with its candidates.

Every row gets the same number of candidate settings of its main knob (the budget), fixed here
before anything is measured; the bench picks one by validation FID. Candidates differ by backbone
where their scales differ (VAR's guidance ramps up over scales, so its useful s is larger).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OBJECTIVES = ("cca", "cca_cfg", "dpo", "unlearn", "nca", "gft", "ddo")
FEW_CLASSES = 100
"""Below this many classes the pair objectives draw negatives with the derangement sampler (see suite)."""


@dataclass(frozen=True)
class Knob:
    """A row's main setting: its name in tables, the recipe key it sets, and its candidates per backbone."""

    name: str
    key: str
    candidates: dict[str, tuple[float, ...]]


KNOBS = {
    "base+cfg": Knob("s", "guidance", {"llamagen": (0.25, 0.5, 1.0, 2.0), "var": (0.5, 1.0, 2.0, 3.0)}),
    "cca": Knob("λ", "objective.lambda_", {"llamagen": (0.1, 0.3, 1.0, 3.0), "var": (0.3, 1.0, 3.0, 10.0)}),
    "cca_cfg": Knob("λ", "objective.lambda_", {"llamagen": (0.1, 0.3, 1.0, 3.0), "var": (0.3, 1.0, 3.0, 10.0)}),
    "cca_cfg+cfg": Knob("s", "guidance", {"llamagen": (0.25, 0.5, 1.0, 2.0), "var": (0.5, 1.0, 2.0, 3.0)}),
    "dpo": Knob("β", "objective.beta", {"llamagen": (0.01, 0.1, 1.0, 10.0), "var": (0.01, 0.1, 1.0, 10.0)}),
    "unlearn": Knob("λ_u", "objective.lambda_", {"llamagen": (0.01, 0.03, 0.1, 0.3),
                                                  "var": (0.01, 0.03, 0.1, 0.3)}),
    "nca": Knob("β", "objective.beta", {"llamagen": (0.005, 0.02, 0.05, 0.2), "var": (0.005, 0.02, 0.05, 0.2)}),
    "gft": Knob("β", "objective.beta", {"llamagen": (0.3, 0.5, 0.7, 0.9), "var": (0.25, 0.4, 0.6, 0.8)}),
    "ddo": Knob("α", "objective.alpha", {"llamagen": (0.03, 0.1, 0.3, 1.0), "var": (0.03, 0.1, 0.3, 1.0)}),
}


@dataclass(frozen=True)
class BenchSettings:
    suite: str
    base_epochs: float
    finetune_steps: int | None  # None: the recipe's one epoch
    train_images: int | None  # None: the whole training split
    samples_per_class: int
    classifier_epochs: int
    batch_size: int | None = None  # None: the recipes' 64
    candidates: int = 4  # the first k of each knob's candidates (evenly spread when fewer)
    seeds: int = 3
    sample_batch: int = 100
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    workers: int = 2
    inception_images: int = 100
    inception_reference: int = 500
    lambda_test_time: tuple[float, ...] = field(default=(0.1, 0.3, 1.0, 3.0, 10.0))

    def knob_candidates(self, row: str, backbone: str) -> tuple[float, ...]:
        values = KNOBS[row].candidates[backbone]
        if self.candidates >= len(values):
            return values
        step = (len(values) - 1) / max(self.candidates - 1, 1)
        return tuple(values[round(i * step)] for i in range(self.candidates))


DEFAULT = BenchSettings(suite="mnist", base_epochs=12, finetune_steps=None, train_images=None, samples_per_class=50,
                        classifier_epochs=4)

QUICK = BenchSettings(suite="mnist-quick", base_epochs=3, finetune_steps=6, train_images=1000, samples_per_class=8,
                      classifier_epochs=1, batch_size=16, candidates=2, seeds=2, sample_batch=50, inception_images=0,
                      lambda_test_time=(0.3, 3.0))
