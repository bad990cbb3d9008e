"""The fleet examples: the plugin image under vLLM production-stack and under KServe / llm-d.

Their charts and CRDs are not on this machine's registries, so what can be checked offline is: every field we use
exists in the version we wrote against (recorded below, read from production-stack chart 0.1.12's
values.schema.json and KServe's LLMInferenceService CRD, 2026-12), every Kubernetes object and pod fragment is
valid against Kubernetes' own schemas, and the paths, names and images agree with this project's.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from selfeval.models import default_model_dir
from server.vllm_plugin import PLUGIN_NAME
from tests.deploy.conftest import REPO, SIDECAR_CHART
from tests.deploy.test_helm_charts import validate_manifests

EXAMPLES = REPO / "deploy" / "examples"
# production-stack chart 0.1.12: servingEngineSpec.modelSpec[] properties (its values.schema.json)
PRODUCTION_STACK_MODEL_SPEC = {
    "affinity", "annotations", "enableLoRA", "enabled", "env", "envFromSecret", "extraVolumeMounts",
    "extraVolumes", "hf_token", "imagePullSecret", "initContainer", "keda", "labels", "limitCPU", "limitGPUCores",
    "limitGPUMem", "limitGPUMemPercentage", "limitMemory", "lmcacheConfig", "modelRevision", "modelURL", "name",
    "nodeName", "nodeSelectorTerms", "podAnnotations", "podLabels", "priorityClassName", "pvcAccessMode",
    "pvcAnnotations", "pvcLabels", "pvcMatchLabels", "pvcStorage", "raySpec", "replicaCount", "repository",
    "requestCPU", "requestGPU", "requestGPUCores", "requestGPUMem", "requestGPUMemPercentage", "requestGPUType",
    "requestMemory", "resources", "runtimeClassName", "serviceAccountName", "serviceAnnotations", "shmSize",
    "storageClass", "tag", "tolerations", "tolerationsPolicy", "vllmConfig",
}  # fmt: skip
PRODUCTION_STACK_MOUNT = "/data"  # where its templates mount a modelSpec's PVC (engine and init container)
# KServe LLMInferenceService v1alpha2 (its CRD): spec, spec.model and spec.router properties
LLMISVC_SPEC = {
    "annotations", "baseRefs", "kvCacheOffloading", "labels", "model", "parallelism", "prefill", "replicas",
    "rolloutStrategy", "router", "scaling", "storageInitializer", "template", "tracing", "worker",
}  # fmt: skip
LLMISVC_MODEL = {"confidential", "lora", "name", "uri"}
LLMISVC_ROUTER = {"gateway", "ingress", "route", "scheduler"}


def chart_image() -> str:
    chart = yaml.safe_load((SIDECAR_CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((SIDECAR_CHART / "values.yaml").read_text())
    return f"{values['image']['repository']}:{chart['appVersion']}-gpu"


def as_pod(containers: list[dict], init_containers: list[dict] | None = None) -> dict:
    spec = {"containers": containers} | ({"initContainers": init_containers} if init_containers else {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "example"}, "spec": spec}


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def test_production_stack_values_run_the_plugin_image_on_the_checkpoint_its_init_container_builds():
    values = yaml.safe_load((EXAMPLES / "production-stack-values.yaml").read_text())
    (spec,) = values["servingEngineSpec"]["modelSpec"]
    assert set(spec) <= PRODUCTION_STACK_MODEL_SPEC, set(spec) - PRODUCTION_STACK_MODEL_SPEC
    image = f"{spec['repository']}:{spec['tag']}"
    assert image == chart_image() == spec["initContainer"]["image"]
    init = {k: spec["initContainer"][k] for k in ("name", "image", "command", "env")}
    engine = {"name": "vllm", "image": image, "env": spec["env"]}
    assert validate_manifests([as_pod([engine], [init])]) == []

    assert env_of(engine)["VLLM_PLUGINS"]["value"] == PLUGIN_NAME
    assert init["command"] == ["see", "model", "prepare"] and spec["initContainer"]["mountPvcStorage"]
    cache_dir = Path(env_of(init)["SEE_CACHE_DIR"]["value"])
    assert cache_dir == Path(PRODUCTION_STACK_MOUNT)
    assert Path(spec["modelURL"]) == default_model_dir(cache_dir)  # where `see model prepare` builds it
    assert spec["replicaCount"] > 1 and spec["pvcAccessMode"] == ["ReadWriteMany"]
    assert values["routerSpec"]["vllmApiKey"] == values["servingEngineSpec"]["vllmApiKey"]


def test_the_kserve_service_serves_the_checkpoint_the_job_builds_with_the_plugin():
    documents = [d for d in yaml.safe_load_all((EXAMPLES / "kserve-llminferenceservice.yaml").read_text()) if d]
    kinds = {doc["kind"]: doc for doc in documents}
    assert set(kinds) == {"PersistentVolumeClaim", "Job", "LLMInferenceService"}
    assert validate_manifests(documents) == ["LLMInferenceService"]  # a CRD: checked field by field below

    service = kinds["LLMInferenceService"]
    assert service["apiVersion"] == "serving.kserve.io/v1alpha2"
    spec = service["spec"]
    assert set(spec) <= LLMISVC_SPEC and set(spec["model"]) <= LLMISVC_MODEL and set(spec["router"]) <= LLMISVC_ROUTER
    (main,) = spec["template"]["containers"]
    assert main["name"] == "main" and main["image"] == chart_image()  # KServe merges it into its vLLM template
    assert validate_manifests([as_pod(spec["template"]["containers"])]) == []
    assert env_of(main)["VLLM_PLUGINS"]["value"] == PLUGIN_NAME

    job = kinds["Job"]["spec"]["template"]["spec"]
    (prepare,) = job["containers"]
    assert prepare["image"] == main["image"] and prepare["command"] == ["see", "model", "prepare"]
    cache_dir = Path(env_of(prepare)["SEE_CACHE_DIR"]["value"])
    (mount,) = [m for m in prepare["volumeMounts"] if Path(m["mountPath"]) == cache_dir]
    (volume,) = [v for v in job["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    built = default_model_dir(cache_dir).relative_to(cache_dir)
    assert spec["model"]["uri"] == f"pvc://{claim}/{built}"
