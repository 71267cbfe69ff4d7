"""Shape of the container set-up, checked without Docker (none runs here).

docker-compose.yml: Kafka (apache/kafka, pinned, KRaft single node with consistent listener,
quorum and replication settings) and the twin worker (built from the Dockerfile, scalable,
settings mounted read-only and valid, pointed at the kafka service). Dockerfile: python:3.11,
installs the project, unprivileged user, `twin-stream worker` as entrypoint and command.
Also: every settings example validates, and settings/twin-settings.json is exactly the
defaults of `Settings()`, so the documented defaults cannot drift.

Monitoring: Prometheus (pinned prom/prometheus) scrapes every worker replica on its web port
and /metrics (deploy/prometheus/prometheus.yml), Grafana (pinned grafana/grafana) is
provisioned from deploy/grafana/ with that Prometheus and the twin dashboard, both published
on 127.0.0.1 only and without a hard-coded secret; every metric the dashboard queries exists
in the worker's exposition (`agents.health.prometheus_text`).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from twin_stream.config.settings import Settings, load_settings
from twin_stream.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
EXAMPLES = sorted((ROOT / "settings" / "examples").glob("*.json"))


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text("utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def kafka(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["kafka"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def worker(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["worker"]  # type: ignore[no-any-return]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict of strings (map or KEY=VALUE list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)} (host may be empty)."""
    out: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9_]+)://([^:,]*):(\d+)\s*", item)
        assert m, f"listener {item!r} is not NAME://host:port"
        out[m.group(1)] = (m.group(2), int(m.group(3)))
    return out


def as_list(command: Any) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continuation line"
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """container path -> (source, read_only) for the short and long volume syntax."""
    out: dict[str, tuple[str, bool]] = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target, ro = v.get("source", ""), v["target"], bool(v.get("read_only"))
        out[target] = (source, ro)
    return out


# --------------------------------------------------------------------------- compose: kafka


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "worker", "prometheus", "grafana"}
    assert "version" not in compose  # obsolete in the Compose specification


def test_kafka_image_is_pinned_apache_kafka(kafka: dict[str, Any]) -> None:
    image = kafka["image"]
    m = re.fullmatch(r"apache/kafka:(\d+)\.(\d+)\.(\d+)", image)
    assert m, f"kafka image {image!r} must be apache/kafka:X.Y.Z (a pinned tag)"
    major, minor = int(m.group(1)), int(m.group(2))
    assert (major, minor) == (3, 9) or major == 4, f"{image}: use a 3.9.x or 4.x tag"


def test_kafka_kraft_single_node(kafka: dict[str, Any]) -> None:
    env = env_of(kafka)
    for key in (
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
    ):
        assert env.get(key), f"kafka: {key} missing"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # the image formats its storage with CLUSTER_ID: a Kafka UUID, 16 bytes base64url
    cid = env["CLUSTER_ID"]
    assert len(cid) == 22 and len(base64.urlsafe_b64decode(cid + "==")) == 16

    node_id = int(env["KAFKA_NODE_ID"])
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1, "a single node is the whole quorum"
    m = re.fullmatch(r"(\d+)@([^:]+):(\d+)", voters[0])
    assert m, f"quorum voter {voters[0]!r} is not id@host:port"
    assert int(m.group(1)) == node_id, "the quorum voter must be this node"
    assert m.group(2) in {"kafka", kafka.get("hostname")}, "voter host must be this service"

    listen = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    inter = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert controller in listen, "the controller listener must be one of KAFKA_LISTENERS"
    assert listen[controller][1] == int(m.group(3)), "voter port = controller listener port"
    assert inter in listen and inter != controller
    assert set(listen) <= set(protocols), "every listener needs a security protocol"
    assert controller not in advertised, "the controller listener is not advertised"
    assert set(advertised) == set(listen) - {controller}
    for name, (_, port) in advertised.items():
        assert listen[name][1] == port, f"{name}: advertised port differs from the bound one"
    assert advertised[inter][0] in {"kafka", kafka.get("hostname")}


def test_kafka_one_node_replication_and_transactions(kafka: dict[str, Any]) -> None:
    env = env_of(kafka)
    # Kafka's defaults (3 and 2) can never be met by one node: the workers' exactly-once
    # transactions and group commits would hang.
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(key) == "1", f"kafka: {key} must be 1 on a single node"
    for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS"):
        assert env.get(key, "1") == "1"


def test_kafka_healthcheck_and_data(kafka: dict[str, Any]) -> None:
    env = env_of(kafka)
    check = " ".join(as_list(kafka["healthcheck"]["test"]))
    assert "kafka-broker-api-versions.sh" in check or "kafka-topics.sh" in check
    port = int(re.search(r"--bootstrap-server\s+\S+:(\d+)", check).group(1))  # type: ignore[union-attr]
    assert port in {p for _, p in listeners(env["KAFKA_LISTENERS"]).values()}
    assert env.get("KAFKA_LOG_DIRS") in mounts(kafka), "the log dirs live on a volume"
    assert kafka.get("restart") in {"always", "unless-stopped", "on-failure"}


# --------------------------------------------------------------------------- compose: worker


def test_worker_builds_and_scales(worker: dict[str, Any]) -> None:
    build = worker["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context in {".", "./"}
    if isinstance(build, dict):
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    assert "container_name" not in worker, "a fixed name prevents --scale worker=N"
    for port in worker.get("ports") or []:
        text = str(port) if not isinstance(port, dict) else str(port.get("published", ""))
        assert ":" not in text and not isinstance(port, dict), f"fixed host port {port!r}"
    assert worker.get("restart") in {"always", "unless-stopped", "on-failure"}


def test_worker_waits_for_healthy_kafka(worker: dict[str, Any], kafka: dict[str, Any]) -> None:
    depends = worker["depends_on"]
    assert isinstance(depends, dict)
    assert depends["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in kafka


def worker_settings(worker: dict[str, Any]) -> tuple[Path, str, Settings]:
    """(host file, container path, settings with the service's TWIN_ env applied)."""
    command = as_list(worker.get("command"))
    assert "--settings" in command
    path = command[command.index("--settings") + 1]
    source, ro = mounts(worker)[path]
    assert ro, f"{path} must be mounted read-only"
    host = (ROOT / source).resolve()
    assert host.is_relative_to(ROOT / "settings" / "examples"), host
    assert host.is_file(), f"{source} does not exist"
    twin_env = {k: v for k, v in env_of(worker).items() if k.startswith("TWIN_")}
    return host, path, load_settings(host, environ=twin_env)


def test_worker_runs_the_worker_with_mounted_settings(worker: dict[str, Any]) -> None:
    entry = as_list(worker.get("entrypoint")) or docker_entrypoint()
    command = as_list(worker.get("command")) or docker_cmd()
    assert entry == ["twin-stream"]
    assert command[0] == "worker"
    host, path, settings = worker_settings(worker)
    assert path == docker_cmd()[docker_cmd().index("--settings") + 1], (
        "mount the settings where the image's default command reads them"
    )
    Engine(settings)  # what `twin-stream settings check` does: model parameters too
    Engine(load_settings(host, environ={}))


def test_worker_points_at_the_kafka_service(worker: dict[str, Any], kafka: dict[str, Any]) -> None:
    env = env_of(worker)
    bootstrap = env.get("TWIN_KAFKA__BOOTSTRAP_SERVERS")
    assert bootstrap, "the worker's bootstrap comes from the environment"
    _, _, settings = worker_settings(worker)
    assert settings.kafka.bootstrap_servers == bootstrap
    kenv = env_of(kafka)
    advertised = listeners(kenv["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    host, _, port = bootstrap.rpartition(":")
    match = [n for n, hp in advertised.items() if hp == (host, int(port))]
    assert match, f"{bootstrap} is not an advertised listener of the kafka service"
    assert host in {"kafka", kafka.get("hostname")}
    assert protocols[match[0]] == settings.kafka.security_protocol


def test_worker_settings_fit_the_broker(worker: dict[str, Any], kafka: dict[str, Any]) -> None:
    _, _, s = worker_settings(worker)
    kenv = env_of(kafka)
    assert s.topics.replication_factor == 1, "one broker"
    if "KAFKA_NUM_PARTITIONS" in kenv:  # auto-created topics must match faust's changelogs
        assert int(kenv["KAFKA_NUM_PARTITIONS"]) == s.topics.partitions
    assert Path(s.worker.data_dir).is_absolute(), "state in a known folder of the image"
    assert s.worker.data_dir in DOCKERFILE.read_text("utf-8"), "the image creates it"
    check = " ".join(as_list(worker["healthcheck"]["test"]))
    assert f":{s.worker.web_port}/twin/health/live/" in check
    assert s.worker.shutdown_timeout_s < _seconds(worker["stop_grace_period"])


# --------------------------------------------------------------------------- Dockerfile


def docker_entrypoint() -> list[str]:
    args = [a for i, a in dockerfile() if i == "ENTRYPOINT"]
    assert args, "Dockerfile: no ENTRYPOINT"
    return exec_form(args[-1])


def docker_cmd() -> list[str]:
    args = [a for i, a in dockerfile() if i == "CMD"]
    assert args, "Dockerfile: no CMD"
    return exec_form(args[-1])


def test_dockerfile_base_and_entrypoint() -> None:
    steps = dockerfile()
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) >= 1
    assert re.fullmatch(r"python:3\.11(-slim)?(\s+AS\s+\w+)?", froms[-1], re.I), froms[-1]
    assert docker_entrypoint() == ["twin-stream"]
    cmd = docker_cmd()
    assert cmd == ["worker", "--settings", "/etc/twin/twin-settings.json"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert "twin-stream" in scripts


def test_dockerfile_installs_the_project() -> None:
    steps = dockerfile()
    copied = " ".join(a for i, a in steps if i in {"COPY", "ADD"})
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert "pyproject.toml" in copied
    assert pyproject["project"]["readme"] in copied
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"(^|\s){package}/?(\s|$)", copied), f"{package} is not copied"
    runs = [a for i, a in steps if i == "RUN"]
    assert any(re.search(r"pip install\b(?!.*-e\b).*(/src|\s\.)", r) for r in runs), (
        "the project is pip-installed (not editable)"
    )
    # the baked-in default settings are the documented defaults
    assert re.search(r"settings/twin-settings\.json\s+/etc/twin/twin-settings\.json", copied), (
        "the default settings are copied where CMD reads them"
    )


def test_dockerfile_runs_unprivileged() -> None:
    steps = dockerfile()
    users = [(n, a) for n, (i, a) in enumerate(steps) if i == "USER"]
    assert users, "Dockerfile: no USER"
    index, user = users[-1]
    assert user.split(":")[0] not in {"root", "0"}
    installs = [n for n, (i, a) in enumerate(steps) if i == "RUN" and "pip install" in a]
    assert installs and index > max(installs), "install as root, then drop privileges"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        p.strip()
        for p in DOCKERIGNORE.read_text("utf-8").splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]

    def ignored(path: str) -> bool:
        out = False
        for p in patterns:
            negate = p.startswith("!")
            pat = p.lstrip("!").strip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
            hit = any(
                fnmatch.fnmatch(pre, pat)
                or (pat.startswith("**/") and fnmatch.fnmatch(pre.split("/")[-1], pat[3:]))
                for pre in prefixes
            )
            if hit:
                out = not negate
        return out

    for needed in (
        "pyproject.toml",
        "README.md",
        "twin_stream/cli.py",
        "twin_stream/battery/chemistries/nmc.json",
        "models/eq_cycles/model.json",
        "agents/app.py",
        "schemas/limits.json",
        "settings/twin-settings.json",
    ):
        assert (ROOT / needed).exists(), needed
        assert not ignored(needed), f".dockerignore excludes {needed}, which the image needs"
    for junk in (".git/config", ".venv/bin/python", "tests/unit/test_compose.py"):
        assert ignored(junk), f".dockerignore should exclude {junk}"


# --------------------------------------------------------------------------- settings files


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert "compose.json" in names
    assert len(names) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_settings_examples_validate(path: Path) -> None:
    settings = load_settings(path, environ={})
    Engine(settings)
    for battery in settings.fleet.batteries:
        settings.spec_for(battery)


def test_documented_defaults_equal_the_models() -> None:
    documented = json.loads((ROOT / "settings" / "twin-settings.json").read_text("utf-8"))
    assert documented == Settings().model_dump(mode="json"), (
        "settings/twin-settings.json drifted from the Settings defaults: regenerate it with "
        "`twin-stream settings show` (no file, no TWIN_ environment)"
    )


def _seconds(text: str) -> float:
    assert text.endswith("s"), text
    return float(text[:-1])


# --------------------------------------------------------------------------- compose: monitoring

PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "twin-stream.json"


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text("utf-8"))
    assert isinstance(data, dict), path
    return data


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of a service's published ports."""
    out: list[tuple[str, int, int]] = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) == 3, f"{port!r}: publish as IP:HOST:CONTAINER (loopback only)"
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def _bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """container path -> (host path in the repo, read_only) for bind mounts."""
    return {
        target: ((ROOT / source).resolve(), ro)
        for target, (source, ro) in mounts(service).items()
        if source.startswith((".", "/"))
    }


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("prometheus", r"prom/prometheus:v\d+\.\d+\.\d+"),
        ("grafana", r"grafana/grafana:\d+\.\d+\.\d+"),
    ],
)
def test_monitoring_images_are_pinned(compose: dict[str, Any], name: str, pattern: str) -> None:
    service = compose["services"][name]
    assert re.fullmatch(pattern, service["image"]), f"{name}: pin a release tag"
    assert service.get("restart") in {"always", "unless-stopped", "on-failure"}


@pytest.mark.parametrize("name", ["kafka", "prometheus", "grafana"])
def test_published_ports_are_loopback_only(compose: dict[str, Any], name: str) -> None:
    ports = _published(compose["services"][name])
    assert ports, f"{name} publishes nothing"
    for host_ip, _, _ in ports:
        assert host_ip == "127.0.0.1", f"{name}: published on {host_ip or 'every address'}"


def test_monitoring_ports(compose: dict[str, Any]) -> None:
    assert ("127.0.0.1", 9090, 9090) in _published(compose["services"]["prometheus"])
    assert ("127.0.0.1", 3000, 3000) in _published(compose["services"]["grafana"])


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_monitoring_mounts_exist_read_only(compose: dict[str, Any], name: str) -> None:
    binds = _bind_mounts(compose["services"][name])
    assert binds, f"{name}: its configuration is mounted from deploy/"
    for target, (host, ro) in binds.items():
        assert host.is_relative_to(ROOT / "deploy"), f"{name}: {target} from {host}"
        assert host.exists(), f"{name}: {host.relative_to(ROOT)} does not exist"
        assert ro, f"{name}: {target} must be mounted read-only"


def test_prometheus_config_is_the_mounted_file(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    command = as_list(service.get("command"))
    flags = dict(c.split("=", 1) for c in command if c.startswith("--") and "=" in c)
    config = flags.get("--config.file", "/etc/prometheus/prometheus.yml")
    assert _bind_mounts(service)[config][0] == PROMETHEUS_YML.resolve()


def _worker_jobs() -> list[dict[str, Any]]:
    jobs = _yaml(PROMETHEUS_YML)["scrape_configs"]
    out = [
        j
        for j in jobs
        if any("worker" in (sd.get("names") or []) for sd in j.get("dns_sd_configs") or [])
    ]
    assert len(out) == 1, "one scrape job finds the worker replicas by DNS"
    return out


def test_prometheus_scrapes_every_worker(compose: dict[str, Any], worker: dict[str, Any]) -> None:
    assert "worker" in compose["services"], "the DNS name is the compose service's"
    (job,) = _worker_jobs()
    _, _, settings = worker_settings(worker)
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    for sd in job["dns_sd_configs"]:
        # type A: one record per replica (`--scale worker=N`); SRV needs a port record
        assert sd.get("type", "SRV") == "A"
        assert int(sd["port"]) == settings.worker.web_port
    # the worker listens on the compose network, not only on its own loopback
    assert settings.worker.web_bind == "0.0.0.0"
    glob = _yaml(PROMETHEUS_YML).get("global") or {}
    interval = _seconds(str(job.get("scrape_interval", glob.get("scrape_interval", "60s"))))
    assert interval <= 15, "a scrape at least every 15 s"


def test_grafana_has_no_hard_coded_secret(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["grafana"])
    password = env.get("GF_SECURITY_ADMIN_PASSWORD")
    if password is not None:
        assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", password), (
            "the admin password comes from the environment, never from this file"
        )
    else:  # no admin password: then no admin user either (its default is admin/admin)
        assert env.get("GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION") == "true"
        assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true"
        assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    service = compose["services"]["grafana"]
    binds = _bind_mounts(service)
    provisioning = binds["/etc/grafana/provisioning"][0]
    assert provisioning == (ROOT / "deploy" / "grafana" / "provisioning").resolve()

    # the datasource: the prometheus service, on the port it listens on
    sources = [
        d
        for f in sorted((provisioning / "datasources").glob("*.y*ml"))
        for d in _yaml(f)["datasources"]
    ]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus"
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/?", sources[0]["url"])
    assert m, sources[0]["url"]
    assert m.group(1) in compose["services"] and m.group(1) == "prometheus"
    assert int(m.group(2)) in {c for _, _, c in _published(compose["services"]["prometheus"])}

    # the dashboards provider reads the folder the dashboards are mounted at
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in _yaml(f)["providers"]
    ]
    assert providers
    for provider in providers:
        path = provider["options"]["path"]
        assert path in binds, f"provider path {path} is not mounted"
        assert binds[path][0] == DASHBOARD.parent.resolve()
    home = env_of(service).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, _, name = home.rpartition("/")
        assert (binds[folder][0] / name).is_file(), home

    # every panel queries that datasource
    uid = sources[0]["uid"]
    dash = json.loads(DASHBOARD.read_text("utf-8"))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {"uid": uid})["uid"] == uid


def _queries(dash: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        out.append(q["query"] if isinstance(q, dict) else str(q))
    return out


def test_dashboard_queries_metrics_the_worker_exposes() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from agents.health import prometheus_text
    from tests.unit.test_prometheus import sample_metrics

    text = prometheus_text(sample_metrics()).decode()
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    (job,) = _worker_jobs()
    dash = json.loads(DASHBOARD.read_text("utf-8"))
    assert dash["uid"] and dash["title"] and dash["panels"]
    used: set[str] = set()
    for expr in _queries(dash):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        names = set(re.findall(r"\btwin_[A-Za-z0-9_]+", expr))
        for up in re.findall(r"\bup\{([^}]*)\}", expr):  # Prometheus' own per-target series
            assert f'job="{job["job_name"]}"' in up, expr
            names.add("up")
        assert names, f"{expr!r} queries no twin metric"
        used |= names
    missing = used - exposed - {"up"}
    assert not missing, f"the dashboard queries metrics the worker does not expose: {missing}"
    # what issue 12 asks the dashboard to show
    for name in (
        "twin_processed_total",
        "twin_dead_letters_total",
        "twin_alerts_sent_total",
        "twin_consumer_lag",
        "twin_chunk_duration_seconds_bucket",
        "twin_input_age_seconds_bucket",
        "twin_broker_connected",
        "twin_live",
        "twin_last_commit_age_seconds",
        "twin_seconds_total",
    ):
        assert name in used, f"the dashboard does not show {name}"


def test_dashboard_panels_do_not_overlap() -> None:
    dash = json.loads(DASHBOARD.read_text("utf-8"))
    cells: set[tuple[int, int]] = set()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{p['title']} overlaps another panel"
        cells |= area
