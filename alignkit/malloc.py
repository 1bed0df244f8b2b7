"""Keep freed memory in the process, for glibc's malloc.

By default glibc serves blocks above 128 KiB–32 MiB with ``mmap`` and gives them back to the system
when they are freed, and trims the heap's free top beyond 128 KiB. A model on the CPU allocates and
frees tensors of that size at every step, so each new one is page-faulted in again. On a 2-core CPU
that cost VAR's sampling ~25% of its time and made single calls vary from 0.9 to 2.2 s.

alignkit's commands raise both thresholds to 1 GiB: for their own process (``mallopt``) and, through
the environment, for the processes they start (workers, torchrun). The process then keeps what it
freed for its next allocation; its resident memory stays near its peak. Setting
``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` yourself leaves malloc as you set it
(``MALLOC_TRIM_THRESHOLD_=131072`` is glibc's default behaviour).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import MutableMapping

THRESHOLD = 1 << 30
VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def keep_freed_memory(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Raise glibc's mmap and trim thresholds unless ``environ`` already sets either; whether it did."""
    if any(name in environ for name in VARIABLES) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, THRESHOLD) == 1):
        return False
    environ.update({name: str(THRESHOLD) for name in VARIABLES})
    return True
