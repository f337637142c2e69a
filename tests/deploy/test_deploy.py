"""The production deployment files, checked offline: compose, Kubernetes, Prometheus, Grafana."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams.metrics import Metrics
from streams.settings import ENV_VARS, Settings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DOCKERFILE = ROOT / "Dockerfile"

# Validated against the oldest Kubernetes we support and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
WEB_PORT = 6066
REQUIRED_SECRETS = ("LINKWATCH_SECRET", "LINKWATCH_PSEUDONYM_KEY", "GRAFANA_ADMIN_PASSWORD")
SECRET_VARIABLES = ("LINKWATCH_SECRET", "LINKWATCH_PSEUDONYM_KEY", "LINKWATCH_WEBHOOK_SECRET")
# Settings the deployment already sets while they are being added to streams/settings.py.
PENDING_SETTINGS: frozenset[str] = frozenset()
KNOWN_SETTINGS = frozenset(variable for variable, _ in ENV_VARS.values()) | PENDING_SETTINGS
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


# ---------------------------------------------------------------- docker-compose


def compose_env(without: Iterable[str] = ()) -> dict[str, str]:
    """The caller's environment without any linkwatch or compose settings, plus dummy secrets:
    the result must not depend on what the developer happens to have exported."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LINKWATCH_", "GRAFANA_", "KAFKA_", "COMPOSE_"))
    }
    env.update({name: f"test-only-{name.lower()}" for name in REQUIRED_SECRETS})
    for name in without:
        env.pop(name)
    return env


def docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make deploy-tools` installs Debian's"
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables substituted)."""
    result = docker_compose("config", env=compose_env())
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def kafka_services(services: dict[str, Any]) -> dict[str, Any]:
    return {
        name: service
        for name, service in services.items()
        if str(service.get("image", "")).startswith("apache/kafka:")
    }


def worker_services(services: dict[str, Any]) -> dict[str, Any]:
    return {
        name: service
        for name, service in services.items()
        if "build" in service and service.get("command") == ["worker"]
    }


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs, from the short or the long syntax."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((int(port["published"]), int(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, from the short or the long volume syntax."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = str(volume["source"])
        else:
            source, target = str(volume).split(":")[:2]
            found[target] = source
    return found


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = docker_compose("config", "-q", env=compose_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    result = docker_compose("config", "-q", env=compose_env(without=[missing]))
    assert result.returncode != 0
    assert missing in result.stderr


def test_secrets_are_substituted_never_written_in_the_compose_file(
    services: dict[str, Any],
) -> None:
    text = COMPOSE.read_text()
    for name in (*SECRET_VARIABLES, "GF_SECURITY_ADMIN_PASSWORD"):
        values = re.findall(rf"^\s*{name}:\s*(.+)$", text, flags=re.MULTILINE)
        assert values, f"{name} is not set in the compose file"
        for value in values:
            assert re.fullmatch(r"\$\{[A-Z_]+:[?-].*\}", value.strip()), (name, value)
    for worker in worker_services(services).values():
        assert worker["environment"]["LINKWATCH_SECRET"] == "test-only-linkwatch_secret"


def test_three_kafka_nodes_form_one_kraft_quorum(services: dict[str, Any]) -> None:
    kafkas = kafka_services(services)
    assert len(kafkas) == 3
    envs = {name: service["environment"] for name, service in kafkas.items()}
    node_ids = {name: str(env["KAFKA_NODE_ID"]) for name, env in envs.items()}
    assert sorted(node_ids.values()) == ["1", "2", "3"]
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voters) == 1
    voter_set = set(voters.pop().split(","))
    for name, env in envs.items():
        assert "ZOOKEEPER" not in " ".join(env)
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        controller_port = re.search(r"CONTROLLER://[^:]*:(\d+)", env["KAFKA_LISTENERS"])
        assert controller_port, env["KAFKA_LISTENERS"]
        assert f"{node_ids[name]}@{name}:{controller_port.group(1)}" in voter_set
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert mounts(kafkas[name]).get(env["KAFKA_LOG_DIRS"]), "the log dir must be a volume"


def test_kafka_keeps_three_copies_and_needs_two_for_a_write(services: dict[str, Any]) -> None:
    for service in kafka_services(services).values():
        env = service["environment"]
        image_tag = service["image"].partition(":")[2]
        assert re.fullmatch(r"(3\.9|4\.\d+)\.\d+", image_tag), service["image"]
        assert str(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
        assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
        assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == "2"


def test_topics_run_once_with_replication_three_after_the_brokers_are_healthy(
    services: dict[str, Any],
) -> None:
    topics = services["topics"]
    assert topics["command"] == ["topics"]
    assert str(topics.get("restart", "no")) == "no"
    settings = Settings.from_env(topics["environment"])
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    brokers = set(settings.bootstrap.split(","))
    assert brokers == {f"{name}:9092" for name in kafka_services(services)}
    assert topics["depends_on"] == {
        name: {"condition": "service_healthy"} for name in kafka_services(services)
    }


def test_two_workers_share_one_namespace_on_their_own_ports(services: dict[str, Any]) -> None:
    workers = worker_services(services)
    assert sorted(workers) == ["worker-1", "worker-2"]
    settings = {name: Settings.from_env(w["environment"]) for name, w in workers.items()}
    assert len({s.namespace for s in settings.values()}) == 1
    assert len({s.bootstrap for s in settings.values()}) == 1
    topics = Settings.from_env(services["topics"]["environment"])
    host_ports = []
    for name, worker in workers.items():
        assert Path(worker["build"]["context"]).resolve() == ROOT
        assert worker["image"] == services["topics"]["image"]
        assert settings[name].web_host == "0.0.0.0"
        assert settings[name].web_port == WEB_PORT
        assert settings[name].own_url == f"http://{name}:{WEB_PORT}"
        # A worker creates missing topics too: it must ask for what the topics job asks for.
        assert settings[name].replication_factor == topics.replication_factor
        assert settings[name].min_insync_replicas == topics.min_insync_replicas
        assert settings[name].namespace == topics.namespace
        assert worker["environment"]["LINKWATCH_IDEMPOTENT_PRODUCER"] == "true"
        assert mounts(worker).get(str(settings[name].data_dir)), "the journal needs a volume"
        ports = published_ports(worker)
        assert [container for _, container in ports] == [WEB_PORT]
        host_ports += [host for host, _ in ports]
        assert worker["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
        for kafka in kafka_services(services):
            assert worker["depends_on"][kafka] == {"condition": "service_healthy"}
        assert any("/healthz" in part for part in worker["healthcheck"]["test"])
    assert len(set(host_ports)) == len(host_ports)


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name == "topics":
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] in {"service_healthy", "service_completed_successfully"}


def test_prometheus_and_grafana_are_pinned_and_provisioned(services: dict[str, Any]) -> None:
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    assert Path(mounts(prometheus)["/etc/prometheus"]).resolve() == PROMETHEUS
    grafana_mounts = {target: Path(source).resolve() for target, source in mounts(grafana).items()}
    assert grafana_mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/linkwatch.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert grafana_mounts[dashboards_path] == GRAFANA / "dashboards"
    assert grafana["depends_on"]["prometheus"] == {"condition": "service_healthy"}


def test_every_linkwatch_variable_in_the_deployment_is_a_setting(
    services: dict[str, Any],
) -> None:
    """A misspelt variable is silently ignored by the worker; catch it here."""
    configmap = load_k8s("configmap.yaml")[0]["data"]
    used = set(configmap) | {
        name
        for service in services.values()
        for name in service.get("environment", {})
        if name.startswith("LINKWATCH_")
    }
    assert used - KNOWN_SETTINGS == set()


# ---------------------------------------------------------------- Kubernetes


def load_k8s(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def k8s_manifests() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_by_kind() -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for path in k8s_manifests():
        for doc in load_k8s(path.name):
            kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def one(kind: str) -> dict[str, Any]:
    found = k8s_by_kind().get(kind, [])
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", k8s_manifests(), ids=lambda path: path.name)
def test_manifest_validates_strictly(manifest: Path, version: str) -> None:
    binary = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run(
        [str(binary), "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A kind without a schema is only a warning; it must not pass for a validated resource.
    assert not re.search(r"^(WARN|ERROR)", output, flags=re.MULTILINE), output
    assert output.count(" passed for resource ") == len(load_k8s(manifest.name)), output


def test_the_expected_resources_exist_and_carry_no_namespace() -> None:
    kinds = k8s_by_kind()
    for kind in (
        "ConfigMap",
        "Secret",
        "StatefulSet",
        "Job",
        "PodDisruptionBudget",
    ):
        assert len(kinds.get(kind, [])) == 1, kind
    assert len(kinds["Service"]) == 2
    for docs in kinds.values():
        for doc in docs:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env_values(spec: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in spec.get("env", [])}


def test_worker_statefulset_probes_health_and_keeps_its_journal() -> None:
    statefulset = one("StatefulSet")
    spec = statefulset["spec"]
    worker = container(statefulset)
    config = Settings.from_env(one("ConfigMap")["data"])
    assert spec["replicas"] == 2
    assert worker["args"] == ["worker"]
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    assert WEB_PORT in ports.values()
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = worker[probe_name]["httpGet"]
        assert probe["path"] == "/healthz"
        assert ports.get(probe["port"], probe["port"]) == WEB_PORT
    liveness = worker["livenessProbe"]
    assert liveness.get("initialDelaySeconds", 0) >= 30 or "startupProbe" in worker
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    claims = {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    data_mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    assert data_mounts[str(config.data_dir)] in claims


def test_worker_statefulset_requests_resources_and_runs_unprivileged() -> None:
    statefulset = one("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    worker = container(statefulset)
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(worker["resources"][bound]), bound
    security = {**pod.get("securityContext", {}), **worker.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == dockerfile_uid()
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    # The read-only root needs a writable /tmp.
    assert "/tmp" in {m["mountPath"] for m in worker["volumeMounts"]}


def test_worker_reads_its_secrets_from_the_secret_and_the_rest_from_the_configmap() -> None:
    worker = container(one("StatefulSet"))
    secret, configmap = one("Secret"), one("ConfigMap")
    env = env_values(worker)
    for name in SECRET_VARIABLES:
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["data"]
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in worker["envFrom"]
    assert not set(SECRET_VARIABLES) & set(configmap["data"]), "secrets belong in the Secret"
    # Each worker announces its own stable name under the headless Service.
    headless = [s for s in k8s_by_kind()["Service"] if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    assert one("StatefulSet")["spec"]["serviceName"] == headless[0]["metadata"]["name"]
    assert f".{headless[0]['metadata']['name']}:{WEB_PORT}" in env["LINKWATCH_WEB_URL"]["value"]


def test_the_secret_holds_only_obvious_placeholders() -> None:
    secret = one("Secret")
    assert set(secret["data"]) == set(SECRET_VARIABLES)
    for value in secret["data"].values():
        assert "REPLACE" in base64.b64decode(value, validate=True).decode()
    assert "replace" in (K8S / "secret.yaml").read_text().split("apiVersion")[0].lower()


def test_configmap_is_a_valid_production_configuration() -> None:
    settings = Settings.from_env(one("ConfigMap")["data"])
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    assert settings.web_host == "0.0.0.0"
    assert settings.web_port == WEB_PORT
    assert settings.partitions >= one("StatefulSet")["spec"]["replicas"]


def test_topics_job_uses_the_worker_image_and_configuration() -> None:
    job, statefulset = one("Job"), one("StatefulSet")
    task = container(job)
    assert task["args"] == ["topics"]
    assert task["image"] == container(statefulset)["image"]
    assert task["envFrom"] == container(statefulset)["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_services_and_budget_select_the_worker_pods() -> None:
    statefulset = one("StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = k8s_by_kind()["Service"]
    api = [s for s in services if s["spec"].get("clusterIP") != "None"]
    assert len(api) == 1 and api[0]["spec"].get("type", "ClusterIP") == "ClusterIP"
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        assert [port["port"] for port in service["spec"]["ports"]] == [WEB_PORT]
    budget = one("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


# ---------------------------------------------------------------- Prometheus and Grafana


def exposed_series() -> dict[str, set[str]]:
    """Every series name a worker exposes (from its real /metrics text), with its labels."""
    metrics = Metrics()
    text = metrics.exposition().decode()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    labels: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        base = collector._name
        label_names = set(collector._labelnames)
        if collector._type == "counter":
            labels[f"{base}_total"] = label_names
        elif collector._type == "histogram":
            for suffix in ("_sum", "_count"):
                labels[base + suffix] = label_names
            labels[f"{base}_bucket"] = label_names | {"le"}
        else:
            labels[base] = label_names
    assert set(labels) <= names, set(labels) - names
    return labels


def sample_values(label: str, series: str) -> set[str]:
    """Label values a fresh worker already exposes for a series (pre-initialised labels)."""
    text = Metrics().exposition().decode()
    return set(re.findall(rf'^{series}\{{[^}}]*{label}="([^"]*)"', text, flags=re.MULTILINE))


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((GRAFANA / "dashboards/linkwatch.json").read_text())
    return board


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", target["expr"]))
    return found


def referenced_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\blinkwatch_[a-z0-9_]+", expr))


def test_rules_file_has_the_required_alerts_each_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    exprs = [" ".join(rule["expr"].split()) for rule in rules]
    assert any("linkwatch_consumer_lag" in expr for expr in exprs)
    assert any('linkwatch_reports_total{outcome="rejected"}' in expr for expr in exprs)
    assert any("linkwatch_rejections_total" in expr for expr in exprs)
    assert any(re.search(r'\bup\{job="linkwatch"\}\s*==\s*0', expr) for expr in exprs)


def test_every_metric_in_rules_and_dashboard_is_exposed_with_those_labels() -> None:
    series = exposed_series()
    for where, expr in expressions():
        used = referenced_metrics(expr)
        assert used <= set(series), f"{where}: unknown {used - set(series)}"
        allowed = TARGET_LABELS | set().union(*(series[name] for name in used))
        for name, matchers in re.findall(r"\b(linkwatch_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
            for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
                assert label in series[name] | TARGET_LABELS, f"{where}: {name} has no {label}"
                known = sample_values(label, name)
                if op == "=" and known:
                    assert value in known, f"{where}: {name}{{{label}}} is never {value!r}"
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                assert label in allowed, f"{where}: no metric here has the label {label!r}"


def test_scrape_config_reaches_both_workers_and_loads_the_rules(services: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    mounted = {f"/etc/prometheus/{path.name}" for path in PROMETHEUS.iterdir()}
    assert set(config["rule_files"]) <= mounted
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    linkwatch = jobs["linkwatch"]
    assert linkwatch.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in linkwatch["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{WEB_PORT}" for name in worker_services(services)}
    for _, expr in expressions():
        for job in re.findall(r'\bup\{[^}]*job="([^"]+)"', expr):
            assert job in jobs


def test_grafana_datasource_points_at_the_compose_prometheus(services: dict[str, Any]) -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in services
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]


def test_dashboard_shows_every_metric_a_worker_exposes() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    shown: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            shown |= referenced_metrics(target["expr"])
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in shown}
    exposed = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exposed_series()}
    assert exposed <= families, f"not on the dashboard: {exposed - families}"
    assert any(re.search(r'\bup\{job="linkwatch"', t["expr"]) for p in panels for t in p["targets"])
    quantiles = {
        re.search(r"histogram_quantile\(([\d.]+)", t["expr"]).group(1)  # type: ignore[union-attr]
        for p in panels
        for t in p["targets"]
        if "histogram_quantile(" in t["expr"]
    }
    assert {"0.5", "0.99"} <= quantiles


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


# ---------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def dockerfile_stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(base image, stage name, instructions) per stage, with ARG defaults substituted."""
    defaults: dict[str, str] = {}
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ARG" and not stages and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name] = value
        elif instruction == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], arguments).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append((words[0], name, []))
        elif stages:
            stages[-1][2].append((instruction, arguments))
    return stages


def dockerfile_uid() -> int:
    *_, (_, _, final) = dockerfile_stages()
    users = [arguments for instruction, arguments in final if instruction == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    return int(user)


def test_dockerfile_builds_in_one_stage_and_runs_slim_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builders = {name for _, name, _ in stages[:-1] if name}
    base, _, final = stages[-1]
    assert base.startswith("python:3.11-slim"), base
    copied_from = {
        match.group(1)
        for instruction, arguments in final
        if instruction == "COPY" and (match := re.search(r"--from=(\S+)", arguments))
    }
    assert copied_from and copied_from <= builders
    assert dockerfile_uid() >= 1000
    instructions = dict(final)
    assert instructions["EXPOSE"].split() == [str(WEB_PORT)]
    assert f"http://127.0.0.1:{WEB_PORT}/healthz" in instructions["HEALTHCHECK"]
    assert "curl" not in instructions["HEALTHCHECK"]
    assert json.loads(instructions["ENTRYPOINT"]) == ["linkwatch"]
    assert json.loads(instructions["CMD"]) == ["worker"]


def test_image_ships_the_console() -> None:
    """The wheel holds only .py files unless pyproject declares package data."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    copied = any(
        instruction == "COPY" and arguments.split()[-2:-1] == ["streams/console"]
        for instruction, arguments in dockerfile_stages()[-1][2]
    )
    assert copied or re.search(r"package-data[\s\S]*console", pyproject)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "bench", ".linkwatch", ".pytest_cache", ".mypy_cache"} <= ignored
    assert ".ruff_cache" in ignored
