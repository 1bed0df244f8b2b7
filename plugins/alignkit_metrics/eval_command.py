"""``alignkit eval``: FID, sFID, IS, precision and recall of a sample batch against a reference batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from alignkit.api import component_config
from alignkit.cli.common import console
from alignkit.errors import AlignkitError
from alignkit.files import write_failure, write_json
from alignkit.plugins import get_plugins
from alignkit.values import parse_pairs, resolve_device
from alignkit_metrics.evaluate import evaluate


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
    if json_path is not None and json_path.is_dir():
        raise AlignkitError(f"--json: {json_path} is a folder; give a file name, e.g. {json_path / 'results.json'}")
    settings = parse_pairs(option, "--option")
    if weights is not None:
        settings["weights"] = weights
    component, config = component_config("feature_extractor", features, settings)
    extractor = component.build(config)
    where = resolve_device(device)
    try:
        extractor.to(where)
    except (RuntimeError, AssertionError) as exc:
        raise AlignkitError(f"cannot use device '{where}': {exc}") from None
    results = evaluate(samples, ref, extractor, batch_size=batch_size, use_ref_stats=ref_stats, progress=progress)
    console.print(results_table(results))  # first: nothing after this can lose the numbers
    for note in results["notes"]:
        typer.echo(f"note: {note}", err=True)
    if json_path is not None:
        try:
            write_json(json_path, results)  # atomic
        except OSError as exc:
            failure = write_failure(exc, json_path)
            raise AlignkitError(f"{failure} (the results are printed above)") if failure else exc from None
    # After the results are safe on disk and on screen, so that a failing logger loses nothing.
    get_plugins().pm.hook.alignkit_after_eval(run=None, results=results)


def results_table(results: dict[str, Any]) -> Table:
    """A rich table of the metrics (``—`` where a metric could not be computed)."""
    names = {"fid": "FID", "sfid": "sFID", "kid": "KID", "is": "IS", "precision": "Precision", "recall": "Recall",
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
