"""Selection on validation data, then the report over seeds on the test reference (see ``suite``).

Rows: ``base`` (no knob), ``base+cfg`` (knob s, no training), every objective (its knob, fine-tuned),
and ``cca_cfg+cfg`` (knob s on the selected CCA+CFG model). Each row's candidates are scored once on
validation (fine-tuning seed 0, validation sampling seed) and the lowest validation FID is chosen;
the chosen setting is then fine-tuned at every reported seed (seed 0's model is reused) and sampled
with that seed's test sampling seed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from alignkit.engine.build import build_tokenizer
from alignkit_bench.findings import findings
from alignkit_bench.runner import Job, Pool, check
from alignkit_bench.scoring import METRICS, Scorer
from alignkit_bench.settings import KNOBS
from alignkit_bench.stats import interval

if TYPE_CHECKING:
    from alignkit_bench.suite import Bench, Model

FINETUNE_UNITS = 10
"""Progress units of one fine-tune (one epoch) against one sampled and scored set (1)."""


class Protocol:
    def __init__(self, bench: Bench, pool: Pool):
        self.bench, self.pool = bench, pool
        self.models: dict[tuple, Model] = {}
        self.selection: list[dict[str, Any]] = []
        self.chosen: dict[str, float] = {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=bench.console, transient=False)

    # ------------------------------------------------------------------------------ bookkeeping

    def stage(self, stage: str, detail: str = "") -> None:
        self.progress.update(self.task, description=f"[bold]{stage}[/] {detail}".rstrip())

    def timed(self, label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings = self.bench.timings
            timings[label] = timings.get(label, 0.0) + time.perf_counter() - start

    def trained_rows(self) -> list[str]:
        return list(self.bench.objectives)

    def candidates(self, row: str) -> tuple[float, ...]:
        return self.bench.settings.knob_candidates(row, self.bench.backbone)

    def total_units(self, base_cached: bool) -> int:
        b, rows, k = self.bench, self.trained_rows(), self.bench.settings.candidates
        extra_seeds = b.seeds - 1
        finetunes = len(rows) * (k + extra_seeds) + (2 if "cca" in rows else 0)
        scores = (k + 1) + len(rows) * k + ("cca_cfg" in rows) * k  # validation
        scores += (len(rows) + 2 + ("cca_cfg" in rows)) * b.seeds  # test rows
        scores += (len(KNOBS["base+cfg"].candidates[b.backbone]) - 1) * b.seeds  # the rest of the CFG sweep
        scores += ("cca" in rows) * (k + len(b.settings.lambda_test_time)) * b.seeds
        base = 0 if base_cached else int(FINETUNE_UNITS * b.settings.base_epochs)
        return FINETUNE_UNITS * finetunes + scores + base + 5

    # ------------------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        b = self.bench
        base_job, b.base = b.base_job()
        with self.progress:
            self.task = self.progress.add_task("", total=self.total_units(base_job is None))
            self.stage("base model + classifier", "pretraining" if base_job else "cached")
            where = b.base.weights.parent.parent
            b.console.print(f"base model: pretraining into {where}" if base_job else f"base model: cached at {where}")
            running = self.pool.submit(base_job) if base_job else None
            extractor = self.timed("classifier", b.classifier)
            b.inception_extractor = b.setup_inception()
            if running is not None:
                self.timed("base model", lambda: check(base_job, running))
                self.progress.advance(self.task, int(FINETUNE_UNITS * b.settings.base_epochs))
            b.tokenizer = build_tokenizer(b.base.recipe)
            self.scorer = Scorer(b, extractor)
            self.progress.advance(self.task, 5)
            self.select()
            rows = self.report()
            sweeps = self.sweeps(rows)
            self.stage("floor", "real vs real")
            floor = self.scorer.floor()
        return {"rows": rows, "sweeps": sweeps, "floor": floor, "selection": self.selection,
                "findings": [f.to_json() for f in findings(rows, sweeps)]}

    def finetune(self, jobs: list[tuple[tuple, str, Job]]) -> None:
        """Train ``(key, name, job)`` in the pool; the models are then ``self.models[key]``."""
        by_key = {job.key: (key, name) for key, name, job in jobs}

        def done(job: Job) -> None:
            key, name = by_key[job.key]
            self.models[key] = self.bench.model(name, job)
            self.progress.advance(self.task, FINETUNE_UNITS * (2 if name == "cca_lambda_conditioned" else 1))
            self.stage("fine-tuning", f"{name} done")

        self.stage("fine-tuning", f"{len(jobs)} models in {self.bench.settings.workers} workers")
        self.timed("fine-tuning", self.pool.run, [job for _, _, job in jobs], done)

    def job(self, row: str, value: float, seed: int) -> tuple[tuple, str, Job]:
        knob = KNOBS[row]
        setting = f"{knob.key.rsplit('.', 1)[-1].rstrip('_')}{value:g}"
        folder = self.bench.out / "runs" / row / setting / f"seed{seed}"
        key = (row, value, seed)
        return key, f"{row} {knob.name}={value:g} seed {seed}", self.bench.finetune_job(
            key, row, folder, seed, (f"{knob.key}={value}",))

    def score(self, model: Model, guidance: float, split: str, seed: int, tag: str,
              options: dict[str, Any] | None = None) -> dict[str, Any]:
        self.stage(f"scoring on {split}", f"{tag} seed {seed}")
        result = self.timed("sampling and scoring", self.scorer.score, model, guidance, split, seed, tag, options)
        self.progress.advance(self.task, 1)
        return result

    # ------------------------------------------------------------------------------ selection

    def select(self) -> None:
        b, rows = self.bench, self.trained_rows()
        jobs = [self.job(row, value, 0) for row in rows for value in self.candidates(row)]
        if "cca" in rows:
            folder = b.out / "runs" / "cca_lambda_conditioned" / "seed0"
            jobs.append((("cca_lambda_conditioned",), "cca_lambda_conditioned",
                         b.finetune_job(("cca_lambda_conditioned",), "cca_lambda", folder, 0)))
        self.finetune(jobs)
        self.choose("base+cfg", {s: self.score(b.base, s, "validation", 0, f"base_cfg{s:g}")
                                 for s in self.candidates("base+cfg")})
        for row in rows:
            self.choose(row, {value: self.score(self.models[(row, value, 0)], 0.0, "validation", 0,
                                                f"{row}_{value:g}") for value in self.candidates(row)})
        if "cca_cfg" in rows:
            model = self.models[("cca_cfg", self.chosen["cca_cfg"], 0)]
            self.choose("cca_cfg+cfg", {s: self.score(model, s, "validation", 0, f"cca_cfg_cfg{s:g}")
                                        for s in self.candidates("cca_cfg+cfg")})

    def choose(self, row: str, scored: dict[float, dict[str, Any]]) -> None:
        chosen = min(scored, key=lambda value: scored[value]["fid"])
        self.chosen[row] = chosen
        self.selection.append({"row": row, "knob": KNOBS[row].name, "key": KNOBS[row].key,
                               "candidates": [{"value": v, "validation_fid": r["fid"], "validation_kid": r["kid"]}
                                              for v, r in scored.items()], "chosen": chosen,
                               "criterion": "lowest validation FID (fine-tuning seed 0, validation sampling seed)",
                               # the best setting may lie beyond the grid: say so rather than hide it
                               "at_edge": len(scored) > 1 and chosen in (min(scored), max(scored))})

    # ------------------------------------------------------------------------------ report

    def report(self) -> list[dict[str, Any]]:
        b, rows = self.bench, self.trained_rows()
        self.finetune([self.job(row, self.chosen[row], seed) for row in rows for seed in range(1, b.seeds)])
        plan: list[tuple[str, str, float, Any]] = [("base", "mle", 0.0, lambda seed: b.base),
                                                   ("base+cfg", "mle", self.chosen["base+cfg"], lambda seed: b.base)]
        plan += [(row, row, 0.0, lambda seed, row=row: self.models[(row, self.chosen[row], seed)]) for row in rows]
        if "cca_cfg" in rows:
            plan.append(("cca_cfg+cfg", "cca_cfg", self.chosen["cca_cfg+cfg"],
                         lambda seed: self.models[("cca_cfg", self.chosen["cca_cfg"], seed)]))
        out = []
        for name, objective, guidance, model in plan:
            tag = name.replace("+", "_plus_")
            per_seed = [self.score(model(seed), guidance, "test", seed, tag) for seed in range(b.seeds)]
            out.append(self.aggregate(name, objective, guidance, per_seed))
        self.inception(out)
        return out

    def aggregate(self, name: str, objective: str, guidance: float, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        row: dict[str, Any] = {"name": name, "objective": objective, "guidance": guidance,
                               "knob": KNOBS[name].name if name in KNOBS else None,
                               "setting": self.chosen.get(name), "seeds": list(range(len(per_seed)))}
        for metric in METRICS:
            values = [r[metric] for r in per_seed]
            if any(v is None for v in values):
                row[metric], row[f"{metric}_ci95"] = None, None
                continue
            estimate = interval(values)
            row[metric], row[f"{metric}_ci95"] = estimate.mean, [estimate.lo, estimate.hi]
        if name == "cca_cfg+cfg":
            row["setting_lambda"] = self.chosen["cca_cfg"]
        row["images_per_s"] = sum(r["images_per_s"] or 0.0 for r in per_seed) / len(per_seed)
        row["grid"] = per_seed[0]["grid"]
        row["per_seed"] = [{k: r[k] for k in METRICS} for r in per_seed]
        return row

    def inception(self, rows: list[dict[str, Any]]) -> None:
        b = self.bench
        if b.inception_extractor is None:
            return
        for row in rows:
            if row["name"] in ("base", "base+cfg", "cca"):
                self.stage("Inception FID", row["name"])
                row["inception_fid"] = self.timed("Inception FID", self.scorer.inception_fid, row["grid"],
                                                  b.inception_extractor, b.inception_reference,
                                                  b.settings.inception_images)

    # ------------------------------------------------------------------------------ sweeps

    def sweeps(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """The FID–IS figure's curves on the test reference, over sampling seeds only (one fine-tune per
        point): the base model's guidance sweep, one CCA model per λ, and the λ-conditioned model."""
        b = self.bench
        by_name = {row["name"]: row for row in rows}
        cfg = [{"guidance": 0.0, **self.point(by_name["base"])}]
        for s in KNOBS["base+cfg"].candidates[b.backbone]:
            if s == self.chosen["base+cfg"]:
                cfg.append({"guidance": s, **self.point(by_name["base+cfg"])})
            else:
                cfg.append({"guidance": s, **self.sweep_point(b.base, s, f"sweep_base_cfg{s:g}")})
        out: dict[str, list[dict[str, Any]]] = {"cfg": cfg, "cca_lambda": [], "cca_test_time_lambda": []}
        if "cca" in self.trained_rows():
            out["cca_lambda"] = [{"lambda": lam, **self.sweep_point(self.models[("cca", lam, 0)], 0.0,
                                                                     f"sweep_cca_lambda{lam:g}")}
                                 for lam in self.candidates("cca")]
            conditioned = self.models[("cca_lambda_conditioned",)]
            out["cca_test_time_lambda"] = [{"lambda": lam, **self.sweep_point(
                conditioned, 0.0, f"sweep_cca_test_lambda{lam:g}", {"lambda_": lam})}
                for lam in b.settings.lambda_test_time]
        return out

    def sweep_point(self, model: Model, guidance: float, tag: str,
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
        per_seed = [self.score(model, guidance, "test", seed, tag, options) for seed in range(self.bench.seeds)]
        return self.point(self.aggregate(tag, "", guidance, per_seed))

    @staticmethod
    def point(row: dict[str, Any]) -> dict[str, Any]:
        keys = [k for m in METRICS for k in (m, f"{m}_ci95")]
        return {**{k: row[k] for k in keys}, "seeds": row["seeds"]}
