"""Built-in datasets (the official pre-extracted code layout and a single-file ``.npz`` form) and
``alignkit extract``, which writes that layout from an image folder."""

from alignkit import DatasetSpec, hookimpl

from alignkit_data.codes import CodeFolder, CodeFolderConfig, CodeNpz, CodeNpzConfig

__all__ = ["CodeFolder", "CodeFolderConfig", "CodeNpz", "CodeNpzConfig"]


@hookimpl
def alignkit_register_datasets():
    return [
        DatasetSpec("codes", CodeFolder, CodeFolderConfig,
                    "pre-extracted codes, one .npy per image (LlamaGen/CCA layout; also what alignkit extract writes)"),
        DatasetSpec("codes-npz", CodeNpz, CodeNpzConfig, "pre-extracted codes and labels in one .npz file"),
    ]


@hookimpl
def alignkit_register_commands(app):
    from alignkit.cli.common import examples, user_errors
    from alignkit_data.extract_command import extract_command

    epilog = examples(
        "alignkit extract --tokenizer llamagen-vq-16 --checkpoint vq_ds16_c2i.pt --images /data/imagenet/train "
        "--out codes384 --ten-crop --image-size 384",
        "alignkit extract --tokenizer var-vqvae --checkpoint vae_ch160v4096z32.pth --images train/ --out codes256 "
        "--strict",
    )
    app.command("extract", epilog=epilog)(user_errors(extract_command))
