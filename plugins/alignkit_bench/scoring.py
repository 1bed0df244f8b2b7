"""Sampling a bench model class-balanced and measuring the samples against one split's real images.

Test samples use seeds 0, 1, … (one per reported seed); validation samples use seeds from
``VALIDATION_SEED`` on, so no image chosen on is ever reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alignkit.engine.build import build_policy
from alignkit.interfaces import PolicyModel
from alignkit_sampling.balanced import sample_class_balanced
from alignkit_metrics import Reference, SampleBatch, evaluate, read_samples

if TYPE_CHECKING:
    from alignkit_bench.suite import Bench, Model

VALIDATION_SEED = 1_000_000
METRICS = ("fid", "kid", "is", "precision", "recall", "accuracy")


class Scorer:
    """``score(model, guidance, split, seed)``: sample, then FID, KID, IS, precision, recall and accuracy
    on the classifier's features against ``split``'s real images."""

    def __init__(self, bench: Bench, extractor: Any):
        self.bench, self.extractor = bench, extractor
        self.references = {name: bench.reference(name) for name in ("validation", "test")}
        self.policies: dict[Path, PolicyModel] = {}

    def policy(self, model: Model) -> PolicyModel:
        if model.weights not in self.policies:
            self.policies[model.weights] = build_policy(model.recipe, checkpoint=model.weights,
                                                        tokenizer=self.bench.tokenizer).eval()
        return self.policies[model.weights]

    def score(self, model: Model, guidance: float, split: str, seed: int, tag: str,
              options: dict[str, Any] | None = None) -> dict[str, Any]:
        bench = self.bench
        folder = bench.out / "samples" / split / tag / f"seed{seed}"
        path = sample_class_balanced(self.policy(model), bench.tokenizer, range(len(bench.classes)),
                                     bench.settings.samples_per_class, out_dir=folder,
                                     batch_size=bench.settings.sample_batch,
                                     seed=seed + (VALIDATION_SEED if split == "validation" else 0), guidance=guidance,
                                     options=options, progress=False)
        samples = read_samples(path)
        metrics = evaluate(samples, self.references[split], self.extractor, progress=False)
        row = {key: metrics[key] for key in METRICS}
        row["images_per_s"] = json.loads((folder / "sampling.json").read_text())["images_per_second"]
        row["grid"] = str(folder / "grid.png")
        return row

    def floor(self) -> dict[str, float]:
        """FID and KID between the floor set and the test reference: what two real sets of this size give."""
        metrics = evaluate(SampleBatch(self.bench.rgb["floor"]), self.references["test"], self.extractor,
                           progress=False)
        return {"fid": metrics["fid"], "kid": metrics["kid"]}

    def inception_fid(self, grid: str, extractor: Any, reference: Reference, count: int) -> float:
        """Inception FID of ``count`` samples (every class) of the sample set whose grid is ``grid``."""
        samples = read_samples(Path(grid).parent / "samples.npz")
        pick = np.linspace(0, len(samples) - 1, min(count, len(samples))).astype(int)
        return evaluate(SampleBatch(np.ascontiguousarray(samples.images[pick])), reference, extractor,
                        progress=False)["fid"]
