"""Let PyPI's torchvision import beside torch's CPU build (installed into vLLM's CPU virtualenv by
scripts/install-vllm.sh, loaded by a .pth file).

PyPI's torchvision wheels are CUDA builds: their C++ operators (nms, roi_align, image decoding)
cannot load without CUDA's torch, and torchvision then still registers fake kernels for two of them
(torchvision::nms and qnms), which fails because the operators do not exist: the import of
torchvision breaks, and with it transformers' GLM-4V image processor, which vLLM imports. Defining
those two operators' schemas (with no kernel) before torchvision is imported lets it import; its
Python transforms, which the image processor uses, are plain torch. Calling nms or qnms still fails,
saying there is no kernel: nothing on vLLM's GLM-4V path calls them. Where torchvision's C++ library
loads (a matching build), nothing is defined here.
"""

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries: list = []  # a Library's definitions last as long as the object


def _operators_load(package_dirs) -> bool:
    import torch

    for directory in package_dirs or []:
        for library in Path(directory).glob("_C*.so"):
            try:
                torch.ops.load_library(str(library))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def define_missing_operators(package_dirs) -> None:
    if _operators_load(package_dirs):
        return
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in SCHEMAS:
        library.define(schema)
    _libraries.append(library)


class BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs once, when torchvision is first imported (torch is not imported at every start of the
    interpreter, only by what imports torchvision)."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is not None:
            define_missing_operators(spec.submodule_search_locations)
        return None  # the ordinary finders import it


def install() -> None:
    if not any(isinstance(finder, BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, BeforeTorchvision())
