"""The operator's renderers: VoiceDeployment + VRAM plan → Deployments, Services, a PDB, and
the Secret of the runtime's admin token.

Pure and fast, from the contract examples with the schema defaults applied; one test proves
the output against the real apiserver (server-side dry run, restricted Pod Security warnings).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import yaml

from parley.cli import _runtime_overrides, build_parser
from parley_operator.api import POD_MOUNT_PATHS, VoiceDeployment, with_defaults
from parley_operator.reconcile import kept_runtime_replicas
from parley_operator.render import admin_token_of, render, runtime_admin_secret
from parley_operator.vram import plan_vram
from parley_runtime import RuntimeSettings
from parley_tts.config import TTSSettings
from tests.support.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NAMESPACE = "voice"
UID = "5f0c1d2e-0000-4000-8000-00000000beef"

Manifest = dict[str, Any]


def example(name: str) -> Manifest:
    return yaml.safe_load((EXAMPLES / name).read_text())


def voice_deployment(
    name: str, change: Any = None, *, vd_name: str | None = None, uid: str = UID
) -> VoiceDeployment:
    """The object as the operator reads it: in a namespace, with a uid, the spec typed (its
    defaults filled in)."""
    manifest = example(name)
    if change is not None:
        change(manifest["spec"])
    manifest["metadata"] |= {"namespace": NAMESPACE, "uid": uid}
    if vd_name is not None:
        manifest["metadata"]["name"] = vd_name
    return VoiceDeployment.model_validate(manifest)


def rendered(name: str, change: Any = None) -> list[Manifest]:
    vd = voice_deployment(name, change)
    return render(vd, plan_vram(vd.spec))


def find(children: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [c for c in children if c["kind"] == kind and c["metadata"]["name"] == name]
    assert len(matches) == 1, (
        f"{kind}/{name} in {[(c['kind'], c['metadata']['name']) for c in children]}"
    )
    return matches[0]


def pod(children: list[Manifest], name: str) -> Manifest:
    spec: Manifest = find(children, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def container(children: list[Manifest], name: str) -> Manifest:
    containers = pod(children, name)["containers"]
    assert len(containers) == 1
    result: Manifest = containers[0]
    return result


def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} once in {argv}"
    return argv[argv.index(name) + 1]


def env(c: Manifest) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c["env"]}


def kinds_and_names(children: list[Manifest]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in children]


# -- which children --------------------------------------------------------------------------


def test_cpu_example_renders_runtime_and_tts_and_no_llm() -> None:
    assert kinds_and_names(rendered("cpu.yaml")) == [
        ("Deployment", "cpu-agent-runtime"),
        ("Service", "cpu-agent-runtime"),
        ("PodDisruptionBudget", "cpu-agent-runtime"),
        ("Deployment", "cpu-agent-tts"),
        ("Service", "cpu-agent-tts"),
    ]


@pytest.mark.parametrize(
    ("name", "vd"), [("gpu-exclusive.yaml", "support-agent"), ("gpu-shared.yaml", "edge-agent")]
)
def test_gpu_examples_render_every_component(name: str, vd: str) -> None:
    assert kinds_and_names(rendered(name)) == [
        ("Deployment", f"{vd}-runtime"),
        ("Service", f"{vd}-runtime"),
        ("PodDisruptionBudget", f"{vd}-runtime"),
        ("Deployment", f"{vd}-llm"),
        ("Service", f"{vd}-llm"),
        ("Deployment", f"{vd}-tts"),
        ("Service", f"{vd}-tts"),
    ]


def test_cpu_runtime_points_at_the_external_llm_and_the_tts_service() -> None:
    runtime = container(rendered("cpu.yaml"), "cpu-agent-runtime")
    assert runtime["command"] == ["parley", "runtime", "serve"]
    assert runtime["args"] == [
        "--host", "0.0.0.0",
        "--port", "8080",
        "--llm-url", "http://llm.default.svc:8000/v1",
        "--llm-model", "SmolLM2-135M-Instruct",
        "--tts-url", "http://cpu-agent-tts.voice.svc:8000/v1",
        "--asr-model", "tiny.en",
        "--asr-device", "cpu",
        "--max-sessions", "8",
        "--drain-timeout-s", "600",
    ]  # fmt: skip
    # The schema's default requests, and no GPU.
    assert runtime["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    tts = container(rendered("cpu.yaml"), "cpu-agent-tts")
    assert tts["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    for name in ("cpu-agent-runtime", "cpu-agent-tts"):
        assert not {"nodeSelector", "tolerations", "affinity"} & set(
            pod(rendered("cpu.yaml"), name)
        )


def test_managed_runtime_points_at_the_vllm_service() -> None:
    runtime = container(rendered("gpu-exclusive.yaml"), "support-agent-runtime")
    assert flag(runtime["args"], "--llm-url") == "http://support-agent-llm.voice.svc:8000/v1"
    assert flag(runtime["args"], "--llm-model") == "Qwen/Qwen2.5-7B-Instruct"
    assert flag(runtime["args"], "--asr-model") == "small.en"
    assert flag(runtime["args"], "--asr-device") == "cuda"
    assert flag(runtime["args"], "--max-sessions") == "40"


def test_the_runtime_asks_the_tts_server_for_its_backend_and_voice() -> None:
    runtime = env(container(rendered("gpu-exclusive.yaml"), "support-agent-runtime"))
    assert runtime["PARLEY_TTS_MODEL"] == "xtts"
    assert runtime["PARLEY_TTS_VOICE"] == "default"


def test_runtime_replicas_start_at_min_and_follow_the_autoscaler() -> None:
    vd = voice_deployment("gpu-exclusive.yaml")
    plan = plan_vram(vd.spec)
    assert find(render(vd, plan), "Deployment", "support-agent-runtime")["spec"]["replicas"] == 2
    scaled = render(vd, plan, runtime_replicas=5)
    assert find(scaled, "Deployment", "support-agent-runtime")["spec"]["replicas"] == 5
    assert find(scaled, "Deployment", "support-agent-llm")["spec"]["replicas"] == 1
    assert find(scaled, "Deployment", "support-agent-tts")["spec"]["replicas"] == 1


@pytest.mark.parametrize(("current", "kept"), [(None, 2), (3, 3), (1, 2), (9, 8)])
def test_a_reconcile_keeps_the_scaled_runtime_replicas_within_bounds(
    current: int | None, kept: int
) -> None:
    vd = voice_deployment("gpu-exclusive.yaml")
    assert (vd.spec.runtime.replicas.min, vd.spec.runtime.replicas.max) == (2, 8)
    assert kept_runtime_replicas(vd.spec, current) == kept


def test_runtime_pods_drain_before_they_stop() -> None:
    vd = voice_deployment("gpu-exclusive.yaml")
    deployment = find(render(vd, plan_vram(vd.spec)), "Deployment", "support-agent-runtime")
    pod = deployment["spec"]["template"]["spec"]
    runtime = pod["containers"][0]
    timeout = vd.spec.scaling.drain_timeout_seconds
    assert runtime["lifecycle"]["preStop"]["exec"]["command"] == [
        "parley", "runtime", "drain", "--url", "http://127.0.0.1:8080",
        "--wait", "--timeout-s", str(timeout),
    ]  # fmt: skip
    assert pod["terminationGracePeriodSeconds"] > timeout
    args = runtime["args"]
    assert args[args.index("--drain-timeout-s") + 1] == str(timeout)
    for other in ("support-agent-llm", "support-agent-tts"):
        spec = find(render(vd, plan_vram(vd.spec)), "Deployment", other)["spec"]["template"]
        assert "terminationGracePeriodSeconds" not in spec["spec"]
        assert "lifecycle" not in spec["spec"]["containers"][0]


# -- vLLM, TTS and GPUs ----------------------------------------------------------------------


def test_exclusive_vllm_args_carry_its_vram_cap_as_utilization() -> None:
    llm = container(rendered("gpu-exclusive.yaml"), "support-agent-llm")
    assert llm["image"] == "vllm/vllm-openai:v0.11.0"
    assert "command" not in llm  # the image's entrypoint serves the OpenAI API
    assert llm["args"] == [
        "--model", "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name", "Qwen/Qwen2.5-7B-Instruct",
        "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.45",
        "--port", "8000",
    ]  # fmt: skip


def test_shared_vllm_utilization_is_its_share_of_the_gpu() -> None:
    llm = container(rendered("gpu-shared.yaml"), "edge-agent-llm")
    assert flag(llm["args"], "--gpu-memory-utilization") == "0.5"  # 12 of 24 GiB
    assert flag(llm["args"], "--max-model-len") == "8192"  # the default


def test_vllm_spans_its_gpus_with_tensor_parallelism() -> None:
    children = rendered("gpu-exclusive.yaml", lambda s: s["llm"]["gpu"].update(count=2))
    llm = container(children, "support-agent-llm")
    assert flag(llm["args"], "--tensor-parallel-size") == "2"
    assert llm["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_exclusive_gpu_pods_get_one_gpu_each_on_the_selected_nodes() -> None:
    children = rendered("gpu-exclusive.yaml")
    default_requests = {
        "runtime": {"cpu": "1", "memory": "1Gi"},
        "llm": {"cpu": "2", "memory": "16Gi"},
        "tts": {"cpu": "1", "memory": "1Gi"},
    }
    for component in ("runtime", "llm", "tts"):
        name = f"support-agent-{component}"
        assert container(children, name)["resources"] == {
            "requests": default_requests[component],
            "limits": {"nvidia.com/gpu": 1},
        }
        assert pod(children, name)["nodeSelector"] == {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
        }
        assert "affinity" not in pod(children, name)
        strategy = find(children, "Deployment", name)["spec"]["strategy"]
        assert strategy == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }


def test_exclusive_tts_is_capped_by_flag_and_environment() -> None:
    tts = container(rendered("gpu-exclusive.yaml"), "support-agent-tts")
    assert tts["command"] == ["parley", "tts", "serve"]
    assert tts["args"] == [
        "--host", "0.0.0.0",
        "--port", "8000",
        "--default-model", "xtts",
        "--default-voice", "default",
        "--vram-cap-gib", "8",
    ]  # fmt: skip
    assert env(tts)["PARLEY_VRAM_CAP_GIB"] == "8"
    assert env(tts)["PARLEY_TTS_XTTS_DEVICE"] == "cuda"


def test_cpu_tts_has_no_vram_cap() -> None:
    tts = container(rendered("cpu.yaml"), "cpu-agent-tts")
    assert "--vram-cap-gib" not in tts["args"]
    assert "PARLEY_VRAM_CAP_GIB" not in env(tts)
    assert flag(tts["args"], "--default-model") == "piper"
    assert flag(tts["args"], "--default-voice") == "en_US-joe-medium"


def matches(selector: Manifest, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_shared_placement_puts_the_three_gpu_pods_on_one_node() -> None:
    children = rendered("gpu-shared.yaml")
    names = [f"edge-agent-{c}" for c in ("runtime", "llm", "tts")]
    pod_labels = {
        n: find(children, "Deployment", n)["spec"]["template"]["metadata"]["labels"] for n in names
    }
    for name in names:
        spec = pod(children, name)
        terms = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert len(terms) == 1
        assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
        # Every GPU pod of this VoiceDeployment (itself included, so the first one can land).
        assert all(matches(terms[0]["labelSelector"], pod_labels[other]) for other in names)
        assert not matches(
            terms[0]["labelSelector"], {**pod_labels[name], "parley.dev/voicedeployment": "other"}
        )
        assert container(children, name)["resources"]["limits"]["nvidia.com/gpu"] == 1
        # No second copy on a GPU whose budget is already spent.
        assert find(children, "Deployment", name)["spec"]["strategy"] == {"type": "Recreate"}


def test_shared_affinity_only_covers_the_components_that_use_the_gpu() -> None:
    def cpu_runtime(spec: Manifest) -> None:
        del spec["runtime"]["gpu"]
        spec["runtime"]["asr"]["device"] = "cpu"

    children = rendered("gpu-shared.yaml", cpu_runtime)
    assert not {"affinity", "nodeSelector"} & set(pod(children, "edge-agent-runtime"))
    assert "nvidia.com/gpu" not in container(children, "edge-agent-runtime")["resources"].get(
        "limits", {}
    )
    term = pod(children, "edge-agent-llm")["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ][0]
    assert term["labelSelector"]["matchExpressions"][0]["values"] == ["llm", "tts"]


def test_gpu_tolerations_reach_gpu_pods_only() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

    def tolerate(spec: Manifest) -> None:
        spec["gpu"]["tolerations"] = [toleration]
        del spec["tts"]["gpu"]
        spec["tts"]["backend"] = "piper"

    children = rendered("gpu-exclusive.yaml", tolerate)
    assert pod(children, "support-agent-llm")["tolerations"] == [toleration]
    assert pod(children, "support-agent-runtime")["tolerations"] == [toleration]
    assert not {"tolerations", "nodeSelector"} & set(pod(children, "support-agent-tts"))
    tts = container(children, "support-agent-tts")
    assert "--vram-cap-gib" not in tts["args"]
    assert env(tts)["PARLEY_TTS_XTTS_DEVICE"] == "cpu"


def test_spec_resources_merge_with_the_gpu_limit() -> None:
    def size(spec: Manifest) -> None:
        spec["llm"]["resources"] = {
            "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": 3},
            "limits": {"memory": "48Gi"},
        }
        spec["runtime"]["resources"] = {"requests": {"cpu": "2"}}

    children = rendered("gpu-exclusive.yaml", size)
    assert container(children, "support-agent-llm")["resources"] == {
        "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": 1},
        "limits": {"memory": "48Gi", "nvidia.com/gpu": 1},
    }
    # A spec's resources replace the default requests; they are not merged with them.
    assert container(children, "support-agent-runtime")["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"nvidia.com/gpu": 1},
    }
    assert container(children, "support-agent-tts")["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"nvidia.com/gpu": 1},
    }


def test_resources_without_requests_get_no_default_requests() -> None:
    def limits_only(spec: Manifest) -> None:
        spec["llm"]["resources"] = {"limits": {"memory": "48Gi"}}

    llm = container(rendered("gpu-exclusive.yaml", limits_only), "support-agent-llm")
    assert llm["resources"] == {"limits": {"memory": "48Gi", "nvidia.com/gpu": 1}}


# -- model weights ---------------------------------------------------------------------------


def mounts(c: Manifest) -> dict[str, Manifest]:
    return {m["name"]: m for m in c["volumeMounts"]}


def volumes(children: list[Manifest], name: str) -> dict[str, Manifest]:
    return {v["name"]: v for v in pod(children, name)["volumes"]}


def test_the_models_claim_is_mounted_read_only_in_every_pod() -> None:
    children = rendered("gpu-exclusive-with-models.yaml")
    for component in ("runtime", "llm", "tts"):
        name = f"offline-agent-{component}"
        assert volumes(children, name)["models"] == {
            "name": "models",
            "persistentVolumeClaim": {"claimName": "voice-models", "readOnly": True},
        }
        assert mounts(container(children, name))["models"] == {
            "name": "models",
            "mountPath": "/models",
            "readOnly": True,
        }


def test_the_models_mount_path_and_read_only_come_from_the_spec() -> None:
    def writable(spec: Manifest) -> None:
        spec["models"] = {"claimName": "weights", "mountPath": "/srv/weights", "readOnly": False}

    children = rendered("gpu-shared.yaml", writable)
    for component in ("runtime", "llm", "tts"):
        name = f"edge-agent-{component}"
        assert volumes(children, name)["models"]["persistentVolumeClaim"] == {
            "claimName": "weights",
            "readOnly": False,
        }
        mount = mounts(container(children, name))["models"]
        assert (mount["mountPath"], mount["readOnly"]) == ("/srv/weights", False)


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu-exclusive.yaml", "gpu-shared.yaml"])
def test_without_spec_models_nothing_is_mounted(name: str) -> None:
    for deployment in (c for c in rendered(name) if c["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert "models" not in {v["name"] for v in spec["volumes"]}
        assert "models" not in mounts(spec["containers"][0])


def test_local_weights_are_handed_to_each_component_as_paths() -> None:
    children = rendered("gpu-exclusive-with-models.yaml")
    runtime = container(children, "offline-agent-runtime")
    assert flag(runtime["args"], "--asr-model") == "/models/faster-whisper-small.en"
    assert flag(runtime["args"], "--llm-model") == "/models/Qwen2.5-7B-Instruct"
    llm = container(children, "offline-agent-llm")
    # vLLM loads the directory and serves it under the name the runtime asks for.
    assert flag(llm["args"], "--model") == "/models/Qwen2.5-7B-Instruct"
    assert flag(llm["args"], "--served-model-name") == "/models/Qwen2.5-7B-Instruct"
    tts = container(children, "offline-agent-tts")
    assert env(tts)["PARLEY_TTS_XTTS_MODEL_DIR"] == "/models/xtts-v2"


def test_xtts_gets_its_model_dir_and_piper_does_not() -> None:
    tts = container(rendered("gpu-shared.yaml"), "edge-agent-tts")
    assert env(tts)["PARLEY_TTS_XTTS_MODEL_DIR"] == "/models/xtts-v2"  # the schema default
    custom = rendered("gpu-shared.yaml", lambda s: s["tts"].update(modelDir="/opt/xtts"))
    assert env(container(custom, "edge-agent-tts"))["PARLEY_TTS_XTTS_MODEL_DIR"] == "/opt/xtts"
    piper = container(rendered("cpu.yaml"), "cpu-agent-tts")
    assert "PARLEY_TTS_XTTS_MODEL_DIR" not in env(piper)


@pytest.mark.parametrize(
    "name", ["cpu.yaml", "gpu-exclusive.yaml", "gpu-exclusive-with-models.yaml"]
)
def test_the_schema_keeps_models_clear_of_the_pods_own_mounts(name: str) -> None:
    for deployment in (c for c in rendered(name) if c["kind"] == "Deployment"):
        c = deployment["spec"]["template"]["spec"]["containers"][0]
        own = {m["mountPath"] for m in c["volumeMounts"] if m["name"] != "models"}
        assert own <= set(POD_MOUNT_PATHS), (
            f"api.POD_MOUNT_PATHS lacks {own - set(POD_MOUNT_PATHS)}"
        )


def test_extra_args_are_appended_and_env_is_merged_sorted() -> None:
    def extras(spec: Manifest) -> None:
        spec["runtime"]["args"] = ["--system-prompt", "Be brief."]
        spec["runtime"]["env"] = [
            {"name": "PARLEY_LLM_MAX_TOKENS", "value": "40"},
            {"name": "PARLEY_TTS_VOICE", "value": "alice"},  # overrides the rendered one
            {"name": "EMPTY"},
        ]
        spec["llm"]["args"] = ["--enable-prefix-caching"]
        spec["llm"]["env"] = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
        spec["tts"]["env"] = [{"name": "PARLEY_TTS_XTTS_MODEL_DIR", "value": "/models/xtts"}]

    children = rendered("gpu-exclusive.yaml", extras)
    runtime = container(children, "support-agent-runtime")
    assert runtime["args"][-2:] == ["--system-prompt", "Be brief."]
    assert runtime["args"][:2] == ["--host", "0.0.0.0"]
    assert runtime["env"] == [
        {"name": "EMPTY"},
        {"name": "PARLEY_ADMIN_TOKENS_FILE", "value": "/var/run/secrets/parley/token"},
        {"name": "PARLEY_LLM_MAX_TOKENS", "value": "40"},
        {"name": "PARLEY_TTS_MODEL", "value": "xtts"},
        {"name": "PARLEY_TTS_VOICE", "value": "alice"},
        {"name": "XDG_CACHE_HOME", "value": "/var/cache/parley"},
    ]
    llm = container(children, "support-agent-llm")
    assert llm["args"][-1] == "--enable-prefix-caching"
    assert env(llm)["HF_HUB_OFFLINE"] == "1"
    tts = container(children, "support-agent-tts")
    assert env(tts)["PARLEY_TTS_XTTS_MODEL_DIR"] == "/models/xtts"
    assert env(tts)["PARLEY_VRAM_CAP_GIB"] == "8"
    for c in (runtime, llm, tts):
        assert [e["name"] for e in c["env"]] == sorted(e["name"] for e in c["env"])


# -- the command lines are the ones the containers understand --------------------------------


def test_the_runtime_command_line_configures_the_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime = container(rendered("gpu-exclusive.yaml"), "support-agent-runtime")
    for name, value in env(runtime).items():
        monkeypatch.setenv(name, value or "")
    # The mounted Secret, here: the rendered variable names the file the settings read.
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")
    assert env(runtime)["PARLEY_ADMIN_TOKENS_FILE"] == "/var/run/secrets/parley/token"
    monkeypatch.setenv("PARLEY_ADMIN_TOKENS_FILE", str(token_file))
    args = build_parser().parse_args([*runtime["command"][1:], *runtime["args"]])
    settings = RuntimeSettings(**_runtime_overrides(args))  # type: ignore[arg-type]
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.llm_url == "http://support-agent-llm.voice.svc:8000/v1"
    assert settings.llm_model == "Qwen/Qwen2.5-7B-Instruct"
    assert settings.tts_url == "http://support-agent-tts.voice.svc:8000/v1"
    assert (settings.tts_model, settings.tts_voice) == ("xtts", "default")
    assert (settings.asr_model, settings.asr_device) == ("small.en", "cuda")
    assert settings.max_sessions == 40
    assert settings.admin_tokens_file == str(token_file)


def test_the_tts_command_line_configures_the_tts_server(monkeypatch: pytest.MonkeyPatch) -> None:
    tts = container(rendered("gpu-exclusive.yaml"), "support-agent-tts")
    for name, value in env(tts).items():
        monkeypatch.setenv(name, value or "")
    args = build_parser().parse_args([*tts["command"][1:], *tts["args"]])
    overrides = {
        n: getattr(args, n)
        for n in ("host", "port", "default_model", "default_voice", "vram_cap_gib")
        if getattr(args, n) is not None
    }
    settings = TTSSettings(**overrides)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert (settings.default_model, settings.default_voice) == ("xtts", "default")
    assert settings.vram_cap_gib == 8.0
    assert settings.xtts_device == "cuda"
    assert settings.xtts_model_dir == "/models/xtts-v2"
    assert TTSSettings().vram_cap_gib == 8.0  # the environment alone carries the cap too


# -- what every object carries ---------------------------------------------------------------

ALL = ["cpu.yaml", "gpu-exclusive.yaml", "gpu-shared.yaml", "gpu-exclusive-with-models.yaml"]


@pytest.mark.parametrize("name", ALL)
def test_every_child_is_owned_labelled_and_namespaced(name: str) -> None:
    vd = voice_deployment(name)
    vd_name = vd.metadata.name
    for child in render(vd, plan_vram(vd.spec)):
        meta = child["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "parley.dev/v1alpha1",
                "kind": "VoiceDeployment",
                "name": vd_name,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        component = meta["name"].removeprefix(f"{vd_name}-")
        assert component in ("runtime", "llm", "tts")
        assert meta["labels"] == {
            "app.kubernetes.io/name": f"parley-{component}",
            "app.kubernetes.io/instance": vd_name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "parley-operator",
            "parley.dev/voicedeployment": vd_name,
        }


@pytest.mark.parametrize("name", ALL)
def test_selectors_pick_their_own_pods_only(name: str) -> None:
    children = rendered(name)
    templates = {
        c["metadata"]["name"]: c["spec"]["template"]["metadata"]["labels"]
        for c in children
        if c["kind"] == "Deployment"
    }
    for child in children:
        if child["kind"] == "Service":
            selector = {"matchLabels": child["spec"]["selector"]}
            assert child["spec"]["ports"][0]["targetPort"] == "http"
        else:
            selector = child["spec"]["selector"]
        for pod_name, pod_labels in templates.items():
            assert matches(selector, pod_labels) == (pod_name == child["metadata"]["name"])
    for deployment in (c for c in children if c["kind"] == "Deployment"):
        assert deployment["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": deployment["metadata"]["labels"]["app.kubernetes.io/name"],
            "app.kubernetes.io/instance": deployment["metadata"]["labels"][
                "app.kubernetes.io/instance"
            ],
        }


def test_service_ports() -> None:
    children = rendered("gpu-exclusive.yaml")
    for name, port in (("runtime", 8080), ("llm", 8000), ("tts", 8000)):
        service = find(children, "Service", f"support-agent-{name}")
        assert service["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ]
        assert container(children, f"support-agent-{name}")["ports"] == [
            {"name": "http", "containerPort": port, "protocol": "TCP"}
        ]


def test_the_runtime_pdb_allows_one_pod_down_at_a_time() -> None:
    pdb = find(rendered("gpu-exclusive.yaml"), "PodDisruptionBudget", "support-agent-runtime")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "IfHealthyBudget"


@pytest.mark.parametrize("name", ALL)
def test_pods_run_unprivileged(name: str) -> None:
    children = rendered(name)
    for deployment in (c for c in children if c["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        c = spec["containers"][0]
        security = c["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        names = {v["name"] for v in spec["volumes"]}
        assert {m["name"] for m in c["volumeMounts"]} == names
        # emptyDirs, the model weights' claim (read-only) where spec.models asks for it, and
        # the runtime's admin token (read-only, readable by its group only).
        admin_token = {
            "name": "admin-token",
            "secret": {
                "secretName": f"{deployment['metadata']['name']}-admin",
                "defaultMode": 0o440,
            },
        }
        assert all(
            "emptyDir" in v
            or v == {"name": "models", "persistentVolumeClaim": ANY}
            or (c["name"] == "runtime" and v == admin_token)
            for v in spec["volumes"]
        )
        paths = {m["mountPath"] for m in c["volumeMounts"] if m["name"] != "models"}
        if c["name"] == "llm":
            # vLLM writes kernel and compilation caches: a writable root, $HOME on a volume.
            assert security["readOnlyRootFilesystem"] is False
            assert paths == {env(c)["HOME"], "/dev/shm"}
        elif c["name"] == "runtime":
            assert security["readOnlyRootFilesystem"] is True
            assert paths == {"/tmp", env(c)["XDG_CACHE_HOME"], "/var/run/secrets/parley"}
            token = next(m for m in c["volumeMounts"] if m["name"] == "admin-token")
            assert token["readOnly"] is True
        else:
            assert security["readOnlyRootFilesystem"] is True
            assert paths == {"/tmp", env(c)["XDG_CACHE_HOME"]}


def test_the_runtime_admin_token_secret_is_owned_and_holds_the_token() -> None:
    vd = voice_deployment("cpu.yaml")
    secret = runtime_admin_secret(vd, "s3cr3t-token")
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    meta = secret["metadata"]
    assert (meta["name"], meta["namespace"]) == ("cpu-agent-runtime-admin", NAMESPACE)
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("VoiceDeployment", UID, True)
    assert meta["labels"]["app.kubernetes.io/component"] == "runtime"
    assert secret["data"] == {"token": "czNjcjN0LXRva2Vu"}  # base64, as the API stores it
    assert admin_token_of(secret) == "s3cr3t-token"
    assert admin_token_of({"data": {}}) is None
    assert runtime_admin_secret(vd, "s3cr3t-token") == secret  # pure: same input, same object
    # Not a child the reconcile applies (that would replace the token): created once.
    assert "Secret" not in {c["kind"] for c in rendered("cpu.yaml")}
    # The runtime pods mount that Secret.
    deployment = find(rendered("cpu.yaml"), "Deployment", "cpu-agent-runtime")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "admin-token", "secret": ANY} in volumes
    assert (
        next(v for v in volumes if v["name"] == "admin-token")["secret"]["secretName"]
        == (meta["name"])
    )


@pytest.mark.parametrize("name", ALL)
def test_probes(name: str) -> None:
    children = rendered(name)
    for deployment in (c for c in children if c["kind"] == "Deployment"):
        c = deployment["spec"]["template"]["spec"]["containers"][0]
        ready, live = ("/health", "/health") if c["name"] == "llm" else ("/readyz", "/healthz")
        assert c["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": live, "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": live, "port": "http"}
        startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        assert startup >= {"runtime": 300, "tts": 600, "llm": 1200}[c["name"]]
        # A model still loading is progress, not a stalled rollout.
        assert deployment["spec"]["progressDeadlineSeconds"] > startup


# -- determinism and refusals ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_rendering_is_deterministic_and_leaves_its_input_alone(name: str) -> None:
    def tolerate(spec: Manifest) -> None:
        if "gpu" in spec:
            spec["gpu"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]

    vd = voice_deployment(name, tolerate)
    before = copy.deepcopy(vd)
    plan = plan_vram(vd.spec)
    first, second = render(vd, plan), render(copy.deepcopy(vd), plan_vram(vd.spec))
    assert first == second
    assert json.dumps(first) == json.dumps(second)  # same key order too
    assert vd == before
    for child in first:  # nothing shared with the input: mutating output cannot corrupt it
        child["metadata"]["labels"]["x"] = "y"
        if child["kind"] == "Deployment":
            pod_spec = child["spec"]["template"]["spec"]
            pod_spec["containers"][0]["args"].append("--x")
            pod_spec["containers"][0]["resources"].setdefault("limits", {})["x"] = 1
            for toleration in pod_spec.get("tolerations", []):
                toleration["key"] = "changed"
    assert vd == before


def test_a_plan_that_does_not_fit_is_refused() -> None:
    vd = voice_deployment("gpu-shared.yaml")
    plan = plan_vram(vd.spec, node_gpu_memory_gib=16)
    assert not plan.fits
    with pytest.raises(ValueError, match="does not fit"):
        render(vd, plan)


@pytest.mark.parametrize("bad", ["a" * 56, "voice.agent", "9lives"])
def test_names_that_cannot_name_services_are_refused(bad: str) -> None:
    vd = voice_deployment("cpu.yaml", vd_name=bad)
    with pytest.raises(ValueError, match="DNS-1035"):
        render(vd, plan_vram(vd.spec))
    vd = voice_deployment("cpu.yaml", vd_name="a" * 55)
    assert render(vd, plan_vram(vd.spec))


# -- the real apiserver ----------------------------------------------------------------------

DRY_RUN_NAMESPACE = "render-tests"


def kubectl(plane: ControlPlane, *args: str, input: str) -> subprocess.CompletedProcess[str]:
    """kubectl with stderr kept (`ControlPlane.kubectl` drops it on success: warnings)."""
    return subprocess.run(
        [str(plane.bin / "kubectl"), f"--kubeconfig={plane.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dry_run(plane: ControlPlane, manifests: list[Manifest]) -> subprocess.CompletedProcess[str]:
    return kubectl(
        plane,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=parley-operator",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )


@pytest.mark.k8s
def test_rendered_children_pass_a_server_side_dry_run(control_plane: ControlPlane) -> None:
    plane = control_plane
    plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "voicedeployment.yaml"))
    plane.kubectl(
        "wait", "--for=condition=Established", "crd/voicedeployments.parley.dev", "--timeout=30s"
    )
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": DRY_RUN_NAMESPACE,
            # Pod Security admission checks workload templates and warns about violations.
            "labels": {
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/warn-version": "latest",
            },
        },
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    try:
        for name in ALL:
            manifest = example(name)
            vd_name = manifest["metadata"]["name"]
            plane.kubectl("create", "-n", DRY_RUN_NAMESPACE, "-f", "-", input=json.dumps(manifest))
            stored = json.loads(
                plane.kubectl("get", "vd", vd_name, "-n", DRY_RUN_NAMESPACE, "-o", "json")
            )
            # The models' defaults, which the pure tests use, are what the apiserver fills in.
            assert stored["spec"] == with_defaults(manifest["spec"])
            vd = VoiceDeployment.model_validate(stored)
            children = render(vd, plan_vram(vd.spec))
            result = dry_run(plane, children)
            assert result.returncode == 0, f"{name}: {result.stderr}"
            assert "Warning" not in result.stderr, f"{name}: {result.stderr}"
            applied = result.stdout.strip().splitlines()
            assert len(applied) == len(children), result.stdout
            assert all(line.endswith("serverside-applied (server dry run)") for line in applied)

        # The Pod Security check above is live: an unconfined pod is warned about.
        unsafe = copy.deepcopy(find(children, "Deployment", f"{vd_name}-tts"))
        del unsafe["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        result = dry_run(plane, [unsafe])
        assert result.returncode == 0, result.stderr
        assert "would violate PodSecurity" in result.stderr
    finally:
        plane.kubectl("delete", "namespace", DRY_RUN_NAMESPACE, "--wait=true", "--timeout=90s")
