"""The decoding step's operations besides its matrix products: the PyTorch reference forms
(reference.py) and the Triton kernels that compute the same on a GPU (kernels.py)."""


def hash_triton() -> None:
    """Triton's hash of its own files (its 400 MB library among them), which a process's first kernel,
    compiled or found in the cache, waits for: 0.3 s on an H200 machine (bench/warmup_profile.py),
    kept for the process and the ones it forks. File reads only, no GPU; nothing without Triton."""
    try:
        from triton.runtime.cache import triton_key
    except ImportError:
        return
    triton_key()
