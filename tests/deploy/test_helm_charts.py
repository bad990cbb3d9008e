"""The Helm charts: helm lint, helm template, Kubernetes schema validation, and what the manifests must hold."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from server.settings import Settings
from tests.deploy.conftest import (
    KUBERNETES_VERSION,
    PRODUCTION_VALUES,
    REPO,
    SIDECAR_CHART,
    TRAINING_CHART,
    by_kind,
)

TRAINING_REQUIRED = {"runName": "see-run-1", "models.existingClaim": "base-models"}
SECRET_SETTINGS = {"api_keys"}  # never in values' config: keys come from a Secret (apiKeys)


def setting_names() -> dict[str, str]:
    """Every server setting as `config` path -> env name: model -> SEE_MODEL, ledger.url -> SEE_LEDGER__URL."""
    names = {}
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            for sub in field.annotation.model_fields:
                names[f"{name}.{sub}"] = f"SEE_{name.upper()}__{sub.upper()}"
        elif name not in SECRET_SETTINGS:
            names[name] = f"SEE_{name.upper()}"
    return names


def validate_manifests(documents: list[dict]) -> list[str]:
    """Schema-validate every built-in kind strictly; return the kinds that have no schema (CRDs)."""
    unknown = []
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(doc["kind"])
    return unknown


@pytest.mark.parametrize("values", [[], [PRODUCTION_VALUES]], ids=["default", "production"])
def test_the_sidecar_chart_lints_renders_and_validates(charts, values):
    args = ["lint", str(SIDECAR_CHART), "--strict"] + [a for v in values for a in ("-f", str(v))]
    charts.run(*args)
    documents = charts.template(SIDECAR_CHART, *values)
    kinds = {doc["kind"] for doc in documents}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "ServiceAccount"} <= kinds
    assert validate_manifests(documents) == (["ServiceMonitor"] if values else [])
    if values:
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"} <= kinds
        monitor = by_kind(documents)["ServiceMonitor"]
        assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


def test_probes_respect_model_load_time(charts):
    container = by_kind(charts.template(SIDECAR_CHART))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    startup, live, ready = container["startupProbe"], container["livenessProbe"], container["readinessProbe"]
    assert startup["httpGet"]["path"] == "/ready" and ready["httpGet"]["path"] == "/ready"
    assert live["httpGet"]["path"] == "/health"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 1800
    slow = charts.template(SIDECAR_CHART, sets={"probes.startupBudgetSeconds": 3600})
    probe = by_kind(slow)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] == 3600


@pytest.mark.parametrize("values", [[], [PRODUCTION_VALUES]], ids=["default", "production"])
def test_pods_run_non_root_on_a_read_only_root_without_capabilities(charts, values):
    pod = by_kind(charts.template(SIDECAR_CHART, *values))["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/see-sidecar", "/tmp", "/dev/shm"} <= mounts  # every place the server writes
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_values_config_maps_one_to_one_onto_the_server_settings():
    config = yaml.safe_load((SIDECAR_CHART / "values.yaml").read_text())["config"]
    paths = set()
    for key, value in config.items():
        paths |= {f"{key}.{sub}" for sub in value} if isinstance(value, dict) else {key}
    assert paths == set(setting_names())


def test_every_setting_reaches_the_server_through_the_configmap(charts, tmp_path, monkeypatch):
    """Set every config value, render, and let the server's own Settings read the ConfigMap as its env."""
    (tmp_path / "keys").write_text("k" * 20 + "\n")
    (tmp_path / "calibration.json").write_text("{}")
    (tmp_path / "policy.json").write_text("{}")
    samples = {
        "model": str(tmp_path), "served_model_name": "served", "cache_dir": str(tmp_path), "host": "0.0.0.0",
        "engine_url": "http://vllm:8000", "answer_model": str(tmp_path), "answer_engine_url": "http://vllm-base:8000",
        "port": 8123, "log_level": "debug", "default_max_tokens": 77, "default_temperature": 0.3,
        "default_top_p": 0.7, "max_prompt_tokens": 999, "max_answer_tokens": 555,
        "api_key_file": str(tmp_path / "keys"), "protect_metrics": True, "max_body_bytes": 4096, "body_timeout_s": 12.5,
        "max_pending_requests": 9, "max_pending_tokens": 4321, "max_pending_feedback": 12, "retry_after_s": 7,
        "allow_looser_thresholds": True,
        "request_timeout_s": 33.5, "log_text": True,
        "device": "cpu", "max_model_len": 2048, "dtype": "bfloat16", "enforce_eager": True,
        "enable_prefix_caching": False, "kv_block_size": 64, "readout_requests": "per_step",
        "cpu_kv_cache_gib": 3.5, "cpu_threads_bind": "0-1",
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "warmup": False,
        "calibration_file": str(tmp_path / "calibration.json"), "decide_on_calibrated": False,
        "certified_policy_file": str(tmp_path / "policy.json"), "use_certified_policy": False,
        "policy.escalate_below_quality": 0.2, "policy.review_below_quality": 0.4, "policy.low_score": 2,
        "policy.escalate_low_score_prob": 0.6, "policy.review_low_score_prob": 0.3,
        "policy.review_above_entropy": 2.1, "policy.review_below_label_mass": 0.4,
        "policy.unavailable_action": "review", "policy.flagged_action": "escalate", "ledger.enabled": True,
        "ledger.url": "postgresql://h/db",
        "ledger.store_text": True, "ledger.retention_days": 30, "ledger.write_timeout_s": 2.5,
        "ledger.feedback_timeout_s": 4.5, "ledger.max_queued_writes": 99, "ledger.required": True,
        "shadow.rate": 0.25, "shadow.judge_url": "https://judge/v1", "shadow.judge_model": "j",
        "shadow.judge_api_key_env": "J_KEY", "shadow.queue_size": 11, "shadow.concurrency": 3,
        "shadow.max_attempts": 4, "shadow.timeout_s": 12.0, "shadow.backoff_base_s": 0.5,
        "monitor.window": 300, "monitor.min_count": 60, "monitor.drift_threshold": 0.9, "monitor.drift_z": 4.0,
        "monitor.judge": "shadow:j", "monitor.refresh_interval_s": 15.0,
    }  # fmt: skip
    assert set(samples) == set(setting_names())
    alone = {"answer_engine_url"}  # excludes answer_model (the chart and Settings refuse both): rendered apart
    sets = {f"config.{k}": v for k, v in samples.items() if k not in alone} | {"judgeKey.value": "secret-judge-key"}
    data = by_kind(charts.template(SIDECAR_CHART, sets=sets))["ConfigMap"]["data"]
    sets = {k: v for k, v in sets.items() if k != "config.answer_model"} | {f"config.{k}": samples[k] for k in alone}
    apart = by_kind(charts.template(SIDECAR_CHART, sets=sets))["ConfigMap"]["data"]
    assert set(data) | set(apart) == set(setting_names().values())
    for name in list(__import__("os").environ):
        if name.startswith("SEE_"):
            monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for path, expected in samples.items():
        if path in alone:
            continue
        value = settings
        for part in path.split("."):
            value = getattr(value, part)
        paths = {"model", "cache_dir", "api_key_file", "calibration_file", "certified_policy_file", "answer_model"}
        value = str(value) if path in paths else value
        assert value == expected, path
    monkeypatch.delenv("SEE_ANSWER_MODEL")
    for name in alone:
        monkeypatch.setenv(setting_names()[name], apart[setting_names()[name]])
        assert getattr(Settings(), name) == samples[name]


def test_secrets_never_land_in_a_configmap(charts):
    documents = charts.template(
        SIDECAR_CHART,
        sets={
            "apiKeys.keys": ["key-one-0123456789abcdef", "key-two-0123456789abcdef"],
            "judgeKey.value": "judge-secret-value-123",
            "ledger.existingSecret": "ledger-dsn",
            "config.ledger.url": "postgresql://user:password-in-values@db/see",
        },
    )
    kinds = by_kind(documents)
    config_text = yaml.safe_dump(kinds["ConfigMap"])
    for secret in ("key-one-0123456789abcdef", "judge-secret-value-123", "password-in-values"):
        assert secret not in config_text
    assert "SEE_LEDGER__URL" not in kinds["ConfigMap"]["data"]
    secret = kinds["Secret"]["stringData"]
    assert "key-one-0123456789abcdef" in secret["api-keys"] and secret["judge-api-key"] == "judge-secret-value-123"
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SEE_LEDGER__URL"]["valueFrom"]["secretKeyRef"] == {"name": "ledger-dsn", "key": "dsn"}
    assert env["SEE_SHADOW_JUDGE_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "judge-api-key"
    assert kinds["ConfigMap"]["data"]["SEE_API_KEY_FILE"] == "/etc/see-sidecar/api-keys/api-keys"
    assert all("value" not in e for e in env.values() if e["name"].startswith("SEE_")), env


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"replicaCount": 3}, "cannot share one SQLite ledger"),
        ({"replicaCount": 2, "ledger.existingSecret": "dsn"}, "ReadWriteOnce"),
        ({"config.shadow.rate": 0.1}, "needs judgeKey"),
        ({"image.flavor": "tpu"}, "flavor"),
        ({"config.not_a_setting": 1}, "not_a_setting"),
        ({"apiKeys.keys": ["short"]}, "apiKeys"),
        ({"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds"),
        ({"config.answer_model": "SmolLM2-135M-Instruct", "config.answer_engine_url": "http://v:8000"}, "not both"),
    ],
    ids=[
        "sqlite-replicas",
        "rwo-replicas",
        "shadow-without-key",
        "flavor",
        "unknown-setting",
        "weak-key",
        "grace",
        "two-answer-engines",
    ],  # fmt: skip
)
def test_the_chart_refuses_values_that_cannot_work(charts, sets, message):
    assert message in charts.template_error(SIDECAR_CHART, sets)


def test_by_default_the_api_needs_a_generated_key_and_pods_drain_before_stopping(charts):
    kinds = by_kind(charts.template(SIDECAR_CHART))
    generated = kinds["Secret"]["stringData"]["api-keys"].strip()
    assert len(generated) == 40 and generated.isalnum()
    assert kinds["ConfigMap"]["data"]["SEE_API_KEY_FILE"] == "/etc/see-sidecar/api-keys/api-keys"
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert any(volume["name"] == "api-keys" for volume in pod["volumes"])
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["terminationGracePeriodSeconds"] > 10 + 30
    assert by_kind(charts.template(SIDECAR_CHART))["Secret"]["stringData"]["api-keys"].strip() != generated

    opened = by_kind(charts.template(SIDECAR_CHART, sets={"apiKeys.generate": False}))
    assert "Secret" not in opened and "SEE_API_KEY_FILE" not in opened["ConfigMap"]["data"]


def test_the_training_job_resumes_from_its_volume_with_the_judge_key_from_a_secret(charts):
    charts.run(
        "lint",
        str(TRAINING_CHART),
        "--strict",
        *[a for k, v in TRAINING_REQUIRED.items() for a in ("--set", f"{k}={v}")],
    )
    sets = {**TRAINING_REQUIRED, "judgeKey.existingSecret": "judge", "gpus": 4,
            "overrides": ["run.base_model=/models/Qwen3-4B-Base"]}  # fmt: skip
    documents = charts.template(TRAINING_CHART, sets=sets)
    assert validate_manifests(documents) == []
    job = by_kind(documents)["Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 1
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:4] == ["accelerate", "launch", "--num_processes", "4"]
    assert command[command.index("--run-dir") + 1] == "/runs/see-run-1"
    assert "run.base_model=/models/Qwen3-4B-Base" in command
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    env = {e["name"]: e for e in container["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "judge", "key": "api-key"}
    assert container["securityContext"]["readOnlyRootFilesystem"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["runs"] == by_kind(documents)["PersistentVolumeClaim"]["metadata"]["name"]
    assert claims["models"] == "base-models"
    assert "runName" in charts.template_error(TRAINING_CHART, {"models.existingClaim": "m"})


def test_the_sidecar_pattern_example_is_a_valid_pod_with_the_sidecar_on_localhost():
    (deployment,) = [
        d for d in yaml.safe_load_all((REPO / "deploy/examples/orchestrator-with-sidecar.yaml").read_text()) if d
    ]
    assert validate_manifests([deployment]) == []
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"orchestrator", "see-sidecar"}
    sidecar_env = {e["name"]: e["value"] for e in containers["see-sidecar"]["env"]}
    assert sidecar_env["SEE_HOST"] == "127.0.0.1"
    assert {"name": "SEE_SIDECAR_URL", "value": "http://127.0.0.1:8000"} in containers["orchestrator"]["env"]


def test_default_egress_is_dns_and_public_https_only(charts):
    """A fresh install must not let a compromised pod reach the cluster's services or the cloud metadata
    endpoint; the default model (PyPI) and a hosted judge still work over HTTPS."""
    policy = by_kind(charts.template(SIDECAR_CHART))["NetworkPolicy"]["spec"]
    assert "Egress" in policy["policyTypes"]
    dns, https = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]
    block = https["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    metadata, cluster = ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("10.96.0.10")
    for address in (metadata, cluster):
        assert any(address in ipaddress.ip_network(cidr) for cidr in block["except"]), address
    opened = by_kind(charts.template(SIDECAR_CHART, sets={"networkPolicy.egress": []}))["NetworkPolicy"]["spec"]
    assert opened["policyTypes"] == ["Ingress"] and "egress" not in opened


def test_the_plugin_shape_runs_vllms_server_with_the_plugin_on_the_provisioned_default(charts):
    """shape=plugin: vLLM's own server (module form) with VLLM_PLUGINS, the one API key as VLLM_API_KEY, probes on
    vLLM's /health, and an init container that builds the default where vLLM is told to find it."""
    from selfeval.models import DEFAULT_MODEL_NAME, default_model_dir
    from server.vllm_plugin import PLUGIN_NAME

    documents = charts.template(SIDECAR_CHART, sets={"shape": "plugin", "plugin.vllmArgs": ["--max-model-len", "4096"]})
    assert validate_manifests(documents) == []
    kinds = by_kind(documents)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert init["command"] == ["see", "model", "prepare"] and init["image"] == container["image"]
    cache_dir = kinds["ConfigMap"]["data"]["SEE_CACHE_DIR"]
    assert {"name": "data", "mountPath": "/var/lib/see-sidecar"} in init["volumeMounts"]
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    args = container["args"]
    model = args[args.index("--model") + 1]
    assert model == str(default_model_dir(Path(cache_dir)))  # where `see model prepare` builds it
    assert args[args.index("--served-model-name") + 1] == DEFAULT_MODEL_NAME
    assert args[args.index("--port") + 1] == str(container["ports"][0]["containerPort"])
    assert args[-2:] == ["--max-model-len", "4096"]
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_PLUGINS"]["value"] == PLUGIN_NAME
    key_ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    key = kinds["Secret"]["stringData"][key_ref["key"]]
    assert len(key) == 40 and key.isalnum()  # vLLM compares it byte for byte: no line break
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"  # vLLM's server has no /ready

    mine = by_kind(charts.template(SIDECAR_CHART, sets={"shape": "plugin", "config.model": "/var/lib/see-sidecar/m/x"}))
    pod = mine["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    args = pod["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "/var/lib/see-sidecar/m/x" and "--served-model-name" in args

    sidecar = by_kind(charts.template(SIDECAR_CHART))["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in sidecar and "command" not in sidecar["containers"][0]
    assert sidecar["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_the_charts_default_model_name_is_the_projects():
    from selfeval.models import DEFAULT_MODEL_NAME

    helpers = (SIDECAR_CHART / "templates" / "_helpers.tpl").read_text()
    assert f'define "see-sidecar.defaultModelName" -}}}}{DEFAULT_MODEL_NAME}{{{{' in helpers


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"config.max_model_len": 4096}, "--max-model-len in plugin.vllmArgs"),
        ({"config.engine_url": "http://vllm:8000"}, "config.engine_url"),
        ({"config.answer_model": "SmolLM2-135M-Instruct"}, "split mode"),
        ({"config.max_pending_requests": 8}, "--max-num-seqs"),
        ({"apiKeys.keys": ["key-one-0123456789abcdef", "key-two-0123456789abcdef"]}, "one API key"),
        ({"shape": "both"}, "shape"),
        (
            {"autoscaling.enabled": True, "ledger.existingSecret": "dsn", "modelCache.accessModes": ["ReadOnlyMany"]},
            "vllm:num_requests_waiting",
        ),
    ],
    ids=["engine-setting", "remote", "split", "admission", "two-keys", "unknown-shape", "autoscaling-metric"],
)
def test_the_plugin_shape_refuses_settings_vllm_does_not_read(charts, sets, message):
    shape = {} if "shape" in sets else {"shape": "plugin"}
    assert message in charts.template_error(SIDECAR_CHART, {**shape, **sets})
