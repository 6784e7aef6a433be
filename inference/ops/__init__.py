"""The decoding step's operations besides its matrix products: the PyTorch reference forms
(reference.py) and the Triton kernels that compute the same on a GPU (kernels.py)."""
