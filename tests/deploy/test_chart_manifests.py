"""What the Helm chart's rendered objects mean, beyond Kubernetes' schemas.

Schemas (deploy/check) say each object is well formed; these tests pin how
headrace runs in it: stateful replicas keep their instance name and volume,
selectors find their pods, probes and Services use the ports the services
listen on, and the command lines are ones `headrace serve` accepts.
"""

from __future__ import annotations

from typing import Any

import pytest
from deploy_kit import (
    STATEFUL,
    Manifests,
    chart_values,
    container,
    known_settings,
    option_value,
    parse_cli,
    url_port,
)

# The session fixture runs deploy/check, which builds helm with Go the first time.
pytestmark = pytest.mark.timeout(1800)

DATA_DIR = "/var/lib/headrace/data"
SETS = ["default", "scaled", "minimal"]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


@pytest.mark.parametrize("values", SETS)
def test_container_args_parse_with_the_serve_cli(
    manifests: dict[str, Manifests], values: str
) -> None:
    for name, w in manifests[values].workloads().items():
        c = container(w)
        argv = [a.replace("$(POD_NAME)", "pod-0") for a in c["args"]]
        assert argv[:2] == ["serve", name]
        ctx = parse_cli(argv)
        port = c["ports"][0]["containerPort"]
        assert ctx.params.get("web_port", ctx.params.get("port")) == port, name
        if "instance" in ctx.params:
            assert option_value(c["args"], "--instance") == "$(POD_NAME)", name


@pytest.mark.parametrize("values", SETS)
def test_instance_is_the_pod_name(manifests: dict[str, Manifests], values: str) -> None:
    for name, w in manifests[values].workloads().items():
        env = {e["name"]: e for e in container(w).get("env", [])}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", name


def test_stateful_services_are_statefulsets_with_a_volume_per_replica(
    manifests: dict[str, Manifests],
) -> None:
    workloads = manifests["scaled"].workloads()
    for name in STATEFUL:
        w = workloads[name]
        assert w["kind"] == "StatefulSet", name
        (claim,) = w["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in container(w)["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == DATA_DIR, name
        volumes = {v["name"] for v in _pod_spec(w).get("volumes", [])}
        assert claim["metadata"]["name"] not in volumes, f"{name}: data is also an emptyDir"
        headless = manifests["scaled"].get("Service", w["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None", f"{name}: governing Service not headless"
    sc = {w: workloads[w]["spec"]["volumeClaimTemplates"][0]["spec"] for w in STATEFUL}
    assert sc["orchestrator"]["storageClassName"] == "fast-ssd"
    assert sc["orchestrator"]["resources"]["requests"]["storage"] == "50Gi"
    assert sc["signals"]["storageClassName"] == ""
    assert "storageClassName" not in sc["timers"]


def test_stateless_services_are_deployments_with_an_emptydir(
    manifests: dict[str, Manifests],
) -> None:
    for name, w in manifests["default"].workloads().items():
        if name in STATEFUL:
            continue
        assert w["kind"] == "Deployment", name
        volumes = {v["name"]: v for v in _pod_spec(w)["volumes"]}
        assert "emptyDir" in volumes["data"], name


def test_persistence_off_gives_an_emptydir_and_no_claim(manifests: dict[str, Manifests]) -> None:
    w = manifests["minimal"].workloads()["orchestrator"]
    assert "volumeClaimTemplates" not in w["spec"]
    assert "emptyDir" in {v["name"]: v for v in _pod_spec(w)["volumes"]}["data"]


@pytest.mark.parametrize("values", SETS)
def test_selectors_services_and_probes_find_their_pods(
    manifests: dict[str, Manifests], values: str
) -> None:
    m = manifests[values]
    pods = {n: w["spec"]["template"]["metadata"]["labels"] for n, w in m.workloads().items()}
    for name, w in m.workloads().items():
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pods[name].items(), name
        others = [
            o for o, labels in pods.items() if o != name and selector.items() <= labels.items()
        ]
        assert not others, f"{name}'s selector also matches {others}"
        c = container(w)
        port = c["ports"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # The kubelet GETs it from outside the pod: the image binds every
            # service's port to 0.0.0.0 (HEADRACE_WEB_HOST).
            get = c[probe]["httpGet"]
            assert get["path"] == "/healthz", name
            assert get["port"] in (port["name"], port["containerPort"]), name
    for svc in m.of("Service"):
        matched = [
            n for n, labels in pods.items() if svc["spec"]["selector"].items() <= labels.items()
        ]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {matched}"
        names = {p["name"] for p in container(m.workloads()[matched[0]])["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in names, svc["metadata"]["name"]


@pytest.mark.parametrize("values", SETS)
def test_pods_are_locked_down_and_drain_gracefully(
    manifests: dict[str, Manifests], values: str
) -> None:
    for name, w in manifests[values].workloads().items():
        spec = _pod_spec(w)
        # Service links would set HEADRACE_API_PORT=tcp://... from the API's Service.
        assert spec["enableServiceLinks"] is False, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["terminationGracePeriodSeconds"] >= 30, name
        sc = container(w)["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"], name
        mounts = {m["mountPath"] for m in container(w)["volumeMounts"]}
        assert {DATA_DIR, "/tmp"} <= mounts, name


@pytest.mark.parametrize("values", SETS)
def test_settings_come_from_the_configmap_and_are_headrace_settings(
    manifests: dict[str, Manifests], values: str
) -> None:
    m = manifests[values]
    (cm,) = m.of("ConfigMap")
    extra = set(chart_values()["config"])
    if values == "scaled":
        extra |= {"HEADRACE_TIMERS_FIRE_RATE"}
    assert set(cm["data"]) - extra <= known_settings()
    assert cm["data"]["HEADRACE_DATA_DIR"] == DATA_DIR
    for name, w in m.workloads().items():
        refs = [s["configMapRef"]["name"] for s in container(w)["envFrom"] if "configMapRef" in s]
        assert refs == [cm["metadata"]["name"]], name


def test_the_api_url_names_the_api_service(manifests: dict[str, Manifests]) -> None:
    m = manifests["default"]
    url = m.config()["HEADRACE_API_URL"]
    api = m.workloads()["api"]
    service = m.get("Service", url.split("//")[1].split(":")[0])
    assert service["spec"]["type"] == "ClusterIP"
    assert url_port(url) == container(api)["ports"][0]["containerPort"]


def test_topics_are_ensured_by_a_hook_before_install_and_upgrade(
    manifests: dict[str, Manifests],
) -> None:
    m = manifests["default"]
    (job,) = m.of("Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    (c,) = job["spec"]["template"]["spec"]["containers"]
    parse_cli(c["args"])
    assert c["args"] == ["topics", "ensure"]
    # A pre-install hook runs before the ConfigMap exists: it carries the settings itself.
    assert {e["name"]: e["value"] for e in c["env"]} == m.config()
    assert not manifests["minimal"].of("Job")


def test_scaling_sets_replicas_and_disruption_budgets(manifests: dict[str, Manifests]) -> None:
    m = manifests["scaled"]
    wanted = {
        "orchestrator": 3,
        "router": 2,
        "timers": 2,
        "tasks": 3,
        "signals": 2,
        "http": 4,
        "api": 2,
    }
    got = {n: w["spec"]["replicas"] for n, w in m.workloads().items()}
    assert got == wanted
    budgets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in m.of("PodDisruptionBudget")
    }
    assert budgets == set(wanted)
    assert not manifests["default"].of("PodDisruptionBudget")
    assert container(m.workloads()["http"])["args"][-2:] == ["--concurrency", "64"]


def test_service_monitors_scrape_one_service_each(manifests: dict[str, Manifests]) -> None:
    m = manifests["scaled"]
    monitors = m.of("ServiceMonitor")
    assert {sm["metadata"]["labels"]["app.kubernetes.io/component"] for sm in monitors} == set(
        m.workloads()
    )
    for sm in monitors:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["labels"]["release"] == "prometheus"
        want = sm["spec"]["selector"]["matchLabels"]
        hits = [s for s in m.of("Service") if want.items() <= s["metadata"]["labels"].items()]
        assert len(hits) == 1, f"{sm['metadata']['name']} selects {len(hits)} Services"
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in hits[0]["spec"]["ports"]}
    assert not manifests["default"].of("ServiceMonitor")
