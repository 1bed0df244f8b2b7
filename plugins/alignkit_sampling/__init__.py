"""Class-balanced, deterministic, resumable sampling to an ADM-format batch and a PNG grid
(``balanced``, ``images``), on one process or many (``processes``) in a chosen precision
(``numerics``), and the ``alignkit sample`` command."""

from alignkit import hookimpl


@hookimpl
def alignkit_register_commands(app):
    from alignkit.cli.common import examples, user_errors
    from alignkit_sampling.command import sample_command

    epilog = examples(
        "alignkit sample runs/my_cca_run --out samples/cca   # the recipe's [sample] settings",
        "alignkit sample my.toml --checkpoint c2i_L_384.pt --guidance 3.0 --image-size 256",
        "alignkit sample runs/my_cca_run --nproc-per-node 8 --precision bf16   # one process per GPU",
        "alignkit sample --backbone var-d16 --checkpoint var_d16.pth --tokenizer var-vqvae "
        "--tokenizer-checkpoint vae_ch160v4096z32.pth --top-k 900 --top-p 0.96")
    app.command("sample", epilog=epilog)(user_errors(sample_command))
