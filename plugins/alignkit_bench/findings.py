"""A verdict on each of the CCA paper's findings that the bench can test, from the reported rows.

Each verdict is ``holds``, ``fails`` or ``unresolved`` (the 95% intervals overlap; see
``stats.claim``), with the numbers behind it; a finding whose rows were not run is ``not run``.
"""

from __future__ import annotations

from typing import Any

from alignkit_bench.stats import Estimate, Verdict, claim, combine, fmt


def estimate(row: dict[str, Any], metric: str) -> Estimate:
    lo, hi = row[f"{metric}_ci95"]
    return Estimate(row[metric], lo, hi, len(row.get("seeds") or [None]))


def findings(rows: list[dict[str, Any]], sweeps: dict[str, list[dict[str, Any]]]) -> list[Verdict]:
    by_name = {row["name"]: row for row in rows}

    def metric(name: str, key: str) -> Estimate:
        return estimate(by_name[name], key)

    def needs(*names: str) -> bool:
        return all(n in by_name and by_name[n]["fid"] is not None for n in names)

    out = []
    name = "CCA without guidance reaches best-CFG FID with at least CFG's accuracy"
    if needs("cca", "base+cfg"):
        fid, acc = claim(metric("cca", "fid"), "<", metric("base+cfg", "fid")), \
            claim(metric("cca", "accuracy"), ">", metric("base+cfg", "accuracy"))
        out.append(Verdict(name, combine([fid, acc]),
                           f"FID {fmt(metric('cca', 'fid'))} (CCA) vs {fmt(metric('base+cfg', 'fid'))} (CFG): {fid}; "
                           f"accuracy {fmt(metric('cca', 'accuracy'), 3)} vs {fmt(metric('base+cfg', 'accuracy'), 3)}: "
                           f"{acc}"))
    else:
        out.append(Verdict(name, "not run", "needs the cca row"))
    name = "DPO is worse than CCA"
    if needs("dpo", "cca"):
        verdict = claim(metric("dpo", "fid"), ">", metric("cca", "fid"))
        out.append(Verdict(name, verdict, f"FID {fmt(metric('dpo', 'fid'))} (DPO) vs {fmt(metric('cca', 'fid'))} "
                           "(CCA)"))
    else:
        out.append(Verdict(name, "not run", "needs the dpo and cca rows"))
    name = "Unlearning lies between the base model and CCA"
    if needs("unlearn", "cca", "base"):
        parts = [claim(metric("cca", "fid"), "<", metric("unlearn", "fid")),
                 claim(metric("unlearn", "fid"), "<", metric("base", "fid"))]
        out.append(Verdict(name, combine(parts), f"FID {fmt(metric('cca', 'fid'))} (CCA) < "
                           f"{fmt(metric('unlearn', 'fid'))} (Unlearning): {parts[0]}; < {fmt(metric('base', 'fid'))} "
                           f"(base): {parts[1]}"))
    else:
        out.append(Verdict(name, "not run", "needs the unlearn and cca rows"))
    name = "CCA+CFG with guidance beats CFG"
    if needs("cca_cfg+cfg", "base+cfg"):
        verdict = claim(metric("cca_cfg+cfg", "fid"), "<", metric("base+cfg", "fid"))
        out.append(Verdict(name, verdict, f"FID {fmt(metric('cca_cfg+cfg', 'fid'))} (CCA+CFG, s "
                           f"{by_name['cca_cfg+cfg']['guidance']:g}) vs {fmt(metric('base+cfg', 'fid'))} (CFG, s "
                           f"{by_name['base+cfg']['guidance']:g})"))
    else:
        out.append(Verdict(name, "not run", "needs the cca_cfg row"))
    out.append(_spans(sweeps))
    return out


def _spans(sweeps: dict[str, list[dict[str, Any]]]) -> Verdict:
    """The λ sweep reaches the CFG sweep's best IS and its best FID (sampling-seed intervals)."""
    name = "The CCA λ sweep spans the CFG sweep's FID–IS range"
    lambdas, cfg = sweeps.get("cca_lambda") or [], [p for p in sweeps.get("cfg", []) if p["guidance"] > 0]
    if not lambdas or not cfg:
        return Verdict(name, "not run", "needs the cca row")

    def best(points: list[dict[str, Any]], key: str, highest: bool) -> dict[str, Any]:
        return (max if highest else min)(points, key=lambda p: p[key])

    parts, notes = [], []
    for key, highest, label in (("is", True, "highest IS"), ("fid", False, "lowest FID")):
        ours, theirs = best(lambdas, key, highest), best(cfg, key, highest)
        relation = ">" if highest else "<"
        verdict = claim(estimate(ours, key), relation, estimate(theirs, key))
        parts.append(verdict)
        notes.append(f"{label}: λ {ours['lambda']:g} {fmt(estimate(ours, key))} vs s {theirs['guidance']:g} "
                     f"{fmt(estimate(theirs, key))}: {verdict}")
    return Verdict(name, combine(parts), "; ".join(notes) + " (one fine-tune per point; intervals over "
                   "sampling seeds)")
