"""Built-in training backends (one process, DeepSpeed ZeRO stages 0–3) and ``alignkit plan``, the
per-GPU memory planner for them."""

from alignkit import BackendSpec, hookimpl

from alignkit_backends.single import SingleConfig, SingleProcess


@hookimpl
def alignkit_register_backends():
    from alignkit_backends.zero import DeepSpeedBackend, DeepSpeedConfig

    return [
        BackendSpec("single", SingleProcess, SingleConfig, "one process on one device, PyTorch AdamW"),
        BackendSpec("deepspeed", DeepSpeedBackend, DeepSpeedConfig,
                    "DeepSpeed ZeRO 0–3 over several processes (gloo on CPU, nccl on GPU)", multi_process=True),
    ]


@hookimpl
def alignkit_register_commands(app):
    from alignkit.cli.common import examples, user_errors
    from alignkit_backends.plan_command import plan_command

    epilog = examples(
        "alignkit plan recipes/llamagen_3b_cca.toml --gpu-memory 80",
        "alignkit plan my.toml --gpu-memory 24 --json",
    )
    app.command("plan", epilog=epilog)(user_errors(plan_command))
