"""What a bench run leaves: tables on the terminal (rows with their intervals, the selection, the
verdicts), ``results.json``, one sample grid per row and the FID-against-IS figure (``figure``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alignkit.files import write_json
from alignkit_bench.figure import plot_sweeps

COLUMNS = (("FID↓", "fid", 2, 1), ("KID×10³↓", "kid", 2, 1e3), ("IS↑", "is", 2, 1), ("prec↑", "precision", 3, 1),
           ("recall↑", "recall", 3, 1), ("acc↑", "accuracy", 3, 1))


def cell(row: dict[str, Any], key: str, digits: int, scale: float = 1.0) -> str:
    """``mean ± half-width`` of a row's metric (``–`` when missing)."""
    if row.get(key) is None:
        return "–"
    mean, interval = row[key] * scale, row.get(f"{key}_ci95")
    if not interval or len(row.get("seeds") or ()) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(interval[1] - interval[0]) / 2 * scale:.{digits}f}"


def write_report(results: dict[str, Any], out: Path, console: Console) -> None:
    write_json(out / "results.json", results)
    if not console.is_terminal:  # a log or a pipe gets whole tables
        console = Console(file=console.file, width=200)
    grids = out / "grids"
    grids.mkdir(exist_ok=True)
    for row in results["rows"]:
        shutil.copyfile(row["grid"], grids / f"{row['name'].replace('+', '_plus_')}.png")
    figures = plot_sweeps(results["sweeps"], out / "fid_vs_is", results["backbone"])
    console.print(table(results))
    console.print(selection_table(results))
    if results["sweeps"].get("cca_test_time_lambda"):
        console.print(lambda_table(results))
    console.print(findings_table(results))
    floor = results["floor"]
    console.print(f"real-vs-real floor ({results['splits']['floor']} vs {results['splits']['test']} test images): "
                  f"FID {floor['fid']:.2f}, KID×10³ {floor['kid'] * 1e3:.2f}. {results['settings']['intervals']}; "
                  f"{results['settings']['base_model']}.")
    console.print(f"results: {out / 'results.json'}, grids: {grids}, figure: {', '.join(map(str, figures))}")


def table(results: dict[str, Any]) -> Table:
    inception = any(r.get("inception_fid") is not None for r in results["rows"])
    seeds = results["settings"]["seeds"]
    t = Table(title=f"alignkit bench: {results['backbone']} on {results['data']} ({results['suite']}), test split, "
                    f"{seeds} seeds, mean ± 95% interval; metrics on classifier features", title_justify="left")
    for column in ("model", "setting", "s", *(c[0] for c in COLUMNS), "img/s"):
        t.add_column(column, justify="left" if column in ("model", "setting") else "right", no_wrap=True)
    if inception:
        t.add_column("Inc.FID↓ (seed 0)", justify="right", no_wrap=True)
    for row in results["rows"]:
        setting = "–" if row.get("setting") is None or row["knob"] == "s" else f"{row['knob']} {row['setting']:g}"
        if row.get("setting_lambda") is not None:
            setting = f"λ {row['setting_lambda']:g}"
        cells = [row["name"], setting, f"{row['guidance']:g}", *(cell(row, key, d, k) for _, key, d, k in COLUMNS),
                 f"{row['images_per_s']:.0f}"]
        if inception:
            cells.append("–" if row.get("inception_fid") is None else f"{row['inception_fid']:.1f}")
        t.add_row(*cells)
    return t


def selection_table(results: dict[str, Any]) -> Table:
    t = Table(title="selection on the validation split (validation FID of each candidate; chosen in bold; "
                    "edge: the chosen value ends the grid, so a better one may lie beyond it)", title_justify="left")
    t.add_column("row", no_wrap=True)
    t.add_column("knob", no_wrap=True)
    t.add_column("candidates: validation FID", overflow="fold")
    for entry in results["selection"]:
        text = ", ".join((f"[bold]{c['value']:g}: {c['validation_fid']:.2f}[/]" if c["value"] == entry["chosen"]
                          else f"{c['value']:g}: {c['validation_fid']:.2f}") for c in entry["candidates"])
        t.add_row(entry["row"], entry["knob"], text + ("  (edge)" if entry.get("at_edge") else ""))
    return t


def lambda_table(results: dict[str, Any]) -> Table:
    """The paper's Table 5 analogue: one model per λ against one λ-conditioned model (test split)."""
    t = Table(title="CCA over λ: one model per λ (sep) vs one model for every λ (test-time λ, tt); intervals over "
                    "sampling seeds", title_justify="left")
    for column in ("λ", "FID↓ sep", "acc↑ sep", "FID↓ tt", "acc↑ tt"):
        t.add_column(column, justify="right", no_wrap=True)
    separate = {p["lambda"]: p for p in results["sweeps"]["cca_lambda"]}
    for point in results["sweeps"]["cca_test_time_lambda"]:
        other = separate.get(point["lambda"], {})
        t.add_row(f"{point['lambda']:g}", cell(other, "fid", 2), cell(other, "accuracy", 3), cell(point, "fid", 2),
                  cell(point, "accuracy", 3))
    return t


def findings_table(results: dict[str, Any]) -> Table:
    t = Table(title="the CCA paper's findings (unresolved: the 95% intervals overlap)", title_justify="left")
    for column in ("finding", "verdict", "numbers"):
        t.add_column(column, overflow="fold")
    colour = {"holds": "green", "fails": "red", "unresolved": "yellow"}
    for f in results["findings"]:
        t.add_row(f["name"], f"[{colour.get(f['verdict'], 'white')}]{f['verdict']}[/]", f["detail"])
    return t
