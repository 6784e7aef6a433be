"""Images for Docker tests, built here with no registry: a debootstrap base, the services image and
the inference and console images.

The base comes from `debootstrap --variant=minbase bookworm` and `docker import`; the services image
is Debian's packages installed by apt on it; the inference image is inference/Dockerfile and the
console image the root Dockerfile on it, each installing from a wheelhouse made on the host (builds
cannot reach the package index themselves). All are reused while their inputs match."""

import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "instance-console-test/base:bookworm"
SERVICES_TAG = "instance-console-test/services:bookworm-apt"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
INFERENCE_REPO = "instance-console-test/inference"
CONSOLE_REPO = "instance-console-test/console"
WHEELS = ROOT / "var" / "test" / "wheels"
CONSOLE_WHEELS = ROOT / "var" / "test" / "wheels-console"


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def base_image(client: docker.DockerClient) -> str:
    """Debian with Python: the base of the console, inference and services images."""
    if _exists(client, BASE_TAG):
        return BASE_TAG
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(root),
                DEBIAN_MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", BASE_TAG], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    return BASE_TAG


# apt on the base rather than a second debootstrap: 19 s on 2 cores, where the debootstrap took
# 87 s (the day before; the base's own takes 40-70 s). No service starts
# while the packages install (policy-rc.d): the stack starts its own.
SERVICES_DOCKERFILE = """
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \\
 && apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
    postgresql redis-server nginx-light libnginx-mod-http-js >/dev/null \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
"""


def services_image(client: docker.DockerClient) -> str:
    """Debian's PostgreSQL, Redis and nginx (with its JavaScript module, for the socket proxy's
    policy) on the base: the stack's services where no image can be pulled."""
    if _exists(client, SERVICES_TAG):
        return SERVICES_TAG
    client.images.build(
        fileobj=io.BytesIO(SERVICES_DOCKERFILE.encode()),
        tag=SERVICES_TAG,
        rm=True,
        network_mode="host",
        buildargs={"BASE_IMAGE": base_image(client)},
    )
    return SERVICES_TAG


# The base image's Python (Debian bookworm) decides which wheels and markers apply. pip download
# evaluates python_full_version markers with this interpreter, so what bookworm's older 3.11
# needs on top is named here.
BASE_PYTHON = "3.11.2"
BASE_PYTHON_EXTRAS = ("async-timeout>=4.0.3",)


def _wheelhouse(target: Path, requirements: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", BASE_PYTHON]
    subprocess.run(
        [*command, "-d", str(target), "-r", str(requirements), *BASE_PYTHON_EXTRAS], check=True, capture_output=True
    )


def _tree_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(ROOT).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


CONSOLE_INPUTS = ("Dockerfile", "requirements.txt", "manage.py", "console", "templates", "static", "locale", "deploy")


def console_image(client: docker.DockerClient) -> str:
    """The root Dockerfile on the Debian base, from a host-side wheelhouse; reused while its inputs match."""
    tag = f"{CONSOLE_REPO}:{_tree_hash(*(ROOT / p for p in CONSOLE_INPUTS))}"
    if _exists(client, tag):
        return tag
    base = base_image(client)
    _wheelhouse(CONSOLE_WHEELS, ROOT / "requirements.txt")
    with tempfile.TemporaryDirectory(prefix="console-build-") as ctx:
        for name in CONSOLE_INPUTS:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, Path(ctx) / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, Path(ctx) / name)
        shutil.copytree(CONSOLE_WHEELS, Path(ctx) / "wheels")
        client.images.build(
            path=ctx, tag=tag, rm=True, network_mode="host", buildargs={"BASE_IMAGE": base, "WHEELHOUSE": "wheels"}
        )
    _drop_older(client, CONSOLE_REPO, tag)
    return tag


def _drop_older(client: docker.DockerClient, repo: str, keep: str) -> None:
    """Images of earlier code are of no further use: keep the disk from filling up."""
    for image in client.images.list(name=repo):
        if keep not in image.tags:
            try:
                client.images.remove(image.id, force=False)
            except docker.errors.APIError:
                pass  # still used by a container


def inference_image(client: docker.DockerClient) -> str:
    tag = f"{INFERENCE_REPO}:{_tree_hash(ROOT / 'inference')}"
    if _exists(client, tag):
        return tag
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
    _drop_older(client, INFERENCE_REPO, tag)
    return tag
