"""What a bench run leaves: a table on the terminal, ``results.json``, one grid per row and the
FID-against-IS plot of the guidance sweep beside the CCA λ sweep (the paper's Figure 4)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from xml.sax.saxutils import escape

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
    console.print(f"results: {out / 'results.json'}, grids: {grids}, plot: {out / 'fid_vs_is.png'} (and .svg)")


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
    """FID (x, log scale) against IS (y): the base model's guidance sweep and the CCA λ sweeps, as ``path``
    (PNG) and an SVG beside it; drawn with matplotlib when it is installed (``pip install
    'alignkit[plot]'``), else with PIL (fewer ticks, no anti-aliasing)."""
    series = [("CFG sweep of the base model (labels: s)", sweeps.get("cfg", []), "guidance", (200, 60, 40)),
              ("CCA, one model per lambda, no guidance (labels: lambda)", sweeps.get("cca_lambda", []), "lambda",
               (40, 90, 200)),
              ("CCA, one model for every lambda (test-time lambda)", sweeps.get("cca_test_time_lambda", []), "lambda",
               (30, 150, 60))]
    series = [(label, [p for p in pts if p["fid"] is not None and p["fid"] > 0 and p["is"] is not None], key, color)
              for label, pts, key, color in series]
    title = f"FID vs IS ({backbone}, classifier features)"
    try:
        from matplotlib.figure import Figure
    except ImportError:
        canvas = _Canvas(size)
        _draw(canvas, series, title)
        atomic_write(path, lambda p: canvas.png().save(p, format="PNG"))
        atomic_write(path.with_suffix(".svg"), lambda p: p.write_text(canvas.svg()))
        return
    from matplotlib.ticker import LogLocator, ScalarFormatter

    figure = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for label, points, key, color in series:
        if points:
            rgb = tuple(c / 255 for c in color)
            axes.plot([p["fid"] for p in points], [p["is"] for p in points], "o-", color=rgb, label=label)
            for p in points:
                axes.annotate(f"{p[key]:g}", (p["fid"], p["is"]), textcoords="offset points", xytext=(5, 4),
                              color=rgb, fontsize=8)
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(ScalarFormatter() if axes.get_xlim()[1] < 3 * axes.get_xlim()[0] else "")
    axes.set(xlabel="FID (log scale, lower is better)", ylabel="IS (higher is better)", title=title)
    axes.grid(True, which="both", alpha=0.3)
    if any(points for _, points, _, _ in series):
        axes.legend(fontsize=8)
    for suffix in (".png", ".svg"):
        atomic_write(path.with_suffix(suffix), lambda p: figure.savefig(p, format=suffix[1:]))


class _Canvas:
    """Lines, dots and text, rendered with PIL (PNG) or as SVG: the plot without matplotlib."""

    def __init__(self, size: tuple[int, int]):
        self.size, self.ops = size, []

    def line(self, points: list[tuple[float, float]], color: tuple[int, int, int]) -> None:
        self.ops.append(("line", points, color))

    def dot(self, x: float, y: float, color: tuple[int, int, int]) -> None:
        self.ops.append(("dot", (x, y), color))

    def text(self, x: float, y: float, text: str, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.ops.append(("text", (x, y, text), color))

    def png(self) -> Image.Image:
        image = Image.new("RGB", self.size, "white")
        draw, font = ImageDraw.Draw(image), ImageFont.load_default()
        for kind, data, color in self.ops:
            if kind == "line":
                draw.line(data, fill=color, width=2)
            elif kind == "dot":
                draw.ellipse([data[0] - 4, data[1] - 4, data[0] + 4, data[1] + 4], fill=color)
            else:
                draw.text(data[:2], data[2], fill=color, font=font)
        return image

    def svg(self) -> str:
        w, h = self.size
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
               f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>']
        for kind, data, color in self.ops:
            rgb = "rgb({},{},{})".format(*color)
            if kind == "line":
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in data)
                out.append(f'<polyline points="{points}" fill="none" stroke="{rgb}" stroke-width="2"/>')
            elif kind == "dot":
                out.append(f'<circle cx="{data[0]:.1f}" cy="{data[1]:.1f}" r="4" fill="{rgb}"/>')
            else:
                out.append(f'<text x="{data[0]:.1f}" y="{data[1] + 10:.1f}" fill="{rgb}">{escape(data[2])}</text>')
        return "\n".join(out + ["</svg>"]) + "\n"


def _draw(canvas: _Canvas, series: list[Any], title: str) -> None:
    width, height = canvas.size
    left, top, right, bottom = 70, 80, width - 20, height - 60
    canvas.line([(left, top), (right, top), (right, bottom), (left, bottom), (left, top)], (0, 0, 0))
    canvas.text(left, 8, title)
    canvas.text((left + right) // 2 - 60, height - 25, "FID (log scale, lower is better)")
    canvas.text(5, (top + bottom) // 2, "IS")
    points = [(p["fid"], p["is"]) for _, pts, _, _ in series for p in pts]
    if not points:
        return
    x0, x1 = _padded(min(math.log10(p[0]) for p in points), max(math.log10(p[0]) for p in points))
    y0, y1 = _padded(min(p[1] for p in points), max(p[1] for p in points))

    def at(fid: float, score: float) -> tuple[float, float]:
        return (left + (math.log10(fid) - x0) / (x1 - x0) * (right - left),
                bottom - (score - y0) / (y1 - y0) * (bottom - top))

    for i in range(5):  # axis ticks
        fx, fy = 10 ** (x0 + i * (x1 - x0) / 4), y0 + i * (y1 - y0) / 4
        canvas.text(at(fx, y0)[0] - 12, bottom + 6, f"{fx:.3g}", (80, 80, 80))
        canvas.text(left - 40, at(10 ** x0, fy)[1] - 6, f"{fy:.2f}", (80, 80, 80))
    for index, (label, valid, key, color) in enumerate(series):
        coords = [at(p["fid"], p["is"]) for p in valid]
        if len(coords) > 1:
            canvas.line(coords, color)
        for p, (cx, cy) in zip(valid, coords):
            canvas.dot(cx, cy, color)
            canvas.text(cx + 6, cy - 12, f"{p[key]:g}", color)
        canvas.text(left + 10, 28 + 16 * index, f"- {label}", color)  # above the frame


def _padded(low: float, high: float) -> tuple[float, float]:
    span = high - low or max(abs(high), 1.0) * 0.1
    return low - 0.1 * span, high + 0.1 * span
