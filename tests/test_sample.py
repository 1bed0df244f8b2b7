"""``alignkit sample``: class balance, the ADM file format, determinism, exact resume, sample -> eval.

The model is the tiny LlamaGen GPT at 64 tokens (random init, seeded) with the official tiny VQ, which
decodes 8×8 codes into 16×16 images. That guidance-free sampling runs the backbone on B rows and
guided sampling on 2B is tested by the backbones (test_llamagen.py, test_var_generate.py).
"""

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import alignkit
from alignkit import AlignkitError, hookimpl
from alignkit.cli.main import app
from alignkit_metrics.batches import read_samples
from alignkit_sampling.balanced import format_classes, plan_shards, sample_class_balanced
from alignkit.sample.tokens import seeded_generator
from alignkit_sampling.images import GRID_COLUMNS, GRID_PADDING, grid_classes, to_uint8_nhwc

from conftest import FIXTURES

HERE = FIXTURES / "llamagen"
GPT_CONFIG = {**json.loads((HERE / "gpt_tiny_config.json").read_text())["config"], "block_size": 64}
_VQ = json.loads((HERE / "vq_tiny_config.json").read_text())
VQ_CONFIG = {**_VQ["config"], **_VQ["encoder_decoder_ctor_overrides"], "image_size": 16}
VQ_CKPT = HERE / "vq_tiny.pt.xz"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Matrices this small gain nothing from a second thread, and lose badly when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vq():
    return alignkit.load_tokenizer("llamagen-vq", checkpoint=VQ_CKPT, config=VQ_CONFIG)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return alignkit.load_policy("llamagen", config=GPT_CONFIG).eval()


OPTIONS = ("top_k", "top_p", "temperature", "schedule")


def sample(policy, vq, out, classes=(1, 4), num_per_class=4, extra_options=None, **kwargs):
    """``sample_class_balanced`` with small batches; sampling options may be given as keywords."""
    options = {**{k: kwargs.pop(k) for k in OPTIONS if k in kwargs}, **(extra_options or {})}
    kwargs = {"batch_size": 2, "seed": 0, "progress": False, **kwargs}
    return read_samples(sample_class_balanced(policy, vq, classes, num_per_class, out_dir=out, options=options,
                                              **kwargs))


def same(a, b):
    return (np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
            and np.array_equal(a.tokens, b.tokens))


# ------------------------------------------------------------------------------ the library


def test_samples_are_class_balanced_in_the_adm_format_with_a_grid(policy, vq, tmp_path):
    batch = sample(policy, vq, tmp_path, classes=range(10), num_per_class=3, top_k=16)  # read_samples validates
    assert batch.images.shape == (30, 16, 16, 3) and batch.images.dtype == np.uint8
    assert batch.labels.dtype == np.int64 and np.array_equal(batch.labels, np.repeat(np.arange(10), 3))
    assert batch.tokens.shape == (30, 64) and batch.tokens.dtype == np.int64 and 0 <= batch.tokens.min()
    assert batch.tokens.max() < 64
    with torch.no_grad():  # the saved tokens are the images' tokens, converted as the official sampler does
        decoded = to_uint8_nhwc(vq.decode(torch.from_numpy(batch.tokens)))
    assert np.abs(decoded.astype(int) - batch.images).max() <= 1 and (decoded == batch.images).mean() > 0.99

    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    tile = 16 + GRID_PADDING
    assert grid.shape == (10 * tile - GRID_PADDING, GRID_COLUMNS * tile - GRID_PADDING, 3)  # one row per class
    for row in range(10):
        for column in range(3):
            top, left = row * tile, column * tile
            assert np.array_equal(grid[top:top + 16, left:left + 16], batch.images[3 * row + column])
    assert (grid[:, 3 * tile:] == 255).all()  # 3 images per class: the other columns stay empty

    info = json.loads((tmp_path / "sampling.json").read_text())
    assert info["num_images"] == 30 and info["classes"] == "0-9" and info["batch_size"] == 2
    assert info["options"] == {"top_k": 16} and info["guidance"] == 0.0 and info["images_per_second"] > 0
    assert info["generated_images"] == 30 and info["resumed_images"] == 0


def test_uint8_conversion_is_the_official_llamagen_one():
    x = torch.tensor([-1.3, -1.0, -0.999, 0.0, 0.5, 0.996, 1.0, 1.2]).reshape(1, 1, 1, 8).expand(1, 3, 1, 8)
    # clamp(127.5 x + 128, 0, 255) truncated: 127.5 · 0.996 + 128 = 254.99 -> 254
    assert to_uint8_nhwc(x)[0, 0, :, 0].tolist() == [0, 0, 0, 128, 191, 254, 255, 255]
    assert to_uint8_nhwc(torch.zeros(2, 3, 8, 8), image_size=4).shape == (2, 4, 4, 3)


def test_shards_seeds_and_grid_rows():
    assert plan_shards([3, 5], 5, 2) == [s for s in plan_shards([3], 5, 2) + plan_shards([5], 5, 2)]
    assert [s.count for s in plan_shards([3], 5, 2)] == [2, 2, 1]
    seeds = {seeded_generator(seed, label, chunk).initial_seed() for seed in range(3) for label in range(3)
             for chunk in range(3)}
    assert len(seeds) == 27 and all(0 <= s < 2 ** 63 for s in seeds)
    assert grid_classes(list(range(1000)), 16)[:2] == [0, 67] and grid_classes(list(range(1000)), 16)[-1] == 999
    assert format_classes([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_same_seed_same_samples_other_seed_other_samples_classes_independent(policy, vq, tmp_path):
    a = sample(policy, vq, tmp_path / "a", guidance=1.5)
    b = sample(policy, vq, tmp_path / "b", guidance=1.5)
    assert same(a, b)
    c = sample(policy, vq, tmp_path / "c", guidance=1.5, seed=1)
    assert not np.array_equal(a.tokens, c.tokens)
    # per-class seeds: class 4 alone is class 4 of the two-class run
    alone = sample(policy, vq, tmp_path / "d", classes=[4], guidance=1.5)
    assert np.array_equal(alone.tokens, a.tokens[4:]) and np.array_equal(alone.images, a.images[4:])


def test_an_interrupted_run_resumes_to_the_same_file(policy, vq, tmp_path, monkeypatch):
    whole = sample(policy, vq, tmp_path / "whole", classes=[0, 2, 7], num_per_class=5, temperature=0.9)
    calls, interrupt_at = [], [4]
    generate = policy.generate

    @functools.wraps(generate)
    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt
        return generate(*args, **kwargs)

    monkeypatch.setattr(policy, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample(policy, vq, tmp_path / "resumed", classes=[0, 2, 7], num_per_class=5, temperature=0.9)
    assert len(list((tmp_path / "resumed" / "shards").glob("*.npz"))) == 3
    assert not (tmp_path / "resumed" / "samples.npz").exists()
    calls.clear()
    interrupt_at[0] = None
    resumed = sample(policy, vq, tmp_path / "resumed", classes=[0, 2, 7], num_per_class=5, temperature=0.9)
    assert len(calls) == 9 - 3 and same(whole, resumed)
    info = json.loads((tmp_path / "resumed" / "sampling.json").read_text())
    assert (info["generated_images"], info["resumed_images"]) == (10, 5)
    # a lost shard is made again, identical
    (tmp_path / "resumed" / "shards" / "class000002_chunk00001.npz").unlink()
    assert same(whole, sample(policy, vq, tmp_path / "resumed", classes=[0, 2, 7], num_per_class=5,
                              temperature=0.9))


def test_resuming_with_other_settings_is_refused_but_other_classes_reuse_shards(policy, vq, tmp_path):
    sample(policy, vq, tmp_path, guidance=1.0)
    for change, message in (({"batch_size": 3}, "batch_size 2 -> 3"), ({"guidance": 2.0}, "guidance 1.0 -> 2.0"),
                            ({"top_p": 0.5}, "options {} -> {'top_p': 0.5}"), ({"num_per_class": 5}, "num_per_class")):
        with pytest.raises(AlignkitError, match=f"holds shards sampled with other settings.*{message}"):
            sample(policy, vq, tmp_path, **{"guidance": 1.0, **change})
    more = sample(policy, vq, tmp_path, classes=(1, 4, 6), guidance=1.0)
    info = json.loads((tmp_path / "sampling.json").read_text())
    assert (info["resumed_images"], info["generated_images"]) == (8, 4) and len(more) == 12


def test_options_a_backbone_does_not_take_are_refused_before_anything_is_written(policy, vq, tmp_path):
    with pytest.raises(AlignkitError, match=r"LlamaGenGPT backbone does not take the sampling option "
                                            r"'more_smooth' \(--more-smooth\); it takes: temperature, top_k"):
        sample(policy, vq, tmp_path, extra_options={"more_smooth": True})
    assert not (tmp_path / "shards").exists()
    sample(policy, vq, tmp_path, extra_options={"cfg_interval": 3}, guidance=2.0)  # then the right run works
    for bad, message in (({"schedule": "cosine"}, "schedule: input should be 'constant' or 'linear'"),
                         ({"top_p": 1.5}, "top_p"),
                         ({"classes": [10]}, r"classes must lie in \[0, 10\)"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(AlignkitError, match=message):
            sample(policy, vq, tmp_path / "bad", **bad)


def test_var_samples_decode_the_smooth_latent_and_refuse_llamagen_options(tmp_path):
    from var_support import tiny, vqvae

    var, vae = tiny(), vqvae()
    batch = sample(var, vae, tmp_path, classes=[3], num_per_class=2, guidance=1.5, top_k=8,
                   extra_options={"more_smooth": True})
    assert batch.images.shape == (2, 64, 64, 3) and batch.tokens.shape == (2, 30)
    generator = seeded_generator(0, 3, 0)
    _, f_hat = var.generate(torch.tensor([3, 3]), guidance=1.5, top_k=8, more_smooth=True, generator=generator,
                            return_fhat=True)
    assert np.array_equal(batch.images, to_uint8_nhwc(vae.decode_fhat(f_hat), conversion="truncate"))
    with pytest.raises(AlignkitError, match="VAR backbone does not take the sampling option 'cfg_interval'"):
        sample(var, vae, tmp_path / "llamagen-option", classes=[3], num_per_class=1, extra_options={"cfg_interval": 2})


# ------------------------------------------------------------------------------ the CLI


def toml_table(name, values):
    # JSON scalars and lists of numbers are TOML too; unset (None) options are left out.
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)


@pytest.fixture(scope="module")
def files(tmp_path_factory, policy):
    """A checkpoint of the tiny policy, a recipe naming it, and a training run folder."""
    root = tmp_path_factory.mktemp("sample-cli")
    policy.save_official(str(root / "gpt.pt"))
    recipe = (toml_table("model", {"backbone": "llamagen", "checkpoint": str(root / "gpt.pt"), **GPT_CONFIG})
              + toml_table("tokenizer", {"name": "llamagen-vq", "checkpoint": str(VQ_CKPT), **VQ_CONFIG})
              + toml_table("objective", {"name": "cca", "beta": 0.02, "lambda_": 1.0}))
    (root / "tiny.toml").write_text(recipe)
    run = root / "runs" / "tiny"
    (run / "final").mkdir(parents=True)
    (run / "recipe.toml").write_text(recipe)
    policy.save_official(str(run / "final" / "model.pt"))
    return root


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, result.stdout, result.stderr


def explicit(root):
    """The tiny model named by options instead of a recipe."""
    args = ["--backbone", "llamagen", "--checkpoint", root / "gpt.pt", "--tokenizer", "llamagen-vq",
            "--tokenizer-checkpoint", VQ_CKPT]
    args += [a for k, v in GPT_CONFIG.items() if v is not None for a in ("--config", f"{k}={json.dumps(v)}")]
    return args + [a for k, v in VQ_CONFIG.items() for a in ("--tokenizer-config", f"{k}={json.dumps(v)}")]


def test_run_folder_recipe_and_options_sample_the_same_images(files, tmp_path):
    common = ["--num-per-class", 3, "--classes", "0-2,5", "--batch-size", 2, "--guidance", 1.0, "--top-k", 20,
              "--cfg-interval", 30, "--device", "cpu", "--no-progress"]
    result, out, err = cli("sample", files / "runs" / "tiny", *common)
    assert result.exit_code == 0, err
    assert "12 images (4 classes × 3)" in out and "images/s" in out
    run_batch = read_samples(files / "runs" / "tiny" / "samples" / "samples.npz")  # the run folder's default
    info = json.loads((files / "runs" / "tiny" / "samples" / "sampling.json").read_text())
    assert info["options"] == {"top_k": 20, "cfg_interval": 30} and info["provenance"]["backbone"] == "llamagen"
    assert info["model"]["checkpoint_sha256"] and info["model"]["tokenizer_sha256"]

    for source in ([files / "tiny.toml"], explicit(files)):
        out_dir = tmp_path / str(len(source))
        result, _, err = cli("sample", *source, *common, "--out", out_dir)
        assert result.exit_code == 0, err
        assert same(run_batch, read_samples(out_dir / "samples.npz"))
    assert np.array_equal(run_batch.labels, np.repeat([0, 1, 2, 5], 3))


def class_images(vq, n, seed):
    """"Real" images of 10 classes: decoded codes drawn from a class's own 6 codebook entries."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    codes = labels[:, None] * 6 + rng.integers(0, 6, (n, 64))
    with torch.no_grad():
        return to_uint8_nhwc(vq.decode(torch.from_numpy(codes))), labels


def test_sample_then_eval_end_to_end(files, vq, tmp_path):
    from alignkit.plugins import get_plugins
    from alignkit_metrics import train_classifier

    x, y = class_images(vq, 300, 0)
    train_classifier(x, y, epochs=3, batch_size=50, widths=(8, 16, 16), out=tmp_path / "clf.safetensors")
    ref_x, ref_y = class_images(vq, 100, 1)
    np.savez(tmp_path / "ref.npz", arr_0=ref_x, labels=ref_y)

    result, _, err = cli("sample", files / "tiny.toml", "--num-per-class", 6, "--batch-size", 6, "--out",
                         tmp_path / "samples", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, err

    class Logger:  # a plugin that logs evaluations through the lifecycle hook
        seen = []

        @hookimpl
        def alignkit_after_eval(self, run, results):
            self.seen.append((run, results))

    pm = get_plugins().pm
    pm.register(Logger(), name="test-logger")
    try:
        result, out, err = cli("eval", "--samples", tmp_path / "samples" / "samples.npz", "--ref", tmp_path / "ref.npz",
                               "--features", "classifier", "--weights", tmp_path / "clf.safetensors", "--json",
                               tmp_path / "results.json", "--device", "cpu", "--no-progress")
    finally:
        pm.unregister(name="test-logger")
    assert result.exit_code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_samples"] == 60
    for metric in ("fid", "is", "precision", "recall", "accuracy"):
        assert np.isfinite(results[metric]), metric
    assert len(Logger.seen) == 1 and Logger.seen[0][0] is None and Logger.seen[0][1]["fid"] == results["fid"]


def test_bad_inputs_are_one_error_line_with_exit_code_2(files, tmp_path):
    recipe = files / "tiny.toml"
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "recipe.toml").write_text(recipe.read_text())
    (tmp_path / "no_tokenizer.toml").write_text(recipe.read_text().split("[tokenizer]")[0]
                                                + "[objective]\nname = 'cca'\nbeta = 0.02\nlambda_ = 1.0\n")
    model_part, tokenizer_part = recipe.read_text().split("[tokenizer]")
    (tmp_path / "unset_tokenizer.toml").write_text(model_part + "[tokenizer]" + "".join(
        line + "\n" for line in tokenizer_part.splitlines() if not line.startswith("checkpoint")))
    run = ["--num-per-class", 1, "--classes", "0", "--device", "cpu", "--no-progress", "--out", tmp_path / "out"]
    assert cli("sample", recipe, *run)[0].exit_code == 0
    cases = [
        ([], "nothing to sample"),
        ([tmp_path / "nope.toml"], "no such run folder or recipe file"),
        ([tmp_path / "empty"], "folder without recipe.toml"),
        ([tmp_path / "unfinished"], "has no final/model.pt"),
        ([recipe, "--checkpoint", tmp_path / "missing.pt"], "missing.pt not found"),
        ([tmp_path / "no_tokenizer.toml"], "has no [tokenizer] section"),
        ([tmp_path / "unset_tokenizer.toml"], "tokenizer.checkpoint is not set; give the tokenizer's weights with "
         "--tokenizer llamagen-vq --tokenizer-checkpoint PATH"),
        ([a.replace("llamagen", "llamagan") if a == "llamagen" else a for a in explicit(files)],
         "did you mean 'llamagen'"),
        ([recipe, "--backbone", "llamagen"], "--backbone and --config are for sampling without a recipe"),
        (["--backbone", "llamagen"], "no weights to sample from"),
        ([recipe, "--tokenizer-config", "ch=16"], "--tokenizer-config need --tokenizer NAME"),
        ([recipe, "--more-smooth"], "does not take the sampling option 'more_smooth' (--more-smooth)"),
        ([recipe, "--seed", 1], "holds shards sampled with other settings (seed 0 -> 1)"),
        ([recipe, "--classes", "3-1"], "the range 3-1 is empty"),
        ([recipe, "--classes", "0-10"], "the model has classes 0…9, not 10"),
        ([recipe, "--schedule", "cosine"], "sampling option schedule: input should be 'constant' or 'linear', "
                                           "got 'cosine'"),
        ([recipe, "--top-p", 1.5], "sampling option top_p: input should be less than or equal to 1, got 1.5"),
        ([recipe, "--device", "tpu"], "--device: unknown device 'tpu'"),
        ([recipe, "--lambda", 1.0], "--lambda needs a model trained with test-time λ"),
        ([*explicit(files), "--config", "lambda_conditioning=true"], "choose the trade-off with --lambda"),
    ]
    for args, message in cases:
        result, _, err = cli("sample", *run, *args)
        assert result.exit_code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (args, err)
        assert "Traceback" not in err


def test_lambda_reaches_a_lambda_conditioned_model(files, tmp_path):
    """A λ-conditioned model built from an unconditioned checkpoint starts with a zero λ embedding,
    so at any ``--lambda`` it samples exactly the checkpoint's images; the option is recorded."""
    common = ["--num-per-class", 2, "--classes", "0,3", "--batch-size", 2, "--device", "cpu", "--no-progress"]
    result, _, err = cli("sample", *explicit(files), *common, "--out", tmp_path / "plain")
    assert result.exit_code == 0, err
    result, _, err = cli("sample", *explicit(files), "--config", "lambda_conditioning=true", "--lambda", 30,
                         *common, "--out", tmp_path / "lambda")
    assert result.exit_code == 0, err
    assert same(read_samples(tmp_path / "plain" / "samples.npz"), read_samples(tmp_path / "lambda" / "samples.npz"))
    info = json.loads((tmp_path / "lambda" / "sampling.json").read_text())
    assert info["options"] == {"lambda_": 30.0}


def test_a_truncated_shard_on_a_rerun_is_one_line(files, tmp_path):
    args = ["sample", files / "tiny.toml", "--num-per-class", 1, "--classes", "0-1", "--batch-size", 1,
            "--device", "cpu", "--no-progress", "--out", tmp_path / "out"]
    assert cli(*args)[0].exit_code == 0
    shard = tmp_path / "out" / "shards" / "class000001_chunk00000.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    result, _, err = cli(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output and len(err.splitlines()) == 1
    assert err.startswith(f"error: {shard}: unreadable shard (") and err.strip().endswith("delete it and run again")
