"""The arithmetic sampling runs in, one of ``PRECISIONS``:

- ``fp32``: PyTorch's defaults, what sampling always did (on GPUs cuDNN may use TF32 for
  convolutions, as PyTorch allows by default; matrix products stay fp32);
- ``bf16``: the whole of ``generate_images``, the decoder included, under ``torch.autocast`` in
  bfloat16 (on the CPU as on GPUs), as VAR's official sampler runs it in fp16;
- ``tf32``: TensorFloat-32 matrix products and convolutions on GPUs that have them (Ampere and
  later); on the CPU it changes nothing.

Each changes the images, so it is one of the settings a shard folder records.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from alignkit.errors import AlignkitError

PRECISIONS = ("fp32", "bf16", "tf32")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise AlignkitError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")


@contextmanager
def numerics(precision: str, device: torch.device) -> Iterator[None]:
    """Run the block in ``precision`` on ``device``'s type; the global TF32 flags are restored after."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32":
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    else:
        yield
