"""One micro-batch: what the objective's spec asks for (``alignkit.interfaces.objective``), computed
through the backend, then the objective.

Negatives that the reference generates (``generated_pairs``) are drawn with a generator seeded from
(``sampler.seed``, step, micro-batch of the global batch), so a resumed run, or one on another number
of processes, draws exactly what the uninterrupted one drew, and nothing depends on the global random
streams that dropout uses. The reference is frozen
within a round; the trainer makes it the current policy at each round boundary.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from alignkit.interfaces import (Backend, Objective, ObjectiveOutput, ObjectiveSpec, PairLogps, Pairs, PairSampler,
                                 PolicyModel, TokenLogits)
from alignkit.interfaces.objective import POLICY_CONDITIONS
from alignkit.sample.tokens import seeded_generator


class StepRunner:
    """Runs micro-batches for one objective; ``generation_s`` accumulates the time spent generating."""

    def __init__(self, objective: Objective, spec: ObjectiveSpec, backend: Backend, sampler: PairSampler,
                 policy: PolicyModel, seed: int):
        self.objective, self.spec, self.backend, self.sampler = objective, spec, backend, sampler
        self.null_label, self.seed = policy.null_label, seed
        self.generation_s = 0.0
        if spec.inputs == "generated_pairs":
            config = objective.config
            self.guidance = config.guidance
            self.options = type(policy).sampling_options.model_validate(config.sampling).model_dump()

    def __call__(self, tokens_BL: Tensor, labels_B: Tensor, step: int, micro: int) -> ObjectiveOutput:
        pairs = self.sampler(labels_B)
        conditions = {k: v.to(tokens_BL.device) for k, v in
                      self.objective.sample_conditions(pairs, self.sampler.generator).items()}
        if self.spec.inputs == "token_logits":
            return self.objective(self._token_logits(tokens_BL, pairs, conditions))
        return self.objective(self._pair_logps(tokens_BL, pairs, conditions, step, micro))

    def _token_logits(self, tokens_BL: Tensor, pairs: Pairs, conditions: dict[str, Tensor]) -> TokenLogits:
        labels = {"label": pairs.labels_pos_B, "negative": pairs.labels_neg_B,
                  "null": torch.full_like(pairs.labels_pos_B, self.null_label)}
        drawn = {k: v for k, v in conditions.items() if k in POLICY_CONDITIONS}
        logits = {}
        for name, request in self.spec.logits.items():
            chosen = drawn if request.lambda_ is None else {k: torch.full_like(v, request.lambda_)
                                                            for k, v in drawn.items()}
            with torch.set_grad_enabled(request.grad):
                logits[name] = self.backend.policy_logits(tokens_BL, labels[request.condition],
                                                          train_mode=request.train_mode, **chosen)
        return TokenLogits(pairs, tokens_BL, logits, conditions)

    def _pair_logps(self, tokens_BL: Tensor, pairs: Pairs, conditions: dict[str, Tensor], step: int,
                    micro: int) -> PairLogps:
        spec, backend, B = self.spec, self.backend, tokens_BL.shape[0]
        if spec.inputs == "generated_pairs":  # x̃ ~ p_ref(·|c), scored under its own condition c
            pairs = Pairs(pairs.labels_pos_B, pairs.labels_pos_B, pairs.uncond_B)
            tokens_2BL = torch.cat([tokens_BL, self.generate(pairs.labels_pos_B, step, micro)])
        else:
            tokens_2BL = torch.cat([tokens_BL, tokens_BL]) if spec.needs_negatives else tokens_BL
        negatives = spec.uses_negatives
        labels_2B = torch.cat([pairs.labels_pos_B, pairs.labels_neg_B]) if negatives else pairs.labels_pos_B
        reduction = spec.logp_reduction
        # the reference is the pretrained model: it sees no conditioning of the objective's (test-time λ)
        ref_2B = backend.reference_logps(tokens_2BL, labels_2B, reduction) if spec.needs_reference else None
        policy_conditions = {k: torch.cat([v, v]) if negatives else v for k, v in conditions.items()
                             if k in POLICY_CONDITIONS}
        logp_2B = backend.policy_logps(tokens_2BL, labels_2B, reduction, **policy_conditions)
        return PairLogps(pairs, logp_2B[:B], logp_2B[B:] if negatives else None,
                         ref_2B[:B] if ref_2B is not None else None,
                         ref_2B[B:] if (ref_2B is not None and negatives) else None, conditions)

    def generate(self, labels_B: Tensor, step: int, micro: int) -> Tensor:
        """The reference's samples for ``labels_B`` at (step, micro-batch) of this process."""
        start = time.perf_counter()
        chunk = micro * self.backend.world_size + self.backend.rank  # as data_order numbers micro-batches
        generator = seeded_generator(self.seed, step, chunk, device=labels_B.device)
        with torch.no_grad():
            tokens_BL = self.backend.reference.generate(labels_B, guidance=self.guidance, generator=generator,
                                                        **self.options)
        self.generation_s += time.perf_counter() - start
        return tokens_BL.to(labels_B.device)
