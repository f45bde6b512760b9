"""Docker's engine (Debian's docker.io) and a Python base image made from Debian packages.

No image registry can be reached from here, so the rig bootstraps a minimal Debian with python3 and
imports it as the image the Dockerfile's PYTHON_BASE build argument points at. Real users get the
official Python slim image, the Dockerfile's default.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.rig.procs import Process, RigError, tail

DOCKER_SOCKET = Path("/var/run/docker.sock")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3-venv brings ensurepip, so the builder stage can make a virtualenv as on the official image.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The tag names the package set, so changing BASE_PACKAGES makes a new image rather than reusing the old.
_PACKAGES_HASH = hashlib.sha256(" ".join(BASE_PACKAGES).encode()).hexdigest()[:8]
BASE_IMAGE = f"nsq-operator-rig/python-base:3.11-{SUITE}-{_PACKAGES_HASH}"
CACHE = Path(os.environ.get("NSQ_OPERATOR_CACHE", Path.home() / ".cache" / "nsq-operator"))


def docker_cli() -> str:
    """Debian's client matches Debian's engine; fall back to any docker on PATH."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def docker(
    *args: str, check: bool = True, timeout: float = 900, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [docker_cli(), *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise RigError(
            f"docker {' '.join(args[:3])} ... failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result  # type: ignore[no-any-return]


def engine_running() -> bool:
    return docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20).returncode == 0


def ensure_engine(log_dir: Path) -> Process | None:
    """Start dockerd unless one answers already; returns the process this call started, if any."""
    if engine_running():
        return None
    if not Path("/usr/sbin/dockerd").exists():
        raise RigError("dockerd is missing: install Debian's docker.io (make deps does it)")
    process = Process(
        "dockerd",
        [
            "/usr/sbin/dockerd",
            "--host",
            f"unix://{DOCKER_SOCKET}",
            "--storage-driver=overlay2",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
        ],
        log_dir / "dockerd.log",
    ).start()
    process.wait_until(engine_running, timeout=60, what="answering")
    return process


def ensure_base_image(work_dir: Path) -> str:
    """Import the Debian python3 rootfs as BASE_IMAGE, bootstrapping it once into the cache."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    key = "-".join([SUITE, *BASE_PACKAGES])
    tarball = CACHE / f"rootfs-{key}.tar"
    if not tarball.exists():
        _bootstrap(tarball, work_dir)
    docker("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(tarball), BASE_IMAGE)
    return BASE_IMAGE


def _bootstrap(tarball: Path, work_dir: Path) -> None:
    rootfs = work_dir / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    log = work_dir / "debootstrap.log"
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=1200,
        )
    if result.returncode != 0:
        raise RigError(f"debootstrap failed after {time.monotonic() - started:.0f}s:\n{tail(log)}")
    # Keep the image small: no apt lists, docs or caches.
    for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(rootfs), "-cf", f"{tarball}.tmp", "."], check=True)
    os.replace(f"{tarball}.tmp", tarball)
    shutil.rmtree(rootfs, ignore_errors=True)


def build_image(target: str, tag: str, base_image: str, context: Path) -> str:
    """Build one target of the project's Dockerfile on the rig's base image; returns the tag.

    The machine's CA bundle goes to docker/build-extra/ (git-ignored), which only builder stages read.
    """
    extra = context / "docker" / "build-extra"
    ca_bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    if ca_bundle.is_file():
        shutil.copyfile(ca_bundle, extra / "ca.pem")
    docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"PYTHON_BASE={base_image}",
        "--target",
        target,
        "-t",
        tag,
        str(context),
        timeout=1800,
    )
    return tag
