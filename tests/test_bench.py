"""`alignkit bench`: the whole path (toy tokenizer, classifier, base pretraining, selection of every
row's knob on validation data, fine-tunes at several seeds, sampling, evaluation against the test
reference, intervals, verdicts, figure) on the embedded digits, and the data path it relies on."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import alignkit_bench.scoring as scoring
from alignkit.cli.main import app
from alignkit.recipe import load_recipe
from alignkit_bench.images import halves, load_images, split
from alignkit_bench.settings import KNOBS, OBJECTIVES, QUICK

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
ROW_KEYS = {"name", "objective", "guidance", "fid", "fid_ci95", "kid", "kid_ci95", "is", "is_ci95", "precision",
            "recall", "accuracy", "accuracy_ci95", "seeds", "images_per_s"}
FINDINGS = 5


def digest(images: np.ndarray | None) -> str | None:
    return None if images is None else hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Two quick runs sharing a cache: every objective, then CCA alone (the base model cached). Every
    evaluation of the first run is recorded: which reference images it measured samples against."""
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("bench") / "out"
    calls, benches = [], []
    evaluate, init = scoring.evaluate, scoring.Scorer.__init__

    def recording_evaluate(samples, reference, *args, **kwargs):
        result = evaluate(samples, reference, *args, **kwargs)
        settings = Path(samples.path).parent / "sampling.json" if samples.path else None
        calls.append({"reference": digest(reference.images), "fid": result["fid"],
                      "seed": json.loads(settings.read_text())["seed"] if settings else None})
        return result

    def recording_init(self, bench, extractor):
        benches.append(bench)
        init(self, bench, extractor)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGNKIT_CACHE", str(cache))
        patch.setattr(scoring, "evaluate", recording_evaluate)
        patch.setattr(scoring.Scorer, "__init__", recording_init)
        first = runner.invoke(app, ["bench", "--quick", "--out", str(out), "--no-inception"])
        assert first.exit_code == 0, first.output
        results = json.loads((out / "results.json").read_text())
        first_calls = list(calls)
        again = runner.invoke(app, ["bench", "--quick", "--out", str(out), "--no-inception", "--objectives", "cca"])
        assert again.exit_code == 0, again.output
    return {"out": out, "results": results, "again": json.loads((out / "results.json").read_text()),
            "output": first.output, "again_output": again.output, "calls": first_calls, "bench": benches[0]}


def test_quick_writes_every_key(quick):
    results = quick["results"]
    assert results["suite"] == "mnist-quick" and results["backbone"] == "llamagen" and results["data"] == "mnist"
    names = [r["name"] for r in results["rows"]]
    assert names == ["base", "base+cfg", *OBJECTIVES, "cca_cfg+cfg"]
    for row in results["rows"]:
        assert set(row) >= ROW_KEYS, row["name"]
        assert row["seeds"] == [0, 1] and len(row["per_seed"]) == 2
        for metric in ("fid", "kid", "is", "accuracy"):
            lo, hi = row[f"{metric}_ci95"]
            assert lo <= row[metric] <= hi
            assert row[metric] == pytest.approx(np.mean([s[metric] for s in row["per_seed"]]))
    assert set(results["splits"]) >= {"train", "validation", "test"} and all(results["splits"].values())
    assert set(results["floor"]) == {"fid", "kid"} and np.isfinite(results["floor"]["fid"])
    assert len(results["findings"]) == FINDINGS
    for finding in results["findings"]:
        assert set(finding) >= {"name", "verdict", "detail"} and finding["verdict"] in ("holds", "fails", "unresolved")
    assert "one base model, shared by every seed" in quick["output"]
    plot = Image.open(quick["out"] / "fid_vs_is.png")
    assert plot.size[0] >= 600 and plot.size[1] >= 400
    for name in names:
        assert (quick["out"] / "grids" / f"{name.replace('+', '_plus_')}.png").is_file()


def test_every_row_gets_the_same_budget_and_the_lowest_validation_fid_is_chosen(quick):
    selection = {entry["row"]: entry for entry in quick["results"]["selection"]}
    assert set(selection) == {"base+cfg", *OBJECTIVES, "cca_cfg+cfg"}
    for row, entry in selection.items():
        assert set(entry) >= {"row", "knob", "candidates", "chosen"}
        values = [c["value"] for c in entry["candidates"]]
        assert values == list(QUICK.knob_candidates(row, "llamagen")) and len(values) == QUICK.candidates
        assert entry["chosen"] == min(entry["candidates"], key=lambda c: c["validation_fid"])["value"]
        assert entry["at_edge"] == (entry["chosen"] in (min(values), max(values)))
    rows = {r["name"]: r for r in quick["results"]["rows"]}
    assert rows["cca"]["setting"] == selection["cca"]["chosen"]
    assert rows["base+cfg"]["guidance"] == selection["base+cfg"]["chosen"]


def test_the_splits_are_disjoint_and_reproducible_from_the_split_seed():
    data = load_images("mnist")
    index = np.arange(len(data.labels))
    tagged = type(data)(index, data.labels, data.classes, data.name)  # the "images" are their own indices

    def parts(seed):
        return {p: split(tagged, p, 0.1, 0.2, seed).images for p in ("train", "validation", "test")}

    first, again, other = parts(0), parts(0), parts(1)
    assert all(np.array_equal(first[p], again[p]) for p in first)
    assert not all(np.array_equal(first[p], other[p]) for p in first)
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not set(first[a]) & set(first[b])
    assert sorted(np.concatenate(list(first.values()))) == list(index)
    for label in range(10):  # every class keeps its share
        n = (data.labels == label).sum()
        assert (data.labels[first["test"]] == label).sum() == round(0.2 * n)
    reference, floor = halves(split(tagged, "test", 0.1, 0.2, 0), seed=2)
    assert not set(reference.images) & set(floor.images)


def test_reported_metrics_touch_only_the_test_reference_and_selection_only_validation(quick):
    """Through the code path: every evaluation the run made is matched to what it reported."""
    bench, calls, results = quick["bench"], quick["calls"], quick["results"]
    test, validation = digest(bench.rgb["test"]), digest(bench.rgb["validation"])
    train = {digest(img) for img in bench.rgb["train"]}
    assert not train & {digest(img) for img in bench.rgb["test"]}  # no training image is a test image
    assert {c["reference"] for c in calls} == {test, validation}
    by_fid = {}
    for call in calls:
        by_fid.setdefault(call["fid"], set()).add(call["reference"])
    for row in results["rows"]:
        for seed in row["per_seed"]:
            assert by_fid[seed["fid"]] == {test}, row["name"]
    for entry in results["selection"]:
        for candidate in entry["candidates"]:
            assert by_fid[candidate["validation_fid"]] == {validation}, entry["row"]
    first_test = next(i for i, c in enumerate(calls) if c["reference"] == test)
    assert all(c["reference"] == validation for c in calls[:first_test])  # every choice made before any test call
    assert all(c["reference"] == test for c in calls[first_test:])
    assert calls[-1]["seed"] is None  # the floor: real test images against the test reference
    for call in calls[:-1]:  # validation samples are drawn with seeds no reported sample uses
        assert (call["seed"] >= scoring.VALIDATION_SEED) == (call["reference"] == validation)


def test_quick_fine_tunes_are_short_and_every_seed_has_its_own_run(quick):
    runs = quick["out"] / "runs" / "cca"
    chosen = next(e["chosen"] for e in quick["again"]["selection"] if e["row"] == "cca")
    for seed in (0, 1):
        assert json.loads((runs / f"lambda{chosen:g}" / f"seed{seed}" / "run.json").read_text())["total_steps"] == 6
    losses = [[json.loads(line)["loss"] for line in (runs / f"lambda{chosen:g}" / f"seed{s}" / "metrics.jsonl")
               .read_text().splitlines() if '"loss"' in line] for s in (0, 1)]
    assert losses[0] != losses[1]  # the seed changes the data order and the pairs


def test_the_base_model_and_classifier_are_cached(quick):
    assert "base model: pretraining into" in quick["output"]
    assert "base model: cached at" in quick["again_output"]
    assert "base model" in quick["results"]["timings_s"] and "base model" not in quick["again"]["timings_s"]
    assert [r["name"] for r in quick["again"]["rows"]] == ["base", "base+cfg", "cca"]


def test_bench_runs_can_be_sampled_on_their_own(quick, tmp_path):
    """The fitted toy tokenizer is saved into each run folder and named by its recipe.toml, so
    `alignkit sample RUN` works without the bench (and without the cache it was fitted into)."""
    run = quick["out"] / "runs" / "cca_lambda_conditioned" / "seed0"
    assert str(run / "tokenizer.safetensors") in (run / "recipe.toml").read_text()
    result = runner.invoke(app, ["sample", str(run), "--lambda", "3", "--num-per-class", "1", "--classes", "0-2",
                                 "--out", str(tmp_path / "s"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s" / "samples.npz")["arr_0"].shape == (3, 28, 28, 3)


def test_bench_recipes_run_alone(tmp_path, monkeypatch):
    """The bench's settings are ordinary recipes: every one validates, and every row's knob is a key of
    its recipe."""
    monkeypatch.chdir(tmp_path)
    for path in sorted((ROOT / "benchmarks").glob("bench_*.toml")):
        recipe = load_recipe(path, check_paths=False)
        assert recipe.data.name == "images" and recipe.tokenizer is not None
    for row, knob in KNOBS.items():
        if knob.key.startswith("objective."):
            path = ROOT / "benchmarks" / f"bench_llamagen_{row}.toml"
            load_recipe(path, [f"{knob.key}={knob.candidates['llamagen'][0]}"], check_paths=False)


def test_bench_refuses_a_foreign_output_folder_and_bad_options(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["bench", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "was not written by alignkit bench" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    result = runner.invoke(app, ["bench", "--quick", "--objectives", "cca,ppo", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown ppo" in result.stderr
    result = runner.invoke(app, ["bench", "--quick", "--seeds", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--seeds" in result.stderr


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
    assert results["splits"] == {"train": 105, "validation": 15, "test": 15, "floor": 15}
    assert [r["name"] for r in results["rows"]] == ["base", "base+cfg", "cca"]
    assert all(np.isfinite(r["fid"]) and 0 <= r["accuracy"] <= 1 for r in results["rows"])
    chosen = next(e["chosen"] for e in results["selection"] if e["row"] == "cca")
    samples = np.load(out / "samples" / "test" / "cca" / "seed1" / "samples.npz")
    assert samples["arr_0"].shape == (3 * QUICK.samples_per_class, 28, 28, 3)
    assert sorted(set(samples["labels"].tolist())) == [0, 1, 2]
    recipe = (out / "runs" / "cca" / f"lambda{chosen:g}" / "seed0" / "recipe.toml").read_text()
    assert 'name = "derangement"' in recipe  # 3 classes: negatives never repeat the row's own label


@pytest.mark.parametrize("matplotlib", [False, True])
def test_the_figure_has_error_bars_with_matplotlib_or_pil(tmp_path, monkeypatch, matplotlib):
    from alignkit_bench.figure import plot_sweeps

    if matplotlib:
        pytest.importorskip("matplotlib")
    else:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    sweeps = {"cfg": [{"guidance": 0.0, "fid": 30.0, "fid_ci95": [25.0, 35.0], "is": 3.1, "is_ci95": [3.0, 3.2]},
                      {"guidance": 3.0, "fid": 12.0, "fid_ci95": [11.0, 13.0], "is": 5.0, "is_ci95": [4.5, 5.5]}],
              "cca_lambda": [{"lambda": 0.3, "fid": 40.0, "is": 2.0}, {"lambda": 3.0, "fid": 10.0, "is": 6.0}]}
    # the points without bars span every bar, so both figures share their axes
    written = plot_sweeps(sweeps, tmp_path / "fid_vs_is", "llamagen")
    assert tmp_path / "fid_vs_is.png" in written
    if matplotlib:
        svg = (tmp_path / "fid_vs_is.svg").read_text()
        assert svg.count("<svg") == 1 and "<path" in svg
    no_bars = {k: [{**p, "fid_ci95": None, "is_ci95": None} for p in v] for k, v in sweeps.items()}
    plot_sweeps(no_bars, tmp_path / "plain", "llamagen")
    with_bars = np.asarray(Image.open(tmp_path / "fid_vs_is.png").convert("L"))
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("L"))
    assert (with_bars < 128).sum() > (plain < 128).sum()  # the bars add ink
