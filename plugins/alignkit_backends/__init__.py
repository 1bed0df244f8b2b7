"""Built-in training backends: one process (plain PyTorch) and DeepSpeed ZeRO stages 0–3."""

from alignkit import BackendSpec, hookimpl

from alignkit_backends.single import SingleConfig, SingleProcess


@hookimpl
def alignkit_register_backends():
    from alignkit_backends.zero import DeepSpeedBackend, DeepSpeedConfig

    return [
        BackendSpec("single", SingleProcess, SingleConfig, "one process on one device, PyTorch AdamW"),
        BackendSpec("deepspeed", DeepSpeedBackend, DeepSpeedConfig,
                    "DeepSpeed ZeRO 0–3 over several processes (gloo on CPU, nccl on GPU)"),
    ]
