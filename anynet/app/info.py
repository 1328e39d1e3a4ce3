"""What this machine offers anynet: versions, backends, GPUs, BLAS and threads (``anynet info``).

Every probe is guarded: a library that is missing or fails to start is
reported as such, and the report is still printed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Distributions whose versions the report lists (the first installed of each tuple), in this order.
PACKAGES = {
    "numpy": ("numpy",),
    "array-api-compat": ("array-api-compat",),
    "array-api-strict": ("array-api-strict",),
    "torch": ("torch",),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "dask": ("dask",),
    "optuna": ("optuna",),
    "tensorboardX": ("tensorboardX",),
    "threadpoolctl": ("threadpoolctl",),
}


def package_versions():
    """``{name: version or None}`` for ``PACKAGES``, read from the installed metadata (nothing is imported)."""
    found = {}
    for name, distributions in PACKAGES.items():
        found[name] = None
        for dist in distributions:
            try:
                found[name] = version(dist) + ("" if dist == name else f" ({dist})")
                break
            except PackageNotFoundError:
                continue
    return found


def backend_status():
    """``[(backend, None or why it cannot run here)]`` for every name in ``anynet.backends.BACKENDS``.

    The reason of a backend that cannot run names the missing package or
    GPU and the command that installs it; a backend that can run gets its
    default device in ``device_of``.
    """
    from .. import backends

    status = []
    for name in backends.BACKENDS:
        try:
            device = backends.get(name).device
        except Exception as exc:  # a broken install must not stop the report
            status.append((name, None, " ".join(str(exc).split()) or type(exc).__name__))
        else:
            status.append((name, str(device), None))
    return status


def gpus():
    """``[(name, memory in bytes or None)]`` of the visible NVIDIA GPUs: through PyTorch, CuPy or nvidia-smi."""
    try:
        import torch

        if torch.cuda.is_available():
            return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory)
                    for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    try:
        import cupy

        found = []
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            found.append((props["name"].decode(), int(props["totalGlobalMem"])))
        if found:
            return found
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            found.append((name.strip(), int(float(mib)) * 2**20))
        except ValueError:
            found.append((line.strip(), None))
    return found


def cpu_model():
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def thread_pools():
    """One line per thread pool NumPy's process has (BLAS, OpenMP), through threadpoolctl when installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ['BLAS unknown: pip install threadpoolctl (or "anynet[bench]") to see it']
    import numpy  # noqa: F401  (its BLAS loads with it)

    lines = []
    for pool in threadpool_info():
        kernel = f", kernel {pool['architecture']}" if pool.get("architecture") else ""
        what = " ".join(str(x) for x in (pool.get("internal_api"), pool.get("version")) if x)
        lines.append(f"{pool.get('user_api')}: {what}{kernel}, {pool.get('num_threads')} threads "
                     f"({Path(pool.get('filepath', '')).name})")
    return lines or ["no BLAS or OpenMP library found in this process"]


def report():
    """The text ``anynet info`` prints."""
    from .. import __version__

    lines = [f"anynet {__version__}",
             f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
             f"platform {platform.platform()}"]
    versions = package_versions()
    lines.append("packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()))
    lines.append("backends:")
    for name, device, why in backend_status():
        lines.append(f"  {name:17s} " + (f"yes, on {device}" if why is None else f"no: {why}"))
    found = gpus()
    if found:
        lines += [f"GPU {i}: {name}" + (f", {memory / 2**30:.1f} GiB" if memory else "")
                  for i, (name, memory) in enumerate(found)]
    else:
        lines.append("GPUs: none visible")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.append(f"CPU: {cpu_model()}, {os.cpu_count()} cores ({usable} usable by this process)")
    from ..backends import numpy as numpy_backend

    lines.append(f"threads: anynet {numpy_backend.threads()}")
    lines += [f"  {line}" for line in thread_pools()]
    env = [f"{var}={os.environ[var]}" for var in ("ANYNET_BACKEND", "ANYNET_DEVICE", "ANYNET_DATA",
                                                   "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "CUDA_VISIBLE_DEVICES") if var in os.environ]
    lines.append("environment: " + (", ".join(env) if env else "no ANYNET_* or thread variables set"))
    return "\n".join(lines)
