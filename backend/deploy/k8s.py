"""The deployment on Kubernetes: manifests generated from the inventory, as Python data dumped to
YAML (`tradeops deploy k8s`). No cluster is needed to make them; the tests validate them against
a pinned Kubernetes version's schemas (kubernetes-validate).

- A Namespace.
- Per service (the target environment, as in the compose file): a Deployment with the inventory's
  `replicas`, rolled out start-first (maxSurge 1, maxUnavailable 0), each pod one instance named
  by the pod (TRADEOPS_INSTANCE from `metadata.name`), its readiness the heartbeat's health check
  as an exec probe (backend.runtime.healthcheck: a fresh `running` heartbeat), `TERMINATION_GRACE`
  to drain on SIGTERM; a Service for its inventory port; a PodDisruptionBudget for the services
  the inventory rates high risk (a voluntary eviction never takes the last ready instance).
- Secrets are referenced, never inlined: each service's Secret (`tradeops-<service>`: its Redis
  password and the secrets its class declares, under the Docker secrets' names) is mounted
  read-only under /run/secrets, and the `*_FILE` variables name the files (backend.secrets'
  convention); the Secrets themselves are made out of band (`secret_commands`: kubectl from the
  data dir's files). No manifest holds a secret value.
- A NetworkPolicy per CPGS lane: the pods of a lane (label `tradeops.io/lane-<lane>`) take
  traffic from and send it to the pods of that lane, and DNS; the frontend lane also reaches the
  outside (the venues); the backend and low-latency lanes reach nothing else (the compose file's
  internal backend network, a step stricter). A pod on two lanes has both.
- The bus's Redis: a StatefulSet (the embedded server's settings, `workload.redis_args`, with the
  generated users' ACL file from a Secret and a volume claim) with its headless Service, on the
  inventory's Redis lanes; or an external URL, which every lane may then reach on its port."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from backend.deploy.workload import (
    ACL_FILE,
    ACL_SECRET,
    INSTANCE_ENV,
    REDIS_DATA,
    REDIS_PORT,
    Workload,
    dump_yaml,
    redis_args,
)
from backend.migration import inventory
from backend.migration.compose import LANES
from backend.runtime.secretfiles import CONTAINER_DIR

KUBERNETES_VERSION = "1.33.0"
"""The Kubernetes version the manifests are written for (and validated against in the tests)."""
PART_OF = "tradeops"
REDIS = "redis"
REDIS_IMAGE = "redis:7.2"
REDIS_STORAGE = "10Gi"
REDIS_USER = 999  # the redis image's `redis` user (its entrypoint runs the server as it already)
ENVIRONMENT = "target"
TERMINATION_GRACE = 20
RUN_AS = 10001  # the production image's `tradeops` user (Dockerfile)
SECRET_MODE = 0o440


def lane_label(lane: str) -> str:
    return f"tradeops.io/lane-{lane}"


def secret_name(service: str) -> str:
    """The Secret a service's files come from (made out of band: `secret_commands`)."""
    return f"tradeops-{service}"


def _meta(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": PART_OF, **(labels or {})}}


def _pod_labels(name: str, lanes: Sequence[str]) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": PART_OF,
        **{lane_label(x): "true" for x in lanes},
    }


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def deployment(w: Workload, image: str, namespace: str, redis_url: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in w.env(redis_url, ENVIRONMENT).items()]
    env.append({"name": INSTANCE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    selector = {"app.kubernetes.io/name": w.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            w.name,
            namespace,
            {
                "app.kubernetes.io/name": w.name,
                "tradeops.io/priority": str(w.spec.priority),
                "tradeops.io/risk": w.spec.risk,
            },
        ),
        "spec": {
            "replicas": w.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": _pod_labels(w.name, list(w.spec.lanes))},
                "spec": {
                    "terminationGracePeriodSeconds": TERMINATION_GRACE,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                    },
                    "containers": [
                        {
                            "name": w.name,
                            "image": image,
                            "command": w.entrypoint(),
                            "args": w.args(ENVIRONMENT),
                            "env": env,
                            "ports": [{"name": "service", "containerPort": w.spec.port, "protocol": "TCP"}],
                            "readinessProbe": {
                                "exec": {"command": w.health()},
                                "initialDelaySeconds": 2,
                                "periodSeconds": 5,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "volumeMounts": [{"name": "secrets", "mountPath": CONTAINER_DIR, "readOnly": True}],
                            "securityContext": _security(),
                        }
                    ],
                    "volumes": [
                        {
                            "name": "secrets",
                            "secret": {
                                "secretName": secret_name(w.name),
                                "defaultMode": SECRET_MODE,
                                "items": [{"key": f.name, "path": f.name} for f in w.files],
                            },
                        }
                    ],
                },
            },
        },
    }


def service(w: Workload, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(w.name, namespace, {"app.kubernetes.io/name": w.name}),
        "spec": {
            "selector": {"app.kubernetes.io/name": w.name},
            "ports": [{"name": "service", "port": w.spec.port, "targetPort": w.spec.port, "protocol": "TCP"}],
        },
    }


def disruption_budget(w: Workload, namespace: str) -> dict[str, Any]:
    """A high-risk service: a voluntary eviction keeps all but one instance, and never the last."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(w.name, namespace, {"app.kubernetes.io/name": w.name}),
        "spec": {
            "minAvailable": max(1, w.replicas - 1),
            "selector": {"matchLabels": {"app.kubernetes.io/name": w.name}},
        },
    }


def lane_policy(lane: str, namespace: str, redis_port: int | None) -> dict[str, Any]:
    """The pods of `lane` talk to the pods of `lane` (and DNS); the frontend lane also to the
    outside; `redis_port`: an external Redis, reached on that port from every lane."""
    peers = [{"podSelector": {"matchLabels": {lane_label(lane): "true"}}}]
    egress: list[dict[str, Any]] = [
        {"to": peers},
        {
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]
    if lane == "frontend":
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    if redis_port is not None:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": redis_port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"lane-{lane}", namespace, {"tradeops.io/lane": lane}),
        "spec": {
            "podSelector": {"matchLabels": {lane_label(lane): "true"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers}],
            "egress": egress,
        },
    }


def redis_objects(namespace: str) -> list[dict[str, Any]]:
    """The bus's Redis: a one-replica StatefulSet with its volume claim and the ACL file from a
    Secret, and its headless Service."""
    lanes = list(inventory.load().infra_spec("redis").lanes)
    labels = {"app.kubernetes.io/name": REDIS}
    probe = {"exec": {"command": ["sh", "-c", "redis-cli ping | grep -qE 'PONG|NOAUTH'"]}, "periodSeconds": 5}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(REDIS, namespace, labels),
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": REDIS_PORT, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(REDIS, namespace, labels),
            "spec": {
                "serviceName": REDIS,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": _pod_labels(REDIS, lanes)},
                    "spec": {
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": REDIS_USER,
                            "runAsGroup": REDIS_USER,
                            "fsGroup": REDIS_USER,
                        },
                        "containers": [
                            {
                                "name": REDIS,
                                "image": REDIS_IMAGE,
                                "args": ["redis-server", *redis_args()],
                                "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
                                "readinessProbe": probe,
                                "volumeMounts": [
                                    {"name": "data", "mountPath": REDIS_DATA},
                                    {"name": "acl", "mountPath": CONTAINER_DIR, "readOnly": True},
                                ],
                                "securityContext": _security(),
                            }
                        ],
                        "volumes": [
                            {
                                "name": "acl",
                                "secret": {
                                    "secretName": secret_name(REDIS),
                                    "defaultMode": SECRET_MODE,
                                    "items": [{"key": ACL_SECRET, "path": ACL_SECRET}],
                                },
                            }
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": REDIS_STORAGE}},
                        },
                    }
                ],
            },
        },
    ]


def manifests(
    works: list[Workload], *, image: str = "tradeops:latest", namespace: str = "tradeops", redis_url: str | None = None
) -> list[dict[str, Any]]:
    """Every object, the Namespace first (see the module docstring)."""
    bus = redis_url or f"redis://{REDIS}.{namespace}.svc:{REDIS_PORT}/0"
    external_port = (urlparse(redis_url).port or REDIS_PORT) if redis_url else None
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/part-of": PART_OF}},
        }
    ]
    if redis_url is None:
        docs += redis_objects(namespace)
    docs += [lane_policy(lane, namespace, external_port) for lane in LANES]
    for w in works:
        docs += [deployment(w, image, namespace, bus), service(w, namespace)]
        if w.spec.risk == "high":
            docs.append(disruption_budget(w, namespace))
    return docs


def file_of(doc: dict[str, Any]) -> str:
    """Which file an object goes to: applied in name order, the Namespace first."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind == "Namespace":
        return "00-namespace.yaml"
    if kind == "NetworkPolicy":
        return "10-network-policies.yaml"
    if name == REDIS:
        return "20-redis.yaml"
    return f"30-{name}.yaml"


def write(docs: list[dict[str, Any]], out: Path) -> list[Path]:
    """The manifests, one file per service (and the namespace, the policies, Redis), into `out`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        groups.setdefault(file_of(d), []).append(d)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, group in sorted(groups.items()):
        p = out / name
        p.write_text(
            f"# generated by `tradeops deploy k8s` from the inventory (Kubernetes {KUBERNETES_VERSION})\n"
            + dump_yaml(group)
        )
        paths.append(p)
    return paths


def secret_commands(works: list[Workload], secrets_dir: Path, namespace: str, *, with_redis: bool = True) -> list[str]:
    """The kubectl commands that make the Secrets the manifests name, from the files of the
    workloads (the data dir's secrets): paths only, no value."""
    lines = []
    if with_redis:
        acl = Path(secrets_dir) / ACL_FILE
        lines.append(
            f"kubectl -n {namespace} create secret generic {secret_name(REDIS)} --from-file={ACL_SECRET}={acl}"
        )
    for w in works:
        files = " ".join(f"--from-file={f.name}={f.host}" for f in w.files)
        lines.append(f"kubectl -n {namespace} create secret generic {secret_name(w.name)} {files}")
    return lines
