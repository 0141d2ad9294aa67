"""What a Dask process reports about itself: package versions and GPUs.

This module is sent to schedulers and workers by value (cloudpickle), so it
must import nothing from cumulo and only optional third-party modules: remote
clusters need not have cumulo installed.
"""

from __future__ import annotations

import platform
from typing import Any

#: The packages that decide whether pickled code and data round-trip between client and workers.
PACKAGES = ("dask", "distributed", "cloudpickle", "msgpack", "numpy", "pandas", "pyarrow", "cudf", "dask_cuda",
            "cumulo")


def _version(module: str) -> str | None:
    from importlib import metadata

    dist = {"dask_cuda": "dask-cuda"}.get(module, module)
    for name in (dist, f"{dist}-cu12", f"{dist}-cu13"):
        try:
            found = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return _header_version(found) or found.version
    return None


def _header_version(dist: Any) -> str | None:
    """The ``Version:`` field of a distribution's metadata, read from the header alone.

    The same value as ``metadata.version()``, which parses the whole file as an email
    message: for a package whose metadata carries its README (pandas: ~80 KB) that
    parse was most of the probe's time, paid in every process on every connect.
    None when the field is not found where expected (the caller then asks importlib).
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "version" and not line[:1].isspace():
            return value.strip() or None
    return None


def _gpus() -> list[dict[str, Any]]:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        count = pynvml.nvmlDeviceGetCount()
        indices = list(range(count))
        if visible is not None:
            first = visible.split(",")[0].strip()
            # A dask-cuda worker sees every device but uses the first visible one.
            indices = [int(first)] if first.isdigit() and int(first) < count else []
        out = []
        for i in indices:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name, "memory": int(mem)})
        return out
    except Exception:
        return []


def probe(extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Versions of the packages that must agree (and of ``extra`` ones the user named), and this process's GPUs."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in (*PACKAGES, *extra):
        versions[package] = _version(package)
    return {"versions": versions, "gpus": _gpus()}
