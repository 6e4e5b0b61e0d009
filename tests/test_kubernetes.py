"""deploy/kubernetes, proven without a cluster.

Every manifest is validated against the Kubernetes API schemas that `kubernetes-validate` ships
(offline, strict: an unknown field fails), then cross-checked against the code it runs: Service
selectors and ports against the pods, every `BERTH_` variable against the settings class of the
process that reads it, probe paths against the apps' real routes, container commands against
the real entry points' argument parsers, NetworkPolicies against the pods they select, the HPA
against its Deployment, the grace period against serving's shutdown settings.

The overlay is rendered here, not by a kustomize binary (none installs from PyPI): the renderer
below does only what the kustomizations use (resources, namespace, images, JSON 6902 patches)
and refuses any other field, so it cannot silently render something kustomize would not.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.configprovider
import botocore.credentials
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from berth.config import ClientSettings
from registry.config import RegistrySettings
from registry.main import create_app as create_registry
from serving.config import ServingSettings
from serving.main import create_app as create_serving
from tests.fixtures.routes import api_routes
from tests.fixtures.servers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "production"
SECRETS_EXAMPLE = DEPLOY / "secrets.example.yaml"
K8S_VERSION = "1.33.0"
"""The oldest Kubernetes these manifests claim: the preStop `sleep` action is GA from 1.30."""

Doc = dict[str, Any]

# --- a kustomize subset -------------------------------------------------------------------------

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace"}


def load_yaml(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Doc]:
    """What `kustomize build directory` prints, for the fields SUPPORTED lists."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED
    assert not unsupported, f"{directory}: the test's renderer does not know {unsupported}"
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(render(path) if path.is_dir() else load_yaml(path))
    docs = copy.deepcopy(docs)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"target", "patch"}, patch
        targets = [
            d
            for d in docs
            if all(d.get(k) == v for k, v in patch["target"].items() if k == "kind")
            and d["metadata"]["name"] == patch["target"]["name"]
        ]
        assert len(targets) == 1, f"patch target {patch['target']} matches {len(targets)}"
        for operation in yaml.safe_load(patch["patch"]):
            json_patch(targets[0], operation)
    for image in kustomization.get("images", []):
        for container in (c for d in docs for c in containers(d)):
            name, _, _ = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def json_patch(doc: Doc, operation: Doc) -> None:
    """One RFC 6902 `add` or `replace` (all the overlay needs)."""
    assert operation["op"] in {"add", "replace"}, operation
    *parents, last = [
        p.replace("~1", "/").replace("~0", "~") for p in operation["path"][1:].split("/")
    ]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if operation["op"] == "add":
            node.insert(index, operation["value"])
        else:
            node[index] = operation["value"]
    else:
        if operation["op"] == "replace":
            assert last in node, f"replace of a missing {operation['path']}"
        node[last] = operation["value"]


# --- reading the manifests ----------------------------------------------------------------------


def pod_template(doc: Doc) -> Doc | None:
    if doc["kind"] in {"Deployment", "Job"}:
        template: Doc = doc["spec"]["template"]
        return template
    if doc["kind"] == "CronJob":
        cron: Doc = doc["spec"]["jobTemplate"]["spec"]["template"]
        return cron
    return None


def containers(doc: Doc) -> list[Doc]:
    template = pod_template(doc)
    if template is None:
        return []
    found: list[Doc] = template["spec"]["containers"]
    return found


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if pod_template(d) is not None]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against a pod's labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def pod_labels(doc: Doc) -> dict[str, str]:
    template = pod_template(doc)
    assert template is not None
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


def module_of(container: Doc) -> str:
    command = container["command"]
    assert command[:2] == ["python", "-m"], f"{container['name']}: not `python -m`: {command}"
    module: str = command[2]
    return module


SETTINGS: dict[str, type[BaseSettings]] = {"registry": RegistrySettings, "serving": ServingSettings}
"""The settings class each entry point reads (`python -m registry` / `python -m serving`)."""


def env_names(container: Doc, docs: list[Doc], secrets: list[Doc]) -> dict[str, str]:
    """Every variable the container gets, with where it comes from."""
    names: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = find(docs, "ConfigMap", source["configMapRef"]["name"])
            names |= {k: f"ConfigMap {config['metadata']['name']}" for k in config["data"]}
        else:
            secret = find(secrets, "Secret", source["secretRef"]["name"])
            names |= {k: f"Secret {secret['metadata']['name']}" for k in secret["stringData"]}
    for variable in container.get("env", []):
        names[variable["name"]] = "env"
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is not None:
            secret = find(secrets, "Secret", reference["name"])
            assert reference["key"] in secret["stringData"], (
                f"{container['name']}: Secret {reference['name']} has no key {reference['key']}"
            )
    return names


def aws_variables() -> set[str]:
    """The AWS_ variables botocore reads (configuration and environment credentials)."""
    session = botocore.configprovider.BOTOCORE_DEFAUT_SESSION_VARIABLES
    names = {v[1] for v in session.values() if isinstance(v[1], str)}
    provider = botocore.credentials.EnvProvider
    names |= {provider.ACCESS_KEY, provider.SECRET_KEY, *provider.TOKENS}
    # The endpoint variables are read by botocore's endpoint resolution, not the table above.
    return names | {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"}


def env_prefix_fields(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {"base": render(BASE), "production": render(OVERLAY)}


@pytest.fixture(scope="module")
def docs(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """The production overlay: what `kubectl apply -k overlays/production` creates."""
    return rendered["production"]


@pytest.fixture(scope="module")
def secrets() -> list[Doc]:
    return load_yaml(SECRETS_EXAMPLE)


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, set[str]]]:
    """GET paths of the real apps, by entry point; building an app opens no connection."""
    data = tmp_path_factory.mktemp("routes")
    registry = create_registry(RegistrySettings(data_dir=data))
    serving = create_serving(ServingSettings(load_isolation=False, replica_id="routes"))

    def paths(app: Any) -> set[str]:
        found = {r.path for r in api_routes(app.routes) if "GET" in (r.methods or set())}
        found |= {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}
        return found

    return {"registry": {"GET": paths(registry)}, "serving": {"GET": paths(serving)}}


# --- schemas ------------------------------------------------------------------------------------


def every_manifest() -> Iterator[Any]:
    for name, docs in (
        ("base", render(BASE)),
        ("production", render(OVERLAY)),
        ("secrets.example", load_yaml(SECRETS_EXAMPLE)),
    ):
        for doc in docs:
            where = f"{name}:{doc['kind']}/{doc['metadata']['name']}"
            yield pytest.param(where, doc, id=where)


@pytest.mark.parametrize(("where", "doc"), list(every_manifest()))
def test_every_manifest_is_valid_against_the_kubernetes_schema(where: str, doc: Doc) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_the_overlay_has_everything_the_issue_lists(docs: list[Doc]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "berth-registry"),
        ("Service", "berth-registry"),
        ("PodDisruptionBudget", "berth-registry"),
        ("Deployment", "berth-serving"),
        ("Service", "berth-serving"),
        ("HorizontalPodAutoscaler", "berth-serving"),
        ("Job", "berth-migrate"),
        ("CronJob", "berth-gc"),
        ("ConfigMap", "berth-registry"),
        ("ConfigMap", "berth-serving"),
    } <= kinds
    assert find(docs, "Deployment", "berth-registry")["spec"]["replicas"] == 2
    assert find(docs, "Deployment", "berth-serving")["spec"]["replicas"] == 3
    assert all(d["metadata"].get("namespace") == "berth" for d in docs if d["kind"] != "Namespace")


def test_the_overlay_renames_the_image_and_patches_what_it_says(
    rendered: dict[str, list[Doc]],
) -> None:
    images = {c["image"] for d in rendered["production"] for c in containers(d)}
    assert images == {"registry.example.com/berth:0.1.0"}
    assert {c["image"] for d in rendered["base"] for c in containers(d)} == {"berth"}
    hpa = find(rendered["production"], "HorizontalPodAutoscaler", "berth-serving")
    assert hpa["spec"]["maxReplicas"] == 30


# --- the image and its entry points -------------------------------------------------------------


class Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def parse_with_real_parser(module: str, args: list[str]) -> argparse.Namespace:
    """Run `python -m module args` up to its argument parsing, and stop there."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *a: Any, **kw: Any) -> Any:
        raise Parsed(real(self, *a, **kw))

    entry = importlib.import_module(f"{module}.__main__")
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            entry.main(args)
        except Parsed as parsed:
            return parsed.namespace
        except SystemExit as exc:
            pytest.fail(f"python -m {module} {' '.join(args)}: the parser refused it ({exc})")
    pytest.fail(f"python -m {module} never parsed its arguments")


def test_every_container_runs_a_real_entry_point_of_the_dockerfile_image(
    docs: list[Doc],
) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert "/opt/berth/bin:$PATH" in dockerfile  # where the image's `python` comes from
    for workload in workloads(docs):
        template = pod_template(workload)
        assert template is not None
        assert template["spec"]["securityContext"]["runAsUser"] == uid
        for container in containers(workload):
            module = module_of(container)
            assert importlib.util.find_spec(f"{module}.__main__") is not None
            namespace = parse_with_real_parser(module, container["args"])
            if module == "registry":
                assert namespace.command in {"serve", "db", "gc"}
            for port in container.get("ports", []):
                assert namespace.port == port["containerPort"]
                assert namespace.host == "0.0.0.0"


def test_migrations_and_gc_run_the_commands_they_are_named_for(docs: list[Doc]) -> None:
    (migrate,) = containers(find(docs, "Job", "berth-migrate"))
    assert parse_with_real_parser("registry", migrate["args"]).action == "upgrade"
    (gc,) = containers(find(docs, "CronJob", "berth-gc"))
    assert parse_with_real_parser("registry", gc["args"]).command == "gc"


# --- configuration ------------------------------------------------------------------------------


def test_every_variable_is_one_the_process_reads(docs: list[Doc], secrets: list[Doc]) -> None:
    aws = aws_variables()
    for workload in workloads(docs):
        for container in containers(workload):
            module = module_of(container)
            fields = env_prefix_fields(SETTINGS[module])
            for name, source in env_names(container, docs, secrets).items():
                where = f"{workload['metadata']['name']}/{container['name']} {name} ({source})"
                if name.startswith("BERTH_"):
                    assert name in fields, f"{where}: {SETTINGS[module].__name__} has no field"
                elif name.startswith("AWS_"):
                    assert module == "registry", f"{where}: only the registry talks to S3"
                    assert name in aws, f"{where}: not a variable botocore reads"
                else:
                    pytest.fail(f"{where}: neither BERTH_ nor AWS_")


def test_every_configuration_value_parses_as_its_settings_field(
    docs: list[Doc], secrets: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, settings in SETTINGS.items():
        config = find(docs, "ConfigMap", f"berth-{name}")
        secret = find(secrets, "Secret", f"berth-{name}")
        for key in list(ClientSettings.model_fields):
            monkeypatch.delenv(f"BERTH_{key.upper()}", raising=False)
        for key, value in {**config["data"], **secret["stringData"]}.items():
            monkeypatch.setenv(key, value)
        settings()  # raises on a value the field refuses
        for key in {**config["data"], **secret["stringData"]}:
            monkeypatch.delenv(key)


def test_serving_never_gets_database_or_s3_credentials(docs: list[Doc], secrets: list[Doc]) -> None:
    (serving,) = containers(find(docs, "Deployment", "berth-serving"))
    names = env_names(serving, docs, secrets)
    assert not {n for n in names if n.startswith("AWS_")}
    assert "BERTH_DATABASE_URL" not in names
    assert "BERTH_REGISTRY_TOKEN" in names
    registry = find(docs, "ConfigMap", "berth-registry")["data"]
    # Serving may reach only the registry, so the registry must not redirect it to S3.
    assert (
        RegistrySettings(artifact_redirect=registry["BERTH_ARTIFACT_REDIRECT"]).artifact_redirect
        is False
    )


# --- Services, probes, ports --------------------------------------------------------------------


def test_services_select_their_deployment_and_target_a_container_port(docs: list[Doc]) -> None:
    for service in by_kind(docs, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        chosen = [d for d in by_kind(docs, "Deployment") if selects(selector, pod_labels(d))]
        assert [d["metadata"]["name"] for d in chosen] == [service["metadata"]["name"]]
        ports = {
            key
            for c in containers(chosen[0])
            for p in c["ports"]
            for key in (p["name"], p["containerPort"])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port}"


def test_deployments_select_their_own_pods(docs: list[Doc]) -> None:
    for deployment in by_kind(docs, "Deployment"):
        assert selects(deployment["spec"]["selector"], pod_labels(deployment))
    for budget in by_kind(docs, "PodDisruptionBudget"):
        chosen = [
            d
            for d in by_kind(docs, "Deployment")
            if selects(budget["spec"]["selector"], pod_labels(d))
        ]
        assert [d["metadata"]["name"] for d in chosen] == [budget["metadata"]["name"]]


def test_probes_ask_real_routes_on_the_container_port(
    docs: list[Doc], routes: dict[str, dict[str, set[str]]]
) -> None:
    for deployment in by_kind(docs, "Deployment"):
        for container in containers(deployment):
            module = module_of(container)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for kind in ("readinessProbe", "livenessProbe"):
                probe = container[kind]["httpGet"]
                assert probe["path"] in routes[module]["GET"], (
                    f"{module} has no GET {probe['path']}"
                )
                port = probe["port"]
                assert port in ports or port in ports.values(), f"{module} {kind}: port {port}"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_autoscaler_scales_the_serving_deployment(docs: list[Doc]) -> None:
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    deployment = find(docs, target["kind"], target["name"])
    assert target["apiVersion"] == deployment["apiVersion"]
    assert pod_labels(deployment)["app.kubernetes.io/component"] == "serving"
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]


def test_serving_grace_period_covers_its_shutdown_delay_and_drain(docs: list[Doc]) -> None:
    serving = find(docs, "Deployment", "berth-serving")
    config = find(docs, "ConfigMap", "berth-serving")["data"]
    settings = ServingSettings(
        shutdown_delay_seconds=config["BERTH_SHUTDOWN_DELAY_SECONDS"],
        shutdown_drain_seconds=config["BERTH_SHUTDOWN_DRAIN_SECONDS"],
    )
    assert settings.shutdown_delay_seconds > 0, "Kubernetes needs the not-ready delay"
    # The app's own shutdown after the drain: deregistering (2 s at most) and the loader child.
    shutdown_margin = 5
    grace = serving["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert (
        grace > settings.shutdown_delay_seconds + settings.shutdown_drain_seconds + shutdown_margin
    )
    # Readiness must notice the 503 well within the delay.
    probe = containers(serving)[0]["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] < settings.shutdown_delay_seconds


# --- pod security -------------------------------------------------------------------------------


def test_every_pod_is_non_root_read_only_and_without_capabilities(docs: list[Doc]) -> None:
    for workload in workloads(docs):
        template = pod_template(workload)
        assert template is not None
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            # The one writable place: an emptyDir on /tmp (downloads, Python's temp files).
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]]
            assert "memory" in container["resources"]["limits"]
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    (namespace,) = by_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- network policy -----------------------------------------------------------------------------


def policies_for(docs: list[Doc], labels: dict[str, str]) -> list[Doc]:
    return [p for p in by_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def egress_rules(docs: list[Doc], labels: dict[str, str]) -> list[Doc]:
    return [
        rule
        for policy in policies_for(docs, labels)
        if "Egress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("egress", [])
    ]


def is_dns(rule: Doc) -> bool:
    return {p["port"] for p in rule["ports"]} == {53} and all(
        peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
        for peer in rule["to"]
    )


def test_every_network_policy_selects_berth_pods(docs: list[Doc]) -> None:
    pods = [pod_labels(w) for w in workloads(docs)]
    for policy in by_kind(docs, "NetworkPolicy"):
        assert any(selects(policy["spec"]["podSelector"], labels) for labels in pods), policy


def test_every_berth_pod_is_denied_by_default(docs: list[Doc]) -> None:
    for workload in workloads(docs):
        denying = [
            p
            for p in policies_for(docs, pod_labels(workload))
            if set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and "ingress" not in p["spec"]
            and "egress" not in p["spec"]
        ]
        assert denying, workload["metadata"]["name"]


def test_serving_reaches_only_the_registry_and_dns(docs: list[Doc]) -> None:
    serving = find(docs, "Deployment", "berth-serving")
    registry = find(docs, "Deployment", "berth-registry")
    (registry_port,) = containers(registry)[0]["ports"]
    for rule in egress_rules(docs, pod_labels(serving)):
        if is_dns(rule):
            continue
        assert rule.get("to"), "an egress rule without peers allows everything"
        for peer in rule["to"]:
            assert set(peer) == {"podSelector"}, f"serving may reach {peer}"
            chosen = [w for w in workloads(docs) if selects(peer["podSelector"], pod_labels(w))]
            assert [w["metadata"]["name"] for w in chosen] == ["berth-registry"]
        assert [p["port"] for p in rule["ports"]] == [registry_port["containerPort"]]


def test_only_registry_migrations_and_gc_reach_postgres_and_s3(docs: list[Doc]) -> None:
    def reaches(labels: dict[str, str], port: int) -> bool:
        return any(
            port in {p["port"] for p in rule.get("ports", [])}
            and any("ipBlock" in peer for peer in rule["to"])
            for rule in egress_rules(docs, labels)
        )

    reaching = {
        w["metadata"]["name"]: (reaches(pod_labels(w), 5432), reaches(pod_labels(w), 443))
        for w in workloads(docs)
    }
    assert reaching == {
        "berth-registry": (True, True),
        "berth-serving": (False, False),
        "berth-migrate": (True, True),
        "berth-gc": (True, True),
    }
    storage = find(docs, "NetworkPolicy", "berth-storage-clients")
    postgres = storage["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"]
    assert ipaddress.ip_network(postgres).is_private


def test_the_readmes_staged_applies_bring_what_each_stage_needs(docs: list[Doc]) -> None:
    """README: `kubectl apply -k ... -l app.kubernetes.io/component=X` for migrations, then
    the registry (to mint serving's token), then everything."""

    def labelled(component: str) -> list[Doc]:
        return [
            d
            for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]

    assert [d["kind"] for d in labelled("migrations")] == ["Job"]
    registry = labelled("registry")
    (deployment,) = by_kind(registry, "Deployment")
    for container in containers(deployment):
        for source in container.get("envFrom", []):
            find(registry, "ConfigMap", source["configMapRef"]["name"])
    assert find(registry, "Service", "berth-registry")
