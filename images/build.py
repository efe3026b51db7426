"""Build Parley's container images without Docker (`make images` runs this).

Debian's buildah builds the Dockerfiles in images/ with no daemon (chroot isolation, vfs
storage). Their base is a Debian bookworm root filesystem made by mmdebstrap and imported as
a local image, passed as `BASE_IMAGE` in place of the public default (this machine reaches no
container registry). The Python packages come from a wheelhouse that the host's pip fills
from PyPI (the host's proxy and CA settings apply; the build itself needs no network).

Everything is cached under ~/.cache/parley/images: the base (made once per package list), the
wheelhouse (each pinned wheel fetched once) and buildah's store. An image whose inputs (its
Dockerfile, the build context, this script, the base) are unchanged is not rebuilt; a changed
one is rebuilt whole, without buildah's per-step layer cache, which costs a full copy of the
root filesystem per step on vfs.

The CUDA variants start from NVIDIA's CUDA images on Docker Hub: they are reported with the
command that builds them where Docker Hub is reachable, never silently skipped.

`python images/build.py --lock` re-pins images/requirements/*.txt (see `lock`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "images" / "requirements"
IGNOREFILE = ROOT / "images" / "dockerignore"
PARLEY_CACHE = Path(os.environ.get("PARLEY_CACHE", Path.home() / ".cache" / "parley"))
CACHE = PARLEY_CACHE / "images"
WHEELHOUSE = CACHE / "wheels"
LOGS = PARLEY_CACHE / "logs"
REGISTRY = "ghcr.io/parley-voice"
#: The label that records what an image was built from (see `inputs_digest`).
INPUTS_LABEL = "dev.parley.build-inputs"

#: buildah's global options: its own store under the cache, vfs (no overlay mounts needed).
STORE_OPTIONS = (
    *("--root", str(CACHE / "storage"), "--runroot", str(CACHE / "run")),
    *("--storage-driver", "vfs"),
)

#: The local base: Debian bookworm, minimal, with Python 3.11 and what the wheels need
#: (libgomp for onnxruntime and CTranslate2; Piper's wheel carries its own espeak-ng data).
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "libgomp1", "ca-certificates")
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
)
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")

#: The wheels' platform: CPython 3.11 on x86-64, manylinux up to glibc 2.35 (Ubuntu 22.04, the
#: CUDA variants' base; bookworm has 2.36). pip does not widen a manylinux tag to older glibc
#: versions itself, so each is listed.
PLATFORM = (
    *("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"),
    *(arg for minor in range(35, 4, -1) for arg in ("--platform", f"manylinux_2_{minor}_x86_64")),
)


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile and the lock it installs. A CUDA variant starts from an
    NVIDIA base on Docker Hub, so this script reports it instead of building it."""

    name: str
    repository: str
    dockerfile: str
    lock: str
    tag_suffix: str = ""
    cuda: bool = False

    def reference(self, tag: str) -> str:
        return f"{REGISTRY}/{self.repository}:{tag}{self.tag_suffix}"


IMAGES = (
    Image("operator", "parley-operator", "images/operator/Dockerfile", "operator"),
    Image("runtime", "parley-runtime", "images/runtime/Dockerfile", "runtime"),
    Image(
        "runtime-cuda",
        "parley-runtime",
        "images/runtime/cuda.Dockerfile",
        "runtime",
        tag_suffix="-cuda",
        cuda=True,
    ),
    Image("tts", "parley-tts", "images/tts/Dockerfile", "tts"),
    Image(
        "tts-xtts",
        "parley-tts",
        "images/tts/xtts.Dockerfile",
        "xtts",
        tag_suffix="-xtts",
        cuda=True,
    ),
)


@dataclass(frozen=True)
class Lock:
    """What one requirements file pins: pyproject's base dependencies and some extras, plus
    `also`; with no extras, the packages that build the parley wheel (its build-system)."""

    extras: tuple[str, ...] = ()
    also: tuple[str, ...] = ()


LOCKS = {
    "build": Lock(),
    "operator": Lock(("operator",)),
    "runtime": Lock(("runtime",)),
    "tts": Lock(("tts",)),
    # coqui-tts moved torch into its `cuda` extra; torch 2.10 is the last release whose PyPI
    # wheels carry CUDA 12.8, the CUDA of the GPU images' nvidia/cuda base.
    "xtts": Lock(("tts", "xtts"), also=("torch>=2.2,<2.11", "torchaudio>=2.2,<2.11")),
}


def say(message: str) -> None:
    print(f"[images] {message}", flush=True)


def buildah(*args: str) -> str:
    """Run buildah on this script's store; its standard output."""
    command = ["buildah", *STORE_OPTIONS, *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def inspect_image(reference: str) -> dict[str, Any] | None:
    """An image's OCI configuration (`User`, `Env`, `Entrypoint`, `Labels`, ...), or `None`
    when the store does not have it."""
    command = ["buildah", *STORE_OPTIONS, "inspect", "--type", "image", reference]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return None
    config: dict[str, Any] = json.loads(result.stdout)["OCIv1"]["config"]
    return config


def default_base(dockerfile: str) -> str:
    """The public base a Dockerfile names by default (its `ARG BASE_IMAGE=`)."""
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / dockerfile).read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{dockerfile} has no `ARG BASE_IMAGE=` default")
    return match.group(1)


def pins(lock: str) -> list[str]:
    """The `name==version` lines of a lock file."""
    lines = (REQUIREMENTS / f"{lock}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- the base -------------------------------------------------------------------------------


def base_reference() -> str:
    """`localhost/parley-base:bookworm-<hash>`: a new package list makes a new base."""
    recipe = json.dumps([SUITE, BASE_PACKAGES, MIRRORS, DPKG_OPTIONS, BASE_ENV])
    return f"localhost/parley-base:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def ensure_base() -> str:
    reference = base_reference()
    if inspect_image(reference) is not None:
        say(f"base {reference}: cached")
        return reference
    say(f"base {reference}: mmdebstrap {SUITE} with {', '.join(BASE_PACKAGES)} (once)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        command = ["mmdebstrap", "--quiet", "--variant=minbase"]
        command += [f"--include={','.join(BASE_PACKAGES)}"]
        command += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
        subprocess.run([*command, SUITE, str(rootfs), *MIRRORS], check=True)
        container = buildah("from", "--quiet", "scratch")
        try:
            buildah("add", "--quiet", container, str(rootfs), "/")
            env = [arg for pair in BASE_ENV for arg in ("--env", pair)]
            buildah("config", *env, "--cmd", "/bin/bash", container)
            buildah("commit", "--quiet", container, reference)
        finally:
            buildah("rm", container)
    say(f"base {reference}: made in {time.monotonic() - started:.0f} s")
    return reference


# --- the wheelhouse -------------------------------------------------------------------------


def missing_wheels(wanted: Iterable[str], wheel_files: Iterable[str]) -> list[str]:
    """The `name==version` pins that no wheel file in the list satisfies."""
    have = set()
    for filename in wheel_files:
        name, version, _, _ = parse_wheel_filename(filename)
        have.add((name, str(version)))
    return [
        pin
        for pin in wanted
        if (canonicalize_name(pin.partition("==")[0]), pin.partition("==")[2]) not in have
    ]


def fill_wheelhouse(locks: Iterable[str]) -> None:
    """Fetch each pinned wheel not yet in the wheelhouse, with the host's pip, for the images'
    platform (binary wheels only: nothing the CPU images install needs compiling)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    wanted = sorted({pin for lock in locks for pin in pins(lock)})
    missing = missing_wheels(wanted, [path.name for path in WHEELHOUSE.glob("*.whl")])
    if not missing:
        say(f"wheelhouse: all {len(wanted)} wheels cached")
        return
    say(f"wheelhouse: fetching {len(missing)} of {len(wanted)} wheels from PyPI (once)")
    started = time.monotonic()
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", *PLATFORM, "--dest", str(WHEELHOUSE)]
    subprocess.run([*command, *missing], check=True)
    say(f"wheelhouse: fetched in {time.monotonic() - started:.0f} s")


# --- the images -----------------------------------------------------------------------------


def context_files() -> list[Path]:
    """The build context's files, as images/dockerignore selects them: it excludes everything
    (`*`), takes back a few paths (`!path`) and drops names (`**/name`) below those."""
    taken, dropped = [], []
    for line in IGNOREFILE.read_text().splitlines():
        if line.startswith("!"):
            taken.append(ROOT / line[1:])
        elif line.startswith("**/"):
            dropped.append(line[3:])
        elif line.strip() and not line.startswith("#") and line != "*":
            raise ValueError(f"{IGNOREFILE}: a pattern this script cannot follow: {line!r}")
    files = []
    for path in taken:
        below = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [
            file
            for file in below
            if not any(fnmatch(part, name) for part in file.parts for name in dropped)
        ]
    return files


def inputs_digest(image: Image, base_id: str, tag: str) -> str:
    """What an image is built from: this script, its Dockerfile, the context, base and tag."""
    digest = hashlib.sha256(f"{base_id}\0{tag}\0".encode())
    for path in [Path(__file__).resolve(), ROOT / image.dockerfile, *context_files()]:
        digest.update(f"{path.relative_to(ROOT)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build(image: Image, base: str, tag: str) -> None:
    """Build one image unless the store has it from the same inputs. The full output goes to
    ~/.cache/parley/logs/image-<name>.log; the terminal gets the steps."""
    reference = image.reference(tag)
    inputs = inputs_digest(image, buildah("images", "--no-trunc", "--format", "{{.ID}}", base), tag)
    config = inspect_image(reference)
    if config is not None and config.get("Labels", {}).get(INPUTS_LABEL) == inputs:
        say(f"{image.name}: {reference} is up to date")
        return
    say(f"{image.name}: building {reference} from {image.dockerfile}")
    started = time.monotonic()
    command = ["buildah", *STORE_OPTIONS, "build", "--isolation", "chroot"]
    command += ["--file", image.dockerfile, "--ignorefile", str(IGNOREFILE)]
    command += ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={tag}"]
    command += ["--build-arg", "WHEELHOUSE=/wheelhouse", "--volume", f"{WHEELHOUSE}:/wheelhouse:ro"]
    command += ["--label", f"{INPUTS_LABEL}={inputs}", "--tag", reference, str(ROOT)]
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"image-{image.name}.log"
    with (
        log.open("w") as out,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if re.match(r"\[\d+/\d+\] STEP ", line):
                say(f"{image.name}:   {' '.join(line.split())[:96]}")
    if process.returncode:
        tail = log.read_text().splitlines()[-40:]
        raise SystemExit(
            f"[images] {image.name}: the build failed; the end of {log}:\n" + "\n".join(tail)
        )
    buildah("rmi", "--prune")  # the image this one replaces
    size = buildah("images", "--format", "{{.Size}}", reference)
    say(f"{image.name}: {reference} ({size}) built in {time.monotonic() - started:.0f} s")


def report_unbuildable(image: Image, tag: str) -> None:
    say(
        f"{image.name}: NOT BUILT: it cannot be built here. Its base, "
        f"{default_base(image.dockerfile)}, comes from Docker Hub, and this build uses only "
        "the local Debian base (no registry). Where Docker Hub is reachable: "
        f"docker build --file {image.dockerfile} --tag {image.reference(tag)} ."
    )


def build_images(names: Sequence[str], tag: str) -> int:
    chosen = [image for image in IMAGES if not names or image.name in names]
    buildable = [image for image in chosen if not image.cuda]
    if buildable:
        for tool in ("buildah", "mmdebstrap"):
            if shutil.which(tool) is None:
                say(f"{tool} not found: `make system-deps` installs it (as root, with apt)")
                return 1
        CACHE.mkdir(parents=True, exist_ok=True)
        base = ensure_base()
        fill_wheelhouse({"build", *(image.lock for image in buildable)})
        for image in buildable:
            build(image, base, tag)
    for image in chosen:
        if image.cuda:
            report_unbuildable(image, tag)
    return 0


# --- the locks ------------------------------------------------------------------------------


def lock_requirements(pyproject: dict[str, Any], lock: Lock) -> list[str]:
    """The requirements a lock resolves."""
    if not lock.extras:
        return list(pyproject["build-system"]["requires"])
    optional = pyproject["project"]["optional-dependencies"]
    extras = [req for extra in lock.extras for req in optional[extra]]
    return [*pyproject["project"]["dependencies"], *extras, *lock.also]


def lock() -> int:
    """Resolve each lock with pip (on Linux x86-64, Python 3.11: the images' platform),
    preferring the versions installed in this virtualenv, the ones the tests run with."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pip = [sys.executable, "-m", "pip"]
    freeze = [*pip, "freeze", "--exclude-editable"]
    installed = subprocess.run(freeze, check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        constraints.write(installed)
        constraints.flush()
        for name, spec in LOCKS.items():
            command = [*pip, "install", "--quiet", "--dry-run", "--ignore-installed"]
            command += ["--report", "-", "--constraint", constraints.name]
            command += lock_requirements(pyproject, spec)
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            resolved = sorted(
                f"{item['metadata']['name']}=={item['metadata']['version']}"
                for item in json.loads(result.stdout)["install"]
            )
            header = f"# The {name} lock: written by `python images/build.py --lock`.\n"
            (REQUIREMENTS / f"{name}.txt").write_text(header + "\n".join(resolved) + "\n")
            say(f"lock {name}: {len(resolved)} packages")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    names = [image.name for image in IMAGES]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("images", nargs="*", help=f"some of {', '.join(names)} (default: all)")
    parser.add_argument("--tag", default=version, help=f"image tag (default {version})")
    parser.add_argument("--lock", action="store_true", help="re-pin images/requirements")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.images) - set(names))
    if unknown:
        parser.error(f"unknown images {unknown}; known: {names}")
    os.chdir(ROOT)
    return lock() if args.lock else build_images(args.images, args.tag)


if __name__ == "__main__":
    sys.exit(main())
