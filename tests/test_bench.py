"""`alignkit bench --quick`: the whole path (toy tokenizer, classifier, base pretraining, every
objective, guidance and λ sweeps, sampling, evaluation, report) on the embedded digits."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alignkit.cli.main import app
from alignkit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("bench") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGNKIT_CACHE", str(cache))
        first = runner.invoke(app, ["bench", "--quick", "--out", str(out), "--no-inception"])
        assert first.exit_code == 0, first.output
        cached = sorted(p.name for p in (cache / "bench").iterdir())
        again = runner.invoke(app, ["bench", "--quick", "--out", str(out), "--no-inception", "--objectives", "cca"])
        assert again.exit_code == 0, again.output
    return out, json.loads((out / "results.json").read_text()), first.output, again.output, cached


def test_quick_fine_tunes_are_short(quick):
    out, _, _, _, _ = quick
    assert json.loads((out / "runs" / "cca" / "run.json").read_text())["total_steps"] == 6


def test_quick_bench_reports_the_paper_rows(quick, tmp_path):
    out, results, output, _, _ = quick
    # the second run (objectives: cca) rewrote results.json; its rows are a subset of the first's
    assert results["suite"] == "mnist-quick" and results["backbone"] == "llamagen" and results["data"] == "mnist"
    names = [r["name"] for r in results["rows"]]
    assert names == ["base", "base+cfg", "cca"]
    for row in results["rows"]:
        assert set(row) >= {"name", "objective", "guidance", "fid", "is", "precision", "recall", "accuracy",
                            "images_per_s"}
        assert np.isfinite(row["fid"]) and row["fid"] >= 0 and 1 <= row["is"] <= 10
        assert 0 <= row["accuracy"] <= 1 and row["images_per_s"] > 0
    assert [p["guidance"] for p in results["sweeps"]["cfg"]] == [0.0, 1.0, 3.0]  # 0: the base row
    assert [p["lambda"] for p in results["sweeps"]["cca_lambda"]] == [0.3, 3.0]
    test_time = results["sweeps"]["cca_test_time_lambda"]  # one λ-conditioned model sampled at each λ
    assert [p["lambda"] for p in test_time] == [0.3, 3.0] and all(np.isfinite(p["fid"]) for p in test_time)
    assert json.loads((out / "runs" / "cca_lambda_conditioned" / "run.json").read_text())["total_steps"] == 6
    base_cfg = next(r for r in results["rows"] if r["name"] == "base+cfg")
    assert base_cfg["fid"] == min(p["fid"] for p in results["sweeps"]["cfg"] if p["guidance"] > 0)
    plot = Image.open(out / "fid_vs_is.png")
    assert plot.size == (640, 480) and (out / "fid_vs_is.svg").read_text().startswith(("<svg", "<?xml"))
    for name in ("base", "base_plus_cfg", "cca"):
        assert (out / "grids" / f"{name}.png").is_file()
    assert "alignkit bench: llamagen" in output


def test_first_run_compares_all_objectives(quick):
    _, _, output, _, _ = quick
    for name in ("base+cfg", "cca_cfg+cfg", "dpo", "unlearn", "nca"):
        assert name in output


def test_the_base_model_and_classifier_are_cached(quick):
    _, _, _, again, cached = quick
    assert any(name.startswith("base-llamagen-") for name in cached)
    assert any(name.startswith("classifier-") for name in cached)
    assert "base model: cached at" in again


def test_bench_recipes_run_alone(tmp_path, monkeypatch):
    """The bench's settings are ordinary recipes: every one validates."""
    monkeypatch.chdir(tmp_path)
    for path in sorted((ROOT / "benchmarks").glob("bench_*.toml")):
        recipe = load_recipe(path, check_paths=False)
        assert recipe.data.name == "images" and recipe.tokenizer is not None


def test_bench_refuses_a_foreign_output_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "was not written by alignkit bench" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    result = runner.invoke(app, ["bench", "--quick", "--objectives", "cca,ppo", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown ppo" in result.stderr


@pytest.mark.parametrize("backbone", ["llamagen", "var"])
def test_bench_on_user_data(backbone, tmp_path, monkeypatch):
    """--data: an .npz of RGB images (3 classes of coloured shapes, 20×20) instead of the digits,
    with either backbone (VAR: the multi-scale toy tokenizer)."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = np.zeros((150, 20, 20, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 50)
    for i, label in enumerate(labels):
        y, x = rng.integers(2, 10, 2)
        colour = np.eye(3, dtype=np.uint8)[label] * 200 + 40
        if label == 0:
            images[i, y:y + 8, x:x + 8] = colour  # squares
        elif label == 1:
            images[i, y:y + 8, x + 3:x + 5] = colour  # bars
        else:
            images[i, y + 3:y + 5, x:x + 8] = colour  # lines
    np.savez(tmp_path / "shapes.npz", images=images, labels=labels, classes=np.array(["square", "bar", "line"]))
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", "--quick", "--data", str(tmp_path / "shapes.npz"), "--objectives", "cca",
                                 "--backbone", backbone, "--out", str(out), "--no-inception"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == str(tmp_path / "shapes.npz") and results["backbone"] == backbone
    assert [r["name"] for r in results["rows"]] == ["base", "base+cfg", "cca"]
    assert all(np.isfinite(r["fid"]) and 0 <= r["accuracy"] <= 1 for r in results["rows"])
    samples = np.load(out / "samples" / "cca" / "samples.npz")
    assert samples["arr_0"].shape == (30, 28, 28, 3) and sorted(set(samples["labels"].tolist())) == [0, 1, 2]


def test_bench_runs_can_be_sampled_on_their_own(quick, tmp_path):
    """The fitted toy tokenizer is saved into each run folder and named by its recipe.toml, so
    `alignkit sample RUN` works without the bench (and without the cache it was fitted into)."""
    out, _, _, _, _ = quick
    run = out / "runs" / "cca_lambda_conditioned"
    assert (run / "tokenizer.safetensors").is_file()
    assert str(run / "tokenizer.safetensors") in (run / "recipe.toml").read_text()
    result = runner.invoke(app, ["sample", str(run), "--lambda", "3", "--num-per-class", "1", "--classes", "0-2",
                                 "--out", str(tmp_path / "s"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s" / "samples.npz")["arr_0"].shape == (3, 28, 28, 3)


@pytest.mark.parametrize("matplotlib", [False, True])
def test_the_figure_is_drawn_with_matplotlib_when_installed_else_pil(tmp_path, monkeypatch, matplotlib):
    from alignkit_bench.report import plot_sweeps

    if matplotlib:
        pytest.importorskip("matplotlib")
    else:
        monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)  # as if not installed
    sweeps = {"cfg": [{"guidance": 0.0, "fid": 30.0, "is": 3.1}, {"guidance": 3.0, "fid": 12.0, "is": 5.0}],
              "cca_lambda": [{"lambda": 0.3, "fid": 22.0, "is": 3.8}, {"lambda": 3.0, "fid": 18.0, "is": 4.4}]}
    plot_sweeps(sweeps, tmp_path / "fid_vs_is.png", "llamagen")
    assert Image.open(tmp_path / "fid_vs_is.png").size == (640, 480)
    svg = (tmp_path / "fid_vs_is.svg").read_text()
    assert "FID vs IS (llamagen, classifier features)" in svg or "FID vs IS" in svg.replace("&#160;", " ")
    assert svg.count("<svg") == 1 and ("<polyline" in svg or "<path" in svg)
