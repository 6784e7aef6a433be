"""The decoding step's operations besides its matrix products: the PyTorch reference forms
(reference.py) and the Triton kernels that compute the same on a GPU (kernels.py)."""

import logging

log = logging.getLogger("inference.ops")


def prepare_triton() -> None:
    """What a process's first Triton kernels look up before they run, found once and kept by the
    process and those it forks (no GPU work; nothing without Triton): Triton's hash of its own files
    (its 400 MB library among them: 0.3 s on an H200 machine, bench/warmup_profile.py), the platform in
    the key of its launchers (it runs `file` on the interpreter), where libcuda lies (`ldconfig -p`),
    ptxas' version for each GPU's architecture (`ptxas --version`, in every kernel's key) and the keys
    of this server's kernels (their sources parsed). A handover's new process otherwise started those
    three programs at its first kernel (bench/new_process_profile.py). And the compiler's modules that
    first kernel imports."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return
    for step in (_triton_key, _platform_key, _libcuda_dirs, _ptxas_versions, _kernel_keys, _first_kernel_modules):
        try:
            step()
        except Exception as exc:  # another Triton's internals, no driver: the first kernel looks it up itself
            log.debug("not prepared ahead", extra={"fields": {"step": step.__name__, "why": str(exc)[:200]}})


def _triton_key() -> None:
    from triton.runtime.cache import triton_key

    triton_key()


def _platform_key() -> None:
    from triton.runtime.build import platform_key

    platform_key()


def _libcuda_dirs() -> None:
    from triton.backends.nvidia.driver import libcuda_dirs

    libcuda_dirs()


def _ptxas_versions() -> None:
    import pynvml
    from triton.backends.nvidia.compiler import get_ptxas_version

    pynvml.nvmlInit()  # the architectures without starting CUDA (this may run before a fork)
    try:
        archs = set()
        for index in range(pynvml.nvmlDeviceGetCount()):
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(pynvml.nvmlDeviceGetHandleByIndex(index))
            archs.add(major * 10 + minor)
    finally:
        pynvml.nvmlShutdown()
    for arch in archs:
        get_ptxas_version(arch)


def _kernel_keys() -> None:
    from triton.runtime.jit import JITFunction

    from inference.ops import kernels, matvec, vision_block

    for module in (kernels, matvec, vision_block):
        for value in vars(module).values():
            if isinstance(value, JITFunction):
                value.cache_key  # noqa: B018  (a property: computed once, kept)


# Imported by Triton at a process's first kernel, even one loaded from its cache (its code generator
# brings Gluon, for every GPU Triton knows): 42 modules, 0.1 s of a handover's new process on an H200.
FIRST_KERNEL_MODULES = (
    "triton.compiler.code_generator",
    "triton.experimental.gluon",
    "triton.language.extra.libdevice",
    "triton.language.semantic",
    "triton.tools.tensor_descriptor",
)


def _first_kernel_modules() -> None:
    import importlib

    for name in FIRST_KERNEL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # another Triton's layout: imported at the first kernel as before
            log.debug("not imported ahead", extra={"fields": {"module": name}})
