"""What users type on command lines: ``key=value`` settings and device names."""

from __future__ import annotations

import tomllib
from typing import Any

import torch

from alignkit.errors import AlignkitError


def parse_value(raw: str) -> Any:
    """A TOML value (``3``, ``true``, ``[1, 2]``, ``"x"``), else the text itself (``dpo``)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``key=value`` items as a dict (values as ``parse_value``); ``flag`` names the option in errors."""
    pairs: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise AlignkitError(f"{flag} expects key=value, got '{item}'")
        pairs[key.strip()] = parse_value(raw)
    return pairs


def resolve_device(name: str, what: str = "--device") -> torch.device:
    """``auto`` (CUDA when available, else the CPU) or a torch device name that this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AlignkitError(f"{what}: unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlignkitError(f"{what}: '{name}' requested but CUDA is not available")
    return device
