"""Images for Docker tests, built here with no registry: a debootstrap base and the inference image.

The base comes from `debootstrap --variant=minbase bookworm` and `docker import`; the inference
image is inference/Dockerfile on that base, installing from a wheelhouse made on the host
(builds cannot reach the package index themselves). Both are reused while their inputs match.
"""

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "instance-console-test/base:bookworm"
INFERENCE_REPO = "instance-console-test/inference"
WHEELS = ROOT / "var" / "test" / "wheels"


def base_image(client: docker.DockerClient) -> str:
    try:
        client.images.get(BASE_TAG)
        return BASE_TAG
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", BASE_TAG], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    return BASE_TAG


def _inputs_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "inference").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def inference_image(client: docker.DockerClient) -> str:
    tag = f"{INFERENCE_REPO}:{_inputs_hash()}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    base = base_image(client)
    WHEELS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "-d",
            str(WHEELS),
            "-r",
            str(ROOT / "inference" / "requirements.txt"),
        ],
        check=True,
        capture_output=True,
    )
    with tempfile.TemporaryDirectory(prefix="inference-build-") as ctx:
        shutil.copytree(ROOT / "inference", Path(ctx) / "inference", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(WHEELS, Path(ctx) / "wheels")
        client.images.build(
            path=ctx,
            dockerfile="inference/Dockerfile",
            tag=tag,
            rm=True,
            network_mode="host",
            buildargs={"BASE_IMAGE": base, "WHEELHOUSE": "wheels"},
        )
    # Images of earlier server code are of no further use: keep the disk from filling up.
    for image in client.images.list(name=INFERENCE_REPO):
        if tag not in image.tags:
            try:
                client.images.remove(image.id, force=False)
            except docker.errors.APIError:
                pass  # still used by a container
    return tag
