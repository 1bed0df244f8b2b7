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
    from alignkit.cli.common import user_errors
    from alignkit_data.extract_command import extract_command

    app.command("extract")(user_errors(extract_command))
