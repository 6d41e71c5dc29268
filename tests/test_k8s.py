"""Kubernetes manifests (k8s/), checked offline: no cluster, no network, no Helm.

- The kustomize overlays `local` and `prod` are rendered with `kubectl kustomize` and every
  object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
  unknown fields are errors); then the wiring is asserted: Secrets, Service selectors and
  ports, the URLs that MLflow, Flyte and task pods use, GPU scheduling, pinned images.
- The Flyte Helm values (k8s/base/flyte/values.yaml + one file per overlay) are checked
  field by field against the rendered base (the chart itself would need the network).
- The operator kustomizations (k8s/operators/) point at remote manifests: their structure
  and version pins are asserted, they are never rendered.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
NAMESPACE = "deepresearch"
OVERLAYS = ("local", "prod")
# The oldest Kubernetes minor the manifests must be valid for (kubernetes-validate ships
# schemas for 1.28 and later).
K8S_VERSION = "1.30"
FLYTE_CHART_VERSION = "v1.16.0"

KUBECTL = shutil.which("kubectl")
requires_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed: it renders the kustomize overlays (kubectl kustomize); "
    "install it to run the manifest tests",
)

# Secrets the workloads read; the base generates placeholders, prod expects them to exist.
SECRETS = {
    "postgres-credentials": {"username", "password"},
    "minio-root-credentials": {"rootUser", "rootPassword"},
    "s3-credentials": {"accessKeyId", "secretAccessKey"},
}
BUCKETS = {"mlflow-artifacts", "flyte-data", "deepresearch-data"}
GPU_TEMPLATE = "deepresearch-gpu"
DEFAULT_TEMPLATE = "deepresearch-default"
CLUSTER_SCOPED = {"Namespace"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "PodTemplate"}


# --------------------------------------------------------------------------- helpers


def _kustomize_version() -> str:
    out = subprocess.run(
        [KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
    )
    return json.loads(out.stdout or "{}").get("kustomizeVersion", "unknown")


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        version = _kustomize_version()
        pytest.fail(
            f"`kubectl kustomize k8s/overlays/{overlay}` failed (kubectl's kustomize: {version}; these "
            f"overlays need kustomize >= v5, i.e. kubectl >= 1.27):\n{proc.stderr}"
        )
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def objects(overlay: str, kind: str | None = None) -> list[dict]:
    return [o for o in render(overlay) if kind is None or o["kind"] == kind]


def get(overlay: str, kind: str, name: str) -> dict:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "PodTemplate":
        return obj["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    tmpl = obj["template"] if obj["kind"] == "PodTemplate" else obj["spec"]["template"]
    return tmpl.get("metadata", {}).get("labels", {})


def containers(obj: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(obj)
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def container(obj: dict, name: str) -> dict:
    (c,) = [c for c in pod_spec(obj)["containers"] if c["name"] == name]
    return c


def env_map(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def secret_ref(env_entry: dict) -> tuple[str, str]:
    ref = env_entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def service_url(overlay: str, name: str, port_name: str, scheme: str = "http") -> str:
    svc = get(overlay, "Service", name)
    (port,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == port_name]
    return f"{scheme}://{name}.{svc['metadata']['namespace']}.svc.cluster.local:{port}"


def mem_bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(q))
    assert m, q
    return float(m.group(1)) * units.get(m.group(2), 1)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@functools.cache
def base_kustomization() -> dict:
    return load_yaml(K8S / "base" / "kustomization.yaml")


def generator_literals(name: str) -> dict[str, str]:
    (gen,) = [g for g in base_kustomization()["secretGenerator"] if g["name"] == name]
    return dict(lit.split("=", 1) for lit in gen["literals"])


# --------------------------------------------------------------------------- schema validation


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schema(overlay):
    docs = render(overlay)
    assert len(docs) >= 12
    errors = []
    for obj in docs:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # No custom resources are expected in the overlays (operators and Flyte live apart).
            errors.append(f"{obj['apiVersion']} {obj['kind']}/{obj['metadata']['name']}: not a built-in kind")
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)


@requires_kubectl
def test_the_schema_validation_is_not_vacuous():
    mlflow = copy.deepcopy(get("local", "Deployment", "mlflow"))
    container(mlflow, "mlflow")["imagePullPolcy"] = "Always"  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(mlflow, K8S_VERSION, strict=True)
    svc = copy.deepcopy(get("local", "Service", "mlflow"))
    svc["spec"]["ports"][0]["port"] = "5000"  # wrong type
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, K8S_VERSION, strict=True)


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_expected_objects_are_rendered(overlay):
    names = {(o["kind"], o["metadata"]["name"]) for o in render(overlay)}
    for expected in [
        ("Namespace", NAMESPACE),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("Service", "postgres-headless"),
        ("Deployment", "minio"),
        ("Service", "minio"),
        ("PersistentVolumeClaim", "minio-data"),
        ("Job", "minio-buckets"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("PodTemplate", DEFAULT_TEMPLATE),
        ("PodTemplate", GPU_TEMPLATE),
    ]:
        assert expected in names, f"{overlay}: {expected} missing"
    assert any(k == "ConfigMap" and n.startswith("postgres-initdb") for k, n in names)


# --------------------------------------------------------------------------- namespace, images, references


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_in_the_deepresearch_namespace(overlay):
    for obj in render(overlay):
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert obj["kind"] == "Namespace" and meta["name"] == NAMESPACE
            assert "namespace" not in meta
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == NAMESPACE, (
            f"{obj['kind']}/{meta['name']}"
        )


def _image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False  # no tag = latest
    tag = last.rsplit(":", 1)[1]
    return tag != "latest" and not tag.startswith("latest-") and tag not in {"main", "master", "nightly"}


def test_image_pin_rule():
    assert _image_is_pinned("postgres:16.9")
    assert _image_is_pinned("localhost:5000/x@sha256:" + "0" * 64)
    assert not _image_is_pinned("localhost:5000/postgres")
    assert not _image_is_pinned("ghcr.io/mlflow/mlflow:latest")
    assert not _image_is_pinned("ghcr.io/mlflow/mlflow:latest-full")


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay):
    images = [
        (o["kind"], o["metadata"]["name"], c["image"])
        for o in render(overlay)
        if o["kind"] in WORKLOAD_KINDS
        for c in containers(o)
    ]
    assert len(images) >= 7
    unpinned = [i for i in images if not _image_is_pinned(i[2])]
    assert not unpinned, unpinned
    by_name = {(k, n): img for k, n, img in images}
    assert re.fullmatch(r"ghcr\.io/mlflow/mlflow:v3\.\d+\.\d+(-full)?", by_name[("Deployment", "mlflow")])
    assert by_name[("Job", "minio-buckets")].startswith("minio/mc:RELEASE.")
    assert by_name[("Deployment", "minio")].startswith("minio/minio:RELEASE.")
    assert re.fullmatch(r"postgres:\d+\.\d+", by_name[("StatefulSet", "postgres")])


def _secret_refs(obj: dict) -> set[tuple[str, str | None]]:
    """(secret name, key) pairs a workload reads (key None = the whole Secret)."""
    refs = set()
    spec = pod_spec(obj)
    for c in containers(obj):
        for e in c.get("env", []):
            if "secretKeyRef" in e.get("valueFrom", {}):
                refs.add(secret_ref(e))
        for ef in c.get("envFrom", []):
            if "secretRef" in ef:
                refs.add((ef["secretRef"]["name"], None))
    for v in spec.get("volumes", []):
        if "secret" in v:
            refs.add((v["secret"]["secretName"], None))
    return refs


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_and_configmap_references_resolve(overlay):
    secrets = {
        s["metadata"]["name"]: set(s.get("data", {})) | set(s.get("stringData", {}))
        for s in objects(overlay, "Secret")
    }
    configmaps = {c["metadata"]["name"] for c in objects(overlay, "ConfigMap")}
    for obj in render(overlay):
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        for name, key in _secret_refs(obj):
            assert name in SECRETS, f"{obj['metadata']['name']} reads an undeclared Secret {name}"
            assert key is None or key in SECRETS[name], (name, key)
            if overlay == "local":
                assert name in secrets and (key is None or key in secrets[name]), (
                    obj["metadata"]["name"],
                    name,
                    key,
                )
        for v in pod_spec(obj).get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, v
        for c in containers(obj):
            for vm in c.get("volumeMounts", []):
                assert vm["name"] in {v["name"] for v in pod_spec(obj).get("volumes", [])} | {"data"}, vm


# --------------------------------------------------------------------------- services


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_exactly_their_pods_and_name_real_ports(overlay):
    workloads = [o for o in render(overlay) if o["kind"] in {"Deployment", "StatefulSet"}]
    expected = {"postgres": "postgres", "postgres-headless": "postgres", "minio": "minio", "mlflow": "mlflow"}
    for svc in objects(overlay, "Service"):
        name = svc["metadata"]["name"]
        selector = svc["spec"]["selector"]
        matching = [w for w in workloads if selector.items() <= pod_labels(w).items()]
        assert [w["metadata"]["name"] for w in matching] == [expected[name]], name
        (w,) = matching
        # the workload's own selector agrees with its pod labels
        assert w["spec"]["selector"]["matchLabels"].items() <= pod_labels(w).items()
        port_names = {
            p["name"]: p["containerPort"] for c in containers(w, init=False) for p in c.get("ports", [])
        }
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names, (name, p)
            assert port_names[p["targetPort"]] == p["port"], (name, p)
    assert get(overlay, "StatefulSet", "postgres")["spec"]["serviceName"] == "postgres-headless"
    assert get(overlay, "Service", "postgres-headless")["spec"]["clusterIP"] == "None"


# --------------------------------------------------------------------------- postgres, minio


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_credentials_databases_and_storage(overlay):
    sts = get(overlay, "StatefulSet", "postgres")
    c = container(sts, "postgres")
    env = env_map(c)
    assert secret_ref(env["POSTGRES_USER"]) == ("postgres-credentials", "username")
    assert secret_ref(env["POSTGRES_PASSWORD"]) == ("postgres-credentials", "password")
    assert env["POSTGRES_DB"]["value"] == "mlflow"
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/postgresql/data"
    assert mounts["initdb"] == "/docker-entrypoint-initdb.d"
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "data" and vct["spec"]["accessModes"] == ["ReadWriteOnce"]
    # the init SQL creates Flyte's database
    (initdb,) = [v for v in pod_spec(sts)["volumes"] if v["name"] == "initdb"]
    cm = get(overlay, "ConfigMap", initdb["configMap"]["name"])
    sql = "\n".join(cm["data"].values())
    assert re.search(r"^\s*CREATE DATABASE flyte\b", sql, re.M | re.I)
    assert all(k.endswith(".sql") for k in cm["data"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(c[probe]["exec"]["command"])
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_minio_credentials_storage_and_bucket_job(overlay):
    minio = get(overlay, "Deployment", "minio")
    c = container(minio, "minio")
    env = env_map(c)
    assert secret_ref(env["MINIO_ROOT_USER"]) == ("minio-root-credentials", "rootUser")
    assert secret_ref(env["MINIO_ROOT_PASSWORD"]) == ("minio-root-credentials", "rootPassword")
    assert c["args"][:2] == ["server", "/data"]
    (data,) = [v for v in pod_spec(minio)["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == "minio-data"
    assert minio["spec"]["strategy"]["type"] == "Recreate"
    assert c["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"

    job = get(overlay, "Job", "minio-buckets")
    (mc,) = pod_spec(job)["containers"]
    assert mc["image"].startswith("minio/mc:")
    jenv = env_map(mc)
    assert jenv["MINIO_ENDPOINT"]["value"] == service_url(overlay, "minio", "api")
    assert set(jenv["BUCKETS"]["value"].split()) == BUCKETS
    assert secret_ref(jenv["MINIO_ROOT_USER"]) == ("minio-root-credentials", "rootUser")
    assert secret_ref(jenv["S3_ACCESS_KEY_ID"]) == ("s3-credentials", "accessKeyId")
    assert secret_ref(jenv["S3_SECRET_ACCESS_KEY"]) == ("s3-credentials", "secretAccessKey")
    script = "\n".join(mc["args"])
    for step in ("mc alias set", "mc mb --ignore-existing", "mc admin user add", "mc admin policy attach"):
        assert step in script, step
    assert pod_spec(job)["restartPolicy"] == "OnFailure"


# --------------------------------------------------------------------------- mlflow


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_is_wired_to_postgres_and_minio(overlay):
    deploy = get(overlay, "Deployment", "mlflow")
    c = container(deploy, "mlflow")
    env = env_map(c)
    # credentials come from the Secrets, never literals
    assert secret_ref(env["MLFLOW_DB_USER"]) == ("postgres-credentials", "username")
    assert secret_ref(env["MLFLOW_DB_PASSWORD"]) == ("postgres-credentials", "password")
    assert secret_ref(env["AWS_ACCESS_KEY_ID"]) == ("s3-credentials", "accessKeyId")
    assert secret_ref(env["AWS_SECRET_ACCESS_KEY"]) == ("s3-credentials", "secretAccessKey")
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == service_url(overlay, "minio", "api")

    assert c["command"] == ["mlflow", "server"]
    args = dict(a.split("=", 1) if "=" in a else (a, True) for a in c["args"])
    pg = service_url(overlay, "postgres", "postgres", scheme="postgresql")
    assert (
        args["--backend-store-uri"]
        == pg.replace("://", "://$(MLFLOW_DB_USER):$(MLFLOW_DB_PASSWORD)@") + "/mlflow"
    )
    assert args["--artifacts-destination"] == "s3://mlflow-artifacts"
    assert args["--serve-artifacts"] is True
    assert args["--host"] == "0.0.0.0"
    # $(VAR) references are expanded by the kubelet only from variables defined in env
    for a in c["args"]:
        for var in re.findall(r"\$\((\w+)\)", a):
            assert var in env, var
    (http,) = c["ports"]
    assert args["--port"] == str(http["containerPort"]) == "5000"

    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe
        assert c[probe]["httpGet"]["port"] == "http"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]

    # the server answers on its in-cluster names and through a port-forward
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    fqdn = service_url(overlay, "mlflow", "http").split("://", 1)[1]
    for host in (fqdn, fqdn.split(":")[0], "mlflow", "mlflow:5000", "localhost:*"):
        assert host in allowed, host


# --------------------------------------------------------------------------- flyte pod templates


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_task_pod_templates_carry_the_platform_wiring(overlay):
    default, gpu = get(overlay, "PodTemplate", DEFAULT_TEMPLATE), get(overlay, "PodTemplate", GPU_TEMPLATE)
    for tmpl in (default, gpu):
        (c,) = pod_spec(tmpl)["containers"]
        assert c["name"] == "default"  # Flyte applies it to every container of the task pod
        env = env_map(c)
        assert env["MLFLOW_TRACKING_URI"]["value"] == service_url(overlay, "mlflow", "http")
        assert env["FLYTE_AWS_ENDPOINT"]["value"] == service_url(overlay, "minio", "api")
        assert env["AWS_ENDPOINT_URL"]["value"] == service_url(overlay, "minio", "api")
        assert secret_ref(env["FLYTE_AWS_ACCESS_KEY_ID"]) == ("s3-credentials", "accessKeyId")
        assert secret_ref(env["FLYTE_AWS_SECRET_ACCESS_KEY"]) == ("s3-credentials", "secretAccessKey")
        assert env["DEEPRESEARCH_DATA_BUCKET"]["value"] in BUCKETS
    # a named template replaces the default one, so both must carry the same environment
    assert pod_spec(default)["containers"][0]["env"] == pod_spec(gpu)["containers"][0]["env"]


@requires_kubectl
def test_prod_schedules_gpu_tasks_on_gpu_nodes_and_local_does_not():
    gpu = pod_spec(get("prod", "PodTemplate", GPU_TEMPLATE))
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    (dshm,) = [v for v in gpu["volumes"] if v["name"] == "dshm"]
    assert dshm["emptyDir"]["medium"] == "Memory" and mem_bytes(dshm["emptyDir"]["sizeLimit"]) >= 16 * 2**30
    # the GPU bits stay on the GPU template
    default = pod_spec(get("prod", "PodTemplate", DEFAULT_TEMPLATE))
    assert "nodeSelector" not in default and "tolerations" not in default
    for overlay in ("local",):
        for obj in render(overlay):
            text = json.dumps(obj)
            assert "nvidia.com/gpu" not in text, (
                f"{overlay}: GPU setting in {obj['kind']}/{obj['metadata']['name']}"
            )
            if obj["kind"] in WORKLOAD_KINDS:
                assert "tolerations" not in pod_spec(obj) and "nodeSelector" not in pod_spec(obj)


# --------------------------------------------------------------------------- overlays


@requires_kubectl
def test_local_uses_placeholder_secrets_and_prod_ships_none():
    local = {s["metadata"]["name"]: s for s in objects("local", "Secret")}
    assert set(local) == set(SECRETS)
    for name, keys in SECRETS.items():
        s = local[name]
        assert set(s["data"]) == keys
        assert s["metadata"]["annotations"]["deepresearch.io/placeholder-credentials"] == "true"
    assert objects("prod", "Secret") == []
    assert "CHANGE-ME" not in json.dumps(render("prod"))


def test_committed_credentials_are_marked_placeholders():
    for gen in base_kustomization()["secretGenerator"]:
        assert gen["options"]["disableNameSuffixHash"] is True  # referenced by name from Helm values / prod
        for key, value in generator_literals(gen["name"]).items():
            if re.search(r"password|secret", key, re.I):
                assert value.startswith("CHANGE-ME-local-only"), (gen["name"], key)
    # nothing under k8s/ carries a literal credential outside the marked generator literals
    for path in K8S.rglob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"(?i)^\s*(password|secretKey|accessKey)\s*:\s*\S", text, re.M), path


@requires_kubectl
def test_prod_is_bigger_and_pins_a_storage_class():
    def req_mem(overlay, kind, name, cname):
        return mem_bytes(container(get(overlay, kind, name), cname)["resources"]["requests"]["memory"])

    for kind, name in (("StatefulSet", "postgres"), ("Deployment", "minio"), ("Deployment", "mlflow")):
        assert req_mem("prod", kind, name, name) > req_mem("local", kind, name, name), name
    assert get("prod", "Deployment", "mlflow")["spec"]["replicas"] >= 2
    assert get("local", "Deployment", "mlflow")["spec"]["replicas"] == 1
    assert env_map(container(get("prod", "Deployment", "mlflow"), "mlflow"))["MLFLOW_WORKERS"]["value"] == "4"

    settings = load_yaml(K8S / "overlays" / "prod" / "settings.yaml")
    assert settings["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    storage_class = settings["data"]["storageClassName"]
    pg_claim = get("prod", "StatefulSet", "postgres")["spec"]["volumeClaimTemplates"][0]["spec"]
    minio_claim = get("prod", "PersistentVolumeClaim", "minio-data")["spec"]
    assert pg_claim["storageClassName"] == minio_claim["storageClassName"] == storage_class
    assert mem_bytes(pg_claim["resources"]["requests"]["storage"]) >= 100 * 2**30
    assert mem_bytes(minio_claim["resources"]["requests"]["storage"]) >= 100 * 2**30
    # the settings ConfigMap is kustomize input only
    assert all(c["metadata"]["name"] != settings["metadata"]["name"] for c in objects("prod", "ConfigMap"))
    # local: the cluster's default StorageClass
    assert "storageClassName" not in get("local", "PersistentVolumeClaim", "minio-data")["spec"]

    (pdb,) = objects("prod", "PodDisruptionBudget")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= pod_labels(get("prod", "Deployment", "mlflow")).items()
    )
    assert objects("local", "PodDisruptionBudget") == []
    for overlay in OVERLAYS:
        for obj in render(overlay):
            assert obj["metadata"]["labels"]["deepresearch.io/environment"] == overlay


# --------------------------------------------------------------------------- flyte helm values


@functools.cache
def flyte_values() -> dict:
    return load_yaml(K8S / "base" / "flyte" / "values.yaml")


def test_flyte_values_point_at_the_shared_postgres():
    v = flyte_values()
    db = v["configuration"]["database"]
    assert db["host"] == f"postgres.{NAMESPACE}.svc.cluster.local"
    assert db["port"] == 5432
    assert db["dbname"] == "flyte"
    assert db["username"] == generator_literals("postgres-credentials")["username"]
    assert not db.get("password"), "the password must come from the Secret, not the values"
    # passwordPath is a file of the postgres-credentials Secret mounted into the Flyte pod
    dep = v["deployment"]
    (vol,) = [
        x for x in dep["extraVolumes"] if x.get("secret", {}).get("secretName") == "postgres-credentials"
    ]
    (mount,) = [m for m in dep["extraVolumeMounts"] if m["name"] == vol["name"]]
    (item,) = vol["secret"]["items"]
    assert item["key"] == "password"
    assert db["passwordPath"] == f"{mount['mountPath']}/{item['path']}"
    assert (K8S / "base" / "postgres" / "initdb" / "10-flyte-database.sql").read_text().count(
        "CREATE DATABASE flyte"
    ) == 1


def test_flyte_values_point_at_minio_with_keys_from_the_secret():
    v = flyte_values()
    st = v["configuration"]["storage"]
    assert st["provider"] == "s3"
    assert st["metadataContainer"] == st["userDataContainer"] == "flyte-data"
    s3 = st["providerConfig"]["s3"]
    assert s3["endpoint"] == f"http://minio.{NAMESPACE}.svc.cluster.local:9000"
    assert s3["disableSSL"] is True
    # iam = the AWS SDK default chain, i.e. the AWS_* variables below; no key in the values
    assert s3["authType"] == "iam" and not s3.get("accessKey") and not s3.get("secretKey")
    env = {e["name"]: e for e in v["deployment"]["extraEnvVars"]}
    assert secret_ref(env["AWS_ACCESS_KEY_ID"]) == ("s3-credentials", "accessKeyId")
    assert secret_ref(env["AWS_SECRET_ACCESS_KEY"]) == ("s3-credentials", "secretAccessKey")


def test_flyte_values_enable_the_pytorch_and_ray_plugins():
    v = flyte_values()
    plugins = v["enabled_plugins"]["tasks"]["task-plugins"]
    assert plugins["enabled-plugins"] == ["container", "sidecar", "k8s-array", "pytorch", "ray"]
    defaults = plugins["default-for-task-types"]
    assert defaults["pytorch"] == "pytorch" and defaults["ray"] == "ray"
    assert defaults["container"] == "container" and defaults["container_array"] == "k8s-array"
    rules = {(g, r) for rule in v["rbac"]["extraRules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("kubeflow.org", "pytorchjobs") in rules and ("ray.io", "rayjobs") in rules


@requires_kubectl
def test_flyte_values_match_the_rendered_base():
    v = flyte_values()
    inline = v["configuration"]["inline"]
    assert inline["namespace_mapping"]["template"] == NAMESPACE
    template = inline["plugins"]["k8s"]["default-pod-template-name"]
    for overlay in OVERLAYS:
        assert get(overlay, "PodTemplate", template)
        # the endpoints Flyte uses are those of the rendered Services
        assert v["configuration"]["storage"]["providerConfig"]["s3"]["endpoint"] == service_url(
            overlay, "minio", "api"
        )
        db = v["configuration"]["database"]
        assert f"postgresql://{db['host']}:{db['port']}" == service_url(
            overlay, "postgres", "postgres", "postgresql"
        )
    img = v["deployment"]["image"]
    assert _image_is_pinned(f"{img['repository']}:{img['tag']}") and img["tag"] == FLYTE_CHART_VERSION
    wait = v["deployment"]["waitForDB"]["image"]
    assert _image_is_pinned(f"{wait['repository']}:{wait['tag']}")
    # the Flyte pod's extra env and volumes are valid Kubernetes
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flyte-binary-check"},
        "spec": {
            "containers": [
                {
                    "name": "flyte",
                    "image": f"{img['repository']}:{img['tag']}",
                    "env": v["deployment"]["extraEnvVars"],
                    "volumeMounts": v["deployment"]["extraVolumeMounts"],
                    "resources": v["deployment"]["resources"],
                }
            ],
            "volumes": v["deployment"]["extraVolumes"],
        },
    }
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flyte_overlay_values(overlay):
    v = load_yaml(K8S / "overlays" / overlay / "flyte-values.yaml")
    assert v["deployment"]["resources"]["requests"]["memory"]
    inline = v["configuration"]["inline"]
    if overlay == "local":
        assert inline["storage"]["signedURL"]["stowConfigOverride"]["endpoint"] == "http://localhost:9000"
        assert "nvidia.com/gpu" not in json.dumps(v)
    else:
        assert inline["task_resources"]["limits"]["gpu"] >= 1
        (tol,) = inline["plugins"]["k8s"]["resource-tolerations"]["nvidia.com/gpu"]
        assert tol == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        # a prod task may ask for what the config's paper-scale families need
        assert mem_bytes(inline["task_resources"]["limits"]["memory"]) > mem_bytes(
            flyte_values()["configuration"]["inline"]["task_resources"]["limits"]["memory"]
        )


def test_flyte_kustomization_renders_the_chart_with_the_same_values():
    k = load_yaml(K8S / "flyte" / "kustomization.yaml")
    (chart,) = k["helmCharts"]
    assert chart["name"] == "flyte-binary"
    assert chart["repo"] == "https://flyteorg.github.io/flyte"
    assert chart["version"] == FLYTE_CHART_VERSION
    assert chart["namespace"] == k["namespace"] == NAMESPACE
    assert (K8S / "flyte" / chart["valuesFile"]).resolve() == (
        K8S / "base" / "flyte" / "values.yaml"
    ).resolve()
    for extra in chart.get("additionalValuesFiles", []):
        assert (K8S / "flyte" / extra).is_file(), extra
    # the overlays never depend on the chart
    for overlay in OVERLAYS:
        assert "helmCharts" not in load_yaml(K8S / "overlays" / overlay / "kustomization.yaml")
    assert "helmCharts" not in base_kustomization()
    assert f"--version {FLYTE_CHART_VERSION}" in (K8S / "base" / "flyte" / "values.yaml").read_text()


# --------------------------------------------------------------------------- operators (remote, not rendered)


def _remote(url: str) -> tuple[str, str, str]:
    """(repository, path, ref) of a kustomize remote resource `https://github.com/o/r//path?ref=...`."""
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "github.com", url
    repo, _, path = parts.path.lstrip("/").partition("//")
    (ref,) = parse_qs(parts.query)["ref"]
    return repo, path, ref


def test_operator_kustomizations_pin_released_versions():
    top = load_yaml(K8S / "operators" / "kustomization.yaml")
    assert top["resources"] == ["kuberay", "training-operator"]
    assert "namespace" not in top  # each operator keeps its own namespace

    kuberay = load_yaml(K8S / "operators" / "kuberay" / "kustomization.yaml")
    (url,) = kuberay["resources"]
    repo, path, ref = _remote(url)
    assert (repo, path) == ("ray-project/kuberay", "ray-operator/config/default")
    assert re.fullmatch(r"v1\.\d+\.\d+", ref), ref
    (image,) = kuberay["images"]
    assert image["name"] == "quay.io/kuberay/operator" and image["newTag"] == ref

    training = load_yaml(K8S / "operators" / "training-operator" / "kustomization.yaml")
    (url,) = training["resources"]
    repo, path, ref = _remote(url)
    assert (repo, path) == ("kubeflow/training-operator", "manifests/overlays/standalone")
    # v1 only: the default branch of that repository now holds the incompatible Trainer v2
    assert re.fullmatch(r"v1\.\d+\.\d+", ref), ref

    for k in (top, kuberay, training):
        assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"


def test_docs_give_the_apply_order():
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    steps = [
        "kubectl apply --server-side -k k8s/operators",
        "kubectl apply -k k8s/overlays/local",
        "helm upgrade --install flyte-binary",
        "kubectl -n deepresearch port-forward svc/mlflow",
        "kubectl -n deepresearch port-forward svc/flyte-binary-http",
    ]
    positions = [doc.find(s) for s in steps]
    assert all(p >= 0 for p in positions), [s for s, p in zip(steps, positions) if p < 0]
    assert positions == sorted(positions), "docs/kubernetes.md lists the steps out of order"
    assert f"--version {FLYTE_CHART_VERSION}" in doc
    for secret in SECRETS:
        assert f"kubectl -n deepresearch create secret generic {secret}" in doc, secret
