"""IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
Preferences"), Eq. 17, with (x|c) preferred over (x|c⁻)."""

from pydantic import Field

from alignkit import ComponentConfig, Objective, ObjectiveOutput, ObjectiveSpec, PairLogps, hookimpl


class IPOConfig(ComponentConfig):
    tau: float = Field(0.1, gt=0, description="τ, the regularisation strength")


class IPO(Objective):
    """L = mean (h − 1/(2τ))², h = r(x, c) − r(x, c⁻) on per-token mean log-probs (its spec asks for them)."""

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        h_B = logps.r_pos_B - logps.r_neg_B
        loss = ((h_B - 1 / (2 * self.config.tau)) ** 2).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), **logps.reward_metrics(1.0)})


@hookimpl
def alignkit_register_objectives():
    return [ObjectiveSpec("ipo", IPO, IPOConfig, "Identity Preference Optimisation (Azar et al. 2023)",
                          logp_reduction="mean")]
