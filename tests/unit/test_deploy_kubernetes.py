"""The Kubernetes overlays: sharded StatefulSet and batch CronJob of an Indexed Job.

Always: the overlay files are read as YAML and the fields that matter are checked (the
shard count agrees everywhere, each pod gets its shard, state and leases where they must
be). Where ``kubectl`` is on PATH, every kustomization is also rendered with
``kubectl kustomize``; where the ``kubernetes-validate`` package is installed (a test
dependency), the rendered core objects are validated against the Kubernetes 1.33 schemas
(strict: unknown fields are errors). CRDs (ServiceMonitor, PrometheusRule) have no bundled
schema and are left out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.config.shard import parse_shard

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = K8S / "overlays"
KUSTOMIZATIONS = [K8S, K8S / "base", OVERLAYS / "sharded", OVERLAYS / "batch",
                  OVERLAYS / "postgres"]
CRDS = {"ServiceMonitor", "PrometheusRule"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _one(path: Path) -> dict[str, Any]:
    (doc,) = _docs(path)
    return doc


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _patched_away(overlay: Path) -> set[tuple[str, str]]:
    out = set()
    for patch in _one(overlay / "kustomization.yaml").get("patches", []):
        doc = _one(overlay / patch["path"])
        assert doc["$patch"] == "delete"
        out.add((doc["kind"], doc["metadata"]["name"]))
    return out


def test_sharded_statefulset() -> None:
    sts = _one(OVERLAYS / "sharded" / "statefulset.yaml")
    assert sts["kind"] == "StatefulSet"
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    # The pod name carries the ordinal; N is the replica count.
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    shard_value = env["RETENTION_SHARD"]["value"]
    assert shard_value.startswith("$(POD_NAME)/")
    n = int(shard_value.rsplit("/", 1)[1])
    assert spec["replicas"] == n
    for i in range(n):  # what each pod's agent will parse
        assert parse_shard(shard_value.replace("$(POD_NAME)", f"retention-{i}")).index == i
    assert container["args"][0] == "serve"
    # Each pod its own state volume; leases in the shared PostgreSQL, password from a Secret.
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["RETENTION_STATE_DIR"]["value"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert env["RETENTION_STATE_URL"]["value"].startswith("postgresql://")
    assert "@" in env["RETENTION_STATE_URL"]["value"]
    assert ":" not in env["RETENTION_STATE_URL"]["value"].split("//")[1].split("@")[0]
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "retention-postgres"
    assert spec["podManagementPolicy"] == "Parallel"
    # Governing headless Service exists; the base Service still selects the pods.
    headless = _one(OVERLAYS / "sharded" / "headless-service.yaml")
    assert headless["metadata"]["name"] == spec["serviceName"]
    assert headless["spec"]["clusterIP"] == "None"
    base_service = _one(K8S / "base" / "service.yaml")
    labels = spec["template"]["metadata"]["labels"]
    assert base_service["spec"]["selector"].items() <= labels.items()
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert _patched_away(OVERLAYS / "sharded") == {("Deployment", "retention"),
                                                   ("PersistentVolumeClaim", "retention-state")}


def test_batch_cronjob_of_an_indexed_job() -> None:
    cron = _one(OVERLAYS / "batch" / "cronjob.yaml")
    assert cron["kind"] == "CronJob"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # required by backoffLimitPerIndex
    assert job["backoffLimitPerIndex"] >= 1 and job["activeDeadlineSeconds"] > 0
    assert job["ttlSecondsAfterFinished"] > 0
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex" and rule["onExitCodes"]["values"] == [2]
    (container,) = pod["containers"]
    env = _env(container)
    index_ref = env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_ref == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    args = container["args"]
    assert args[0] == "run"
    shard = args[args.index("--shard") + 1]
    m = re.fullmatch(r"\$\(SHARD_INDEX\)/(\d+)", shard)
    assert m, shard
    n = int(m.group(1))
    assert job["completions"] == n and job["parallelism"] <= n
    assert "--once-within" in args  # a retried or doubled index skips finished accounts
    assert cron["spec"]["timeZone"] == "Etc/UTC"  # not the controller's local zone
    assert env["RETENTION_STATE_URL"]["value"].startswith("postgresql://")
    assert {d[0] for d in _patched_away(OVERLAYS / "batch")} == {
        "Deployment", "PersistentVolumeClaim", "Service", "ServiceMonitor", "PrometheusRule"}


def _ports(rules: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for r in rules for p in r["ports"]}


def test_networkpolicy_covers_every_pod_and_port() -> None:
    from retention.config.schema import DEFAULT_PORTS

    policy = _one(K8S / "base" / "networkpolicy.yaml")
    assert policy["kind"] == "NetworkPolicy"
    assert "networkpolicy.yaml" in _one(K8S / "base" / "kustomization.yaml")["resources"]
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    selector = spec["podSelector"]["matchLabels"]
    cron = _one(OVERLAYS / "batch" / "cronjob.yaml")
    pods = {
        "deployment": _one(K8S / "base" / "deployment.yaml")["spec"]["template"],
        "statefulset": _one(OVERLAYS / "sharded" / "statefulset.yaml")["spec"]["template"],
        "cronjob": cron["spec"]["jobTemplate"]["spec"]["template"],
    }
    for name, template in pods.items():  # every variant's pods are under the policy
        assert selector.items() <= template["metadata"]["labels"].items(), name
    # Ingress: the metrics port only, from Prometheus.
    (ingress,) = spec["ingress"]
    assert _ports([ingress]) == {("TCP", 9478)}
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prometheus"}
    (container,) = pods["deployment"]["spec"]["containers"]
    assert {p["containerPort"] for p in container["ports"]} == {9478}
    # Egress: DNS, every default IMAP/POP3 port, SMTP, PostgreSQL, HTTPS (OAuth2).
    egress = _ports(spec["egress"])
    assert {("UDP", 53), ("TCP", 53)} <= egress
    assert {("TCP", p) for p in DEFAULT_PORTS.values()} <= egress
    assert {("TCP", 25), ("TCP", 465), ("TCP", 587), ("TCP", 5432), ("TCP", 443)} <= egress
    assert all(not r.get("to") for r in spec["egress"])  # destinations: site-specific
    # The shipped example policy's accounts reach their servers.
    from retention.config.load import load_config

    configmap = _one(K8S / "base" / "configmap.yaml")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(configmap["data"]["policy.yaml"], encoding="utf-8")
        for account in load_config(path, env={}).accounts:
            assert ("TCP", account.effective_port()) in egress, account.name
    # The PostgreSQL the overlays use is on an allowed port.
    env = _env(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])
    assert ":5432/" in env["RETENTION_STATE_URL"]["value"]


def test_cli_flags_in_the_manifests_exist() -> None:
    from retention.cli.parser import build_parser

    cron = _one(OVERLAYS / "batch" / "cronjob.yaml")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = [a.replace("$(SHARD_INDEX)", "0") for a in container["args"]]
    ns = build_parser().parse_args(args)
    assert ns.shard == "0/8" and ns.once_within == "12h"


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not on PATH: the overlays are only checked as YAML above")
    return path


def _render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomize_renders_and_validates(kubectl: str, directory: Path) -> None:
    objects = _render(kubectl, directory)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    if directory.name == "sharded":
        assert ("StatefulSet", "retention") in kinds and ("Deployment", "retention") not in kinds
    if directory.name == "batch":
        assert ("CronJob", "retention-sweep") in kinds and ("Deployment", "retention") not in kinds
    if directory in (K8S, K8S / "base"):
        assert ("Deployment", "retention") in kinds
    assert ("NetworkPolicy", "retention") in kinds or directory.name == "postgres"
    try:
        import kubernetes_validate
    except ImportError:
        return
    for obj in objects:
        if obj["kind"] not in CRDS:
            kubernetes_validate.validate(obj, "1.33", strict=True)
