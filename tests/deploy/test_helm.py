"""The Helm chart (deploy/helm/opsmantik) without a cluster: `helm lint --strict`, `helm template`
with each values file, every rendered document validated against the Kubernetes schemas
(kubernetes-validate, strict: an unknown field is an error) and the ServiceMonitor and
PrometheusRule against the prometheus-operator CRDs' schemas, plus the chart's promises: probes,
a non-root read-only pod, the migrate hook, the worker/partition limit, the alert rules verbatim.

helm and the CRDs come from scripts/ensure-helm.sh (`make helm`). Nothing here imports the
project's package: the settings names are read from the source of the Settings class."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from opsmantik.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "opsmantik"
HELM = ROOT / ".local" / "bin" / "helm"
HELM_VERSION = "v3.21.4"
CRD_DIR = ROOT / ".local" / "crds" / "prometheus-operator-v0.85.0"
RULES = ROOT / "deploy" / "prometheus" / "opsmantik.rules.yml"
VALUES = ("values.yaml", "values-strimzi.yaml", "values-cloudnativepg.yaml")
# The chart's kubeVersion floor (Chart.yaml) and the newest Kubernetes kubernetes-validate knows.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
KUBE = "1.33.0"  # the version the property tests render for
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}
COMPONENTS = ("gateway", "worker", "relay", "audit")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `bash scripts/ensure-helm.sh` (or `make helm`)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, check=False)


def template(values: str = "values.yaml", *sets: str, kube: str = KUBE) -> subprocess.CompletedProcess[str]:
    args = ["template", "opsmantik", str(CHART), "--namespace", "billing", "--kube-version", kube]
    args += ["-f", str(CHART / values)]
    for s in sets:
        args += ["--set", s]
    return helm(*args)


@functools.cache
def _render(values: str, sets: tuple[str, ...], kube: str) -> tuple[dict, ...]:
    out = template(values, *sets, kube=kube)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(values: str = "values.yaml", *sets: str, kube: str = KUBE) -> list[dict]:
    return copy.deepcopy(list(_render(values, sets, kube)))


def values_of(values: str) -> dict:
    """The values a file gives, over values.yaml (top-level sections merged one level down)."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    for section, v in (yaml.safe_load((CHART / values).read_text()) or {}).items():
        base[section] = {**base[section], **v} if isinstance(v, dict) else v
    return base


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def deployments(docs: list[dict]) -> dict[str, dict]:
    return {component(d): d for d in docs if d["kind"] == "Deployment"}


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """component → pod spec, for every Deployment and Job."""
    return {component(d): d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def settings_names() -> set[str]:
    """OPSMANTIK_<FIELD> of every field of the settings object."""
    return {"OPSMANTIK_" + f.name.upper() for f in dataclasses.fields(Settings)}


# --- validation against schemas ----------------------------------------------------------------


@functools.cache
def crd_schema(kind: str) -> dict:
    path = CRD_DIR / CRD_FILES[kind]
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash scripts/ensure-helm.sh`")
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def unknown_fields(obj: object, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not declare. CRD schemas have no additionalProperties: false, the API
    server prunes or (kubectl's default strict field validation) rejects unknown fields."""
    out: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        for k, v in obj.items():
            if k in schema["properties"]:
                out += unknown_fields(v, schema["properties"][k], f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += unknown_fields(v, schema["additionalProperties"], f"{path}.{k}")
            else:
                out.append(f"{path}.{k}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(obj):
            out += unknown_fields(v, schema["items"], f"{path}[{i}]")
    return out


def schema_errors(doc: dict, kube: str) -> list[str]:
    """Every problem of one rendered document, [] when it validates."""
    kind = doc["kind"]
    if kind in CRD_FILES:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", doc["apiVersion"]
        schema = crd_schema(kind)
        errors = [
            f"{kind}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
        ]
        return errors + [f"{kind}: unknown field {f}" for f in unknown_fields(doc, schema)]
    try:
        kubernetes_validate.validate(doc, kube, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{kind}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{kind} ({doc['apiVersion']}): no schema in kubernetes-validate for Kubernetes {kube}"]
    return []


# --- helm itself -------------------------------------------------------------------------------


def test_helm_is_the_pinned_version() -> None:
    out = helm("version", "--template", "{{.Version}}")
    assert out.returncode == 0 and out.stdout.strip() == HELM_VERSION, (out.stdout, out.stderr)


@pytest.mark.parametrize("values", VALUES)
def test_lint_strict_is_clean(values: str) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(CHART / values), "--kube-version", KUBE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout
    problems = [ln for ln in out.stdout.splitlines() if ln.startswith(("[WARNING]", "[ERROR]"))]
    assert problems == [], problems


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUES)
def test_every_document_validates(values: str, kube: str) -> None:
    docs = render(values, kube=kube)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["Deployment"] * 4
        + ["Service"] * 4
        + ["PodDisruptionBudget"] * 2
        + ["HorizontalPodAutoscaler", "Job", "ServiceMonitor", "PrometheusRule"]
    ), kinds
    errors = [e for d in docs for e in schema_errors(d, kube)]
    assert errors == [], "\n".join(errors)


def test_the_validation_rejects_what_it_should() -> None:
    """The checks above are not vacuous: a misspelt field, a wrong type, a CRD typo all fail."""
    docs = render()
    gateway = deployments(docs)["gateway"]
    gateway["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    assert schema_errors(gateway, KUBE)
    hpa = next(iter(by_kind(docs, "HorizontalPodAutoscaler").values()))
    hpa["spec"]["minReplicas"] = "two"
    assert schema_errors(hpa, KUBE)
    monitor = next(iter(by_kind(docs, "ServiceMonitor").values()))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any("intervall" in e for e in schema_errors(monitor, KUBE))
    rule = next(iter(by_kind(docs, "PrometheusRule").values()))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert schema_errors(rule, KUBE)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert schema_errors(unknown, KUBE)


# --- what the chart promises -------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_commands_and_settings(values: str) -> None:
    v = values_of(values)
    specs = pod_specs(render(values))
    commands = {name: spec["containers"][0]["command"] for name, spec in specs.items()}
    assert commands == {
        "gateway": ["opsmantik", "gateway", "--host", "0.0.0.0", "--port", "8080"],
        "worker": ["opsmantik", "worker"],
        "relay": ["opsmantik", "relay"],
        "audit": ["opsmantik", "audit", "--follow"],
        "migrate": ["opsmantik", "migrate"],
    }
    known = settings_names()
    for name, spec in specs.items():
        (container,) = spec["containers"]
        env = env_of(container)
        assert set(env) - known == set(), f"{name}: not settings: {set(env) - known}"
        ref = env["OPSMANTIK_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": v["database"]["existingSecret"], "key": v["database"]["secretKey"]}, name
        assert env["OPSMANTIK_KAFKA_BOOTSTRAP"]["value"] == v["kafka"]["bootstrap"]
        assert env["OPSMANTIK_TOPIC_PARTITIONS"]["value"] == str(v["kafka"]["partitions"])
        assert env["OPSMANTIK_REPLICATION_FACTOR"]["value"] == str(v["kafka"]["replicationFactor"])
        assert env["OPSMANTIK_MIN_INSYNC_REPLICAS"]["value"] == str(v["kafka"]["minInsyncReplicas"])
        assert env["OPSMANTIK_METRICS_HOST"]["value"] == "0.0.0.0", name  # else Prometheus cannot scrape
    assert env_of(specs["worker"]["containers"][0])["OPSMANTIK_WORKER_DATA_DIR"]["value"] == (
        "/var/lib/opsmantik/faust"
    )


def test_strimzi_and_cloudnativepg_values_say_what_they_are_for() -> None:
    strimzi = env_of(pod_specs(render("values-strimzi.yaml"))["worker"]["containers"][0])
    assert strimzi["OPSMANTIK_KAFKA_BOOTSTRAP"]["value"] == "opsmantik-kafka-bootstrap.kafka.svc:9092"
    assert (
        strimzi["OPSMANTIK_REPLICATION_FACTOR"]["value"],
        strimzi["OPSMANTIK_MIN_INSYNC_REPLICAS"]["value"],
    ) == (
        "3",
        "2",
    )
    cnpg = env_of(pod_specs(render("values-cloudnativepg.yaml"))["migrate"]["containers"][0])
    assert cnpg["OPSMANTIK_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "opsmantik-pg-app",
        "key": "uri",
    }


@pytest.mark.parametrize("values", VALUES)
def test_probes(values: str) -> None:
    want = {
        "gateway": ("/healthz", "/readyz", 8080),
        "worker": ("/healthz", "/healthz", 9101),
        "relay": ("/healthz", "/healthz", 9102),
        "audit": ("/metrics", "/metrics", 9103),
    }
    for name, dep in deployments(render(values)).items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
        assert (live["path"], ready["path"]) == want[name][:2], name
        assert c["startupProbe"]["httpGet"] == live, name
        for probe in (live, ready):
            assert ports[probe["port"]] == want[name][2], (name, probe, ports)


@pytest.mark.parametrize("values", VALUES)
def test_pods_run_as_non_root_on_a_read_only_root(values: str) -> None:
    specs = pod_specs(render(values))
    assert set(specs) == {*COMPONENTS, "migrate"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
    worker = specs["worker"]
    data_dir = env_of(worker["containers"][0])["OPSMANTIK_WORKER_DATA_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in worker["containers"][0]["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in worker["volumes"]}[mounts[data_dir]]


def test_migrate_job_is_a_pre_install_and_pre_upgrade_hook() -> None:
    (job,) = by_kind(render(), "Job").values()
    notes = job["metadata"]["annotations"]
    assert set(notes["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"].split(",")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # `helm template --no-hooks` leaves it out: it is a hook, not part of the release's manifest.
    out = template("values.yaml")
    hooks_off = helm("template", "opsmantik", str(CHART), "--kube-version", KUBE, "--no-hooks")
    assert out.returncode == hooks_off.returncode == 0
    assert "kind: Job" in out.stdout and "kind: Job" not in hooks_off.stdout


@pytest.mark.parametrize(("values", "partitions"), [("values.yaml", 6), ("values-strimzi.yaml", 12)])
def test_worker_replicas_may_not_exceed_the_partitions(values: str, partitions: int) -> None:
    assert values_of(values)["kafka"]["partitions"] == partitions
    at_limit = render(values, f"worker.replicas={partitions}")
    worker = deployments(at_limit)["worker"]["spec"]
    assert worker["replicas"] == partitions
    assert worker["strategy"]["rollingUpdate"]["maxSurge"] == 0  # not even during a rollout
    over = template(values, f"worker.replicas={partitions + 1}")
    assert over.returncode != 0
    assert f"worker.replicas ({partitions + 1}) exceeds kafka.partitions ({partitions})" in over.stderr
    fewer = template(values, f"kafka.partitions={partitions - 1}", f"worker.replicas={partitions}")
    assert fewer.returncode != 0 and "exceeds kafka.partitions" in fewer.stderr


def test_settings_the_chart_owns_and_malformed_bootstrap_are_refused() -> None:
    ok = render("values.yaml", "extraEnv.OPSMANTIK_PARTITION_KEY=site")
    assert env_of(pod_specs(ok)["gateway"]["containers"][0])["OPSMANTIK_PARTITION_KEY"]["value"] == "site"
    clash = template("values.yaml", "extraEnv.OPSMANTIK_KAFKA_BOOTSTRAP=elsewhere:9092")
    assert clash.returncode != 0 and "extraEnv.OPSMANTIK_KAFKA_BOOTSTRAP" in clash.stderr
    bad = template("values.yaml", r"kafka.bootstrap=a:9092\,b")
    assert bad.returncode != 0 and "is not host:port" in bad.stderr
    three = render("values.yaml", r"kafka.bootstrap=a:9092\,b:9092\,c:9092")
    assert env_of(pod_specs(three)["relay"]["containers"][0])["OPSMANTIK_KAFKA_BOOTSTRAP"]["value"] == (
        "a:9092,b:9092,c:9092"
    )


def test_gateway_autoscales_on_cpu() -> None:
    docs = render()
    gateway = deployments(docs)["gateway"]
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": gateway["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in gateway["spec"]  # the HPA owns the count
    assert gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    fixed = render("values.yaml", "gateway.autoscaling.enabled=false", "gateway.replicas=3")
    assert (
        not by_kind(fixed, "HorizontalPodAutoscaler")
        and deployments(fixed)["gateway"]["spec"]["replicas"] == 3
    )
    no_request = template("values.yaml", "gateway.resources.requests=null")
    assert no_request.returncode != 0 and "requests.cpu" in no_request.stderr


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", selector).items())


def test_services_and_budgets_select_their_pods() -> None:
    docs = render()
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments(docs).items()}
    for svc in by_kind(docs, "Service").values():
        (target,) = [n for n, labels in pods.items() if matches(svc["spec"]["selector"], labels)]
        (c,) = deployments(docs)[target]["spec"]["template"]["spec"]["containers"]
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in c["ports"]}
    budgets = {component(p): p for p in by_kind(docs, "PodDisruptionBudget").values()}
    assert set(budgets) == {"gateway", "worker"}
    for name, pdb in budgets.items():
        assert [n for n, labels in pods.items() if matches(pdb["spec"]["selector"], labels)] == [name]


def test_service_monitor_scrapes_every_process_under_the_alerts_job_names() -> None:
    docs = render()
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    spec = monitor["spec"]
    scraped = {}
    for svc in by_kind(docs, "Service").values():
        labels = svc["metadata"]["labels"]
        if matches(spec["selector"], labels) and all(
            e["key"] in labels for e in spec["selector"]["matchExpressions"] if e["operator"] == "Exists"
        ):
            ports = {p["name"] for p in svc["spec"]["ports"]} & {e["port"] for e in spec["endpoints"]}
            assert ports, svc["metadata"]["name"]
            scraped[labels[spec["jobLabel"]]] = svc
    local = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert set(scraped) == {j["job_name"] for j in local["scrape_configs"]}
    assert set(scraped) == {f"opsmantik-{c}" for c in COMPONENTS}
    assert all(e["path"] == "/metrics" for e in spec["endpoints"])
    assert spec["namespaceSelector"] == {"matchNames": ["billing"]}


def test_prometheus_rule_is_the_rules_file() -> None:
    copy_in_chart = CHART / "files" / "opsmantik.rules.yml"
    assert copy_in_chart.read_bytes() == RULES.read_bytes(), (
        f"refresh the chart's copy: cp {RULES.relative_to(ROOT)} {copy_in_chart.relative_to(ROOT)}"
    )
    (rule,) = by_kind(render(), "PrometheusRule").values()
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert 'up{job="opsmantik-gateway"}' in yaml.safe_dump(rule["spec"])
    off = render(
        "values.yaml", "metrics.prometheusRule.enabled=false", "metrics.serviceMonitor.enabled=false"
    )
    assert not by_kind(off, "PrometheusRule") and not by_kind(off, "ServiceMonitor")


def test_docs_describe_every_values_key() -> None:
    """docs/operations.md names every leaf key of values.yaml (as `section.key`)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Kubernetes with the Helm chart", 1)[1].split("\n## ", 1)[0]

    def leaves(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if isinstance(v, dict) and v and not k.endswith(("resources", "Context", "labels")):
                out += leaves(v, f"{prefix}{k}.")
            else:
                out.append(prefix + k)
        return out

    named = set(re.findall(r"`([A-Za-z][\w.]*)`", section))
    missing = [k for k in leaves(yaml.safe_load((CHART / "values.yaml").read_text())) if k not in named]
    assert missing == [], f"docs/operations.md does not describe: {missing}"
