"""Built-in objectives: CCA, CCA+CFG, DPO, Unlearning, NCA, their successors GFT and DDO, and MLE for
pretraining.

Registered through the ``alignkit`` entry-point group exactly like a third-party plugin.
"""

from alignkit import ObjectiveSpec, hookimpl
from alignkit.interfaces import LogitsRequest

from alignkit_objectives.cca import CCA, CCAConfig
from alignkit_objectives.ddo import DDO, DDOConfig
from alignkit_objectives.dpo import DPO, DPOConfig
from alignkit_objectives.gft import GFT, GFTConfig
from alignkit_objectives.mle import MLE, MLEConfig
from alignkit_objectives.nca import NCA, NCAConfig
from alignkit_objectives.unlearn import Unlearn, UnlearnConfig

__all__ = ["CCA", "CCAConfig", "DDO", "DDOConfig", "DPO", "DPOConfig", "GFT", "GFTConfig", "MLE", "MLEConfig", "NCA",
           "NCAConfig", "Unlearn", "UnlearnConfig"]


@hookimpl
def alignkit_register_objectives():
    return [
        ObjectiveSpec("cca", CCA, CCAConfig, "Condition Contrastive Alignment (Chen et al. 2024, Eq. 12)"),
        ObjectiveSpec("cca_cfg", CCA, CCAConfig, "CCA that also trains the null class, so CFG still works",
                      trains_null=True, default_uncond_ratio=0.1),
        ObjectiveSpec("dpo", DPO, DPOConfig, "Direct Preference Optimization with the negative condition as loser"),
        ObjectiveSpec("unlearn", Unlearn, UnlearnConfig,
                      "Unlearning: likelihood up on c, down on c⁻, relative to the reference"),
        ObjectiveSpec("nca", NCA, NCAConfig, "Noise Contrastive Alignment (Chen et al. 2024, NCA pair loss)"),
        ObjectiveSpec("gft", GFT, GFTConfig, "Guidance-Free Training (Chen et al. 2025): CE under β·ℓ(x|c) + "
                      "(1−β)·sg(ℓ(x|∅)); samples like CFG s = 1/β − 1",
                      inputs="token_logits", trains_null=True, default_uncond_ratio=0.1,
                      logits={"cond": LogitsRequest("label"),
                              "uncond": LogitsRequest("null", grad=False, train_mode=False, lambda_=1.0)}),
        ObjectiveSpec("ddo", DDO, DDOConfig, "Direct Discriminative Optimization (Zheng et al. 2025): real images "
                      "against the reference's own samples, in self-play rounds",
                      inputs="generated_pairs", default_uncond_ratio=0.1),
        ObjectiveSpec("mle", MLE, MLEConfig, "pretraining: token cross-entropy with 10% label dropout (for CFG)",
                      needs_reference=False, needs_negatives=False, trains_null=True, default_uncond_ratio=0.1,
                      logp_reduction="mean"),
    ]
