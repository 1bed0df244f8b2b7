"""``alignkit eval``: FID, sFID, IS, precision and recall of a sample batch against a reference batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def eval_command(
    samples: Annotated[Path, typer.Option("--samples", "-s", help="sample batch .npz (arr_0: uint8 NHWC images)")],
    ref: Annotated[Path, typer.Option("--ref", "-r", help="reference batch .npz (images and/or mu/sigma)")],
    features: Annotated[str, typer.Option("--features", "-f", help="feature extractor (see 'alignkit plugins')")]
    = "inception",
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="weights file for the extractor")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o",
                                                     help="extractor setting key=value (repeatable)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="images per forward pass")] = 64,
    device: Annotated[str, typer.Option(help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1' …")] = "auto",
    ref_stats: Annotated[bool, typer.Option("--ref-stats/--no-ref-stats",
                                            help="use mu/sigma stored in the reference")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the results to this JSON file")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars on stderr")] = True,
) -> None:
    """Evaluate samples with the ADM evaluator's formulas (FID, sFID, IS, precision, recall)."""
    from alignkit.cli import user_errors

    user_errors(_run)(samples, ref, features, weights, option or [], batch_size, device, ref_stats, json_path, progress)


def _run(samples: Path, ref: Path, features: str, weights: Path | None, options: list[str], batch_size: int,
         device: str, ref_stats: bool, json_path: Path | None, progress: bool) -> None:
    import torch
    from pydantic import ValidationError

    from alignkit.cli import console
    from alignkit.errors import AlignkitError
    from alignkit.evaluation.evaluate import evaluate
    from alignkit.plugins import get_plugins

    plugins = get_plugins()
    component = plugins.get("feature_extractor", features)
    settings: dict[str, Any] = dict(_parse_option(o) for o in options)
    if weights is not None:
        settings["weights"] = weights
    try:
        config = component.spec.config(**settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise AlignkitError(f"feature extractor '{features}': {problems}") from None
    extractor = component.spec.factory(config)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        extractor.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        raise AlignkitError(f"cannot use device '{device}': {exc}") from None
    results = evaluate(samples, ref, extractor, batch_size=batch_size, use_ref_stats=ref_stats, progress=progress)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    console.print(results_table(results))
    for note in results["notes"]:
        typer.echo(f"note: {note}", err=True)
    # After the results are safe on disk and on screen, so that a failing logger loses nothing.
    plugins.pm.hook.alignkit_after_eval(run=None, results=results)


def _parse_option(text: str) -> tuple[str, Any]:
    from alignkit.errors import AlignkitError

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise AlignkitError(f"--option expects key=value, got '{text}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def results_table(results: dict[str, Any]):
    """A rich table of the metrics (``—`` where a metric could not be computed)."""
    from rich.table import Table

    names = {"fid": "FID", "sfid": "sFID", "is": "IS", "precision": "Precision", "recall": "Recall",
             "accuracy": "Accuracy"}
    table = Table(title=f"{results['num_samples']} samples, {results['features']} features", title_justify="left",
                  caption=f"samples {results['samples']}\nreference {results['reference']}", caption_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in names.items():
        if key in results:
            value = results[key]
            table.add_row(label, "—" if value is None else f"{value:.4f}")
    return table
