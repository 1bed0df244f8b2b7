"""What a bench run leaves: a table on the terminal, ``results.json``, one grid per row and the
FID-against-IS plot of the guidance sweep beside the CCA λ sweep (the paper's Figure 4)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.table import Table

from alignkit.files import atomic_write


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_report(results: dict[str, Any], out: Path, console: Console) -> None:
    atomic_write(out / "results.json", lambda p: p.write_text(json.dumps(results, indent=2) + "\n"))
    grids = out / "grids"
    grids.mkdir(exist_ok=True)
    for row in results["rows"]:
        shutil.copyfile(row["grid"], grids / f"{row['name'].replace('+', '_plus_')}.png")
    plot_sweeps(results["sweeps"], out / "fid_vs_is.png", results["backbone"])
    console.print(table(results))
    if results["sweeps"].get("cca_test_time_lambda"):
        console.print(lambda_table(results))
    console.print(f"results: {out / 'results.json'}, grids: {grids}, plot: {out / 'fid_vs_is.png'}")


def lambda_table(results: dict[str, Any]) -> Table:
    """The paper's Table 5 analogue: one model per λ against one λ-conditioned model."""
    t = Table(title="CCA over λ: one model per λ (sep) vs one model for every λ (test-time λ, tt)",
              title_justify="left")
    for column in ("λ", "FID↓ sep", "IS↑ sep", "acc↑ sep", "FID↓ tt", "IS↑ tt", "acc↑ tt"):
        t.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    separate = {p["lambda"]: p for p in results["sweeps"]["cca_lambda"]}
    for point in results["sweeps"]["cca_test_time_lambda"]:
        other = separate.get(point["lambda"], {})
        t.add_row(f"{point['lambda']:g}", _fmt(other.get("fid")), _fmt(other.get("is")), _fmt(other.get("accuracy"), 3),
                  _fmt(point["fid"]), _fmt(point["is"]), _fmt(point["accuracy"], 3))
    return t


def table(results: dict[str, Any]) -> Table:
    inception = any("inception_fid" in r for r in results["rows"])
    t = Table(title=f"alignkit bench: {results['backbone']} on {results['data']} ({results['suite']}); s = guidance, "
                    "metrics on classifier features", title_justify="left")
    for column in ("model", "s", "FID↓", "IS↑", "prec↑", "recall↑", "acc↑", "img/s"):
        t.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    if inception:
        t.add_column("Inc.FID↓", justify="right", no_wrap=True)
    for row in results["rows"]:
        cells = [row["name"], f"{row['guidance']:g}", _fmt(row["fid"]), _fmt(row["is"]), _fmt(row["precision"], 3),
                 _fmt(row["recall"], 3), _fmt(row["accuracy"], 3), _fmt(row["images_per_s"], 1)]
        if inception:
            cells.append(_fmt(row.get("inception_fid")))
        t.add_row(*cells)
    return t


def plot_sweeps(sweeps: dict[str, list[dict[str, Any]]], path: Path, backbone: str,
                size: tuple[int, int] = (640, 480)) -> None:
    """FID (x, log scale) against IS (y): the base model's guidance sweep and the CCA λ sweep."""
    series = [("CFG sweep of the base model (labels: s)", sweeps.get("cfg", []), "guidance", (200, 60, 40)),
              ("CCA, one model per lambda, no guidance (labels: lambda)", sweeps.get("cca_lambda", []), "lambda",
               (40, 90, 200)),
              ("CCA, one model for every lambda (test-time lambda)", sweeps.get("cca_test_time_lambda", []), "lambda",
               (30, 150, 60))]
    points = [(p["fid"], p["is"]) for _, pts, _, _ in series for p in pts
              if p["fid"] is not None and p["fid"] > 0 and p["is"] is not None]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = 70, 80, size[0] - 20, size[1] - 60
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, 8), f"FID vs IS ({backbone}, classifier features)", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 60, size[1] - 25), "FID (log scale, lower is better)", fill=(0, 0, 0), font=font)
    draw.text((5, (top + bottom) // 2), "IS", fill=(0, 0, 0), font=font)
    if points:
        xs, ys = [math.log10(p[0]) for p in points], [p[1] for p in points]
        x0, x1 = _padded(min(xs), max(xs))
        y0, y1 = _padded(min(ys), max(ys))

        def at(fid: float, score: float) -> tuple[float, float]:
            return (left + (math.log10(fid) - x0) / (x1 - x0) * (right - left),
                    bottom - (score - y0) / (y1 - y0) * (bottom - top))

        for i in range(5):  # axis ticks
            fx, fy = 10 ** (x0 + i * (x1 - x0) / 4), y0 + i * (y1 - y0) / 4
            px, _ = at(fx, y0)
            _, py = at(10 ** x0, fy)
            draw.text((px - 12, bottom + 6), f"{fx:.3g}", fill=(80, 80, 80), font=font)
            draw.text((left - 40, py - 6), f"{fy:.2f}", fill=(80, 80, 80), font=font)
        for index, (label, pts, key, color) in enumerate(series):
            valid = [p for p in pts if p["fid"] is not None and p["fid"] > 0 and p["is"] is not None]
            coords = [at(p["fid"], p["is"]) for p in valid]
            if len(coords) > 1:
                draw.line(coords, fill=color, width=2)
            for p, (cx, cy) in zip(valid, coords):
                draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=color)
                draw.text((cx + 6, cy - 12), f"{p[key]:g}", fill=color, font=font)
            draw.text((left + 10, 28 + 16 * index), f"- {label}", fill=color, font=font)  # above the frame
    atomic_write(path, lambda p: image.save(p, format="PNG"))


def _padded(low: float, high: float) -> tuple[float, float]:
    span = high - low or max(abs(high), 1.0) * 0.1
    return low - 0.1 * span, high + 0.1 * span
