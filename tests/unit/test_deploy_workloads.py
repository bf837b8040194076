"""deploy/'s workloads against the code: the Kubernetes manifests (kustomize's
build, probes, volumes, KEDA, the planner's StatefulSet), the compose file,
the systemd unit and its sandbox, the scrape configs and the image run real
commands and flags, ports the configuration uses, settings it knows, and
write only where they may. The monitoring is checked in test_deploy.py.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from calstream.daemon.operations import status_collection as status
from calstream.daemon.operations.cli.main import build_parser
from calstream.daemon.operations.cli.run import cmd_run
from calstream.daemon.operations.config import ROLES, Config, ConfigError, host_port, load
from calstream.topics.catalog import Topics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DEFAULT_PORT = host_port(Config().metrics_address)[1]


def run_command(argv: list[str]) -> tuple[str, str | None]:
    """(role, --config) of a `calstream run` command line; fails if the CLI rejects it."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"calstream rejects {argv}")
    assert args.func is cmd_run, argv
    assert args.role and len(args.role) == 1, f"one role per service: {argv}"
    return args.role[0], (str(args.config) if args.config else None)


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> list[dict]:
    return [d for d in k8s_documents() if d["kind"] == kind]


def workloads() -> list[dict]:
    """The pods' owners: a Deployment per role, the planner's StatefulSet."""
    return of_kind("Deployment") + of_kind("StatefulSet")


def k8s_config() -> Config:
    (cm,) = of_kind("ConfigMap")
    try:
        return load_text(cm["data"]["calstream.toml"])
    except ConfigError as exc:
        pytest.fail(f"k8s ConfigMap: {exc}")


def load_text(text: str, env: dict[str, str] | None = None) -> Config:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        return load(Path(f.name), env=env or {})


def test_the_example_configuration_loads_with_tls_and_sasl():
    cfg = load(DEPLOY / "calstream.example.toml", env={"CALSTREAM_SECURITY_SASL_PASSWORD": "x"})
    assert cfg.security.protocol == "SASL_SSL" and cfg.security.sasl_mechanism
    assert cfg.security.sasl_password == "x"  # the secret comes from the environment
    assert "sasl_password" not in tomllib.loads(
        (DEPLOY / "calstream.example.toml").read_text())["calstream"]["security"]
    assert host_port(cfg.metrics_address)[1] == DEFAULT_PORT


def test_kubernetes_has_a_deployment_per_role_running_a_real_command():
    cfg = k8s_config()
    (cm,) = of_kind("ConfigMap")
    roles = {}
    for dep in workloads():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        role, config = run_command(container["args"])
        roles[role] = dep
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[config]["name"] == "config" and mounts[config]["subPath"] in cm["data"]
        for env in container.get("env", []):
            if env["name"].startswith("CALSTREAM_"):
                load(None, env={env["name"]: "x"})  # a setting the daemon knows
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        # Every path the role writes is on a mounted volume.
        if role != "planner":
            for path in (cfg.inbox, cfg.products, cfg.quarantine):
                assert any(path.is_relative_to(m) for m in mounts), (role, path)
        # The product store is the shared one for every role, the planner's
        # too: it restores the stage-3 versions already made from it, and it
        # is the daemon that puts the product events back on a broker that
        # lost them. Without the volume it read an empty store of its own
        # container (/data is in the image) and put back nothing.
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        under = [m for m in mounts.values() if cfg.products.is_relative_to(m["mountPath"])]
        deepest = max(under, key=lambda m: len(m["mountPath"]), default=None)
        assert deepest and "persistentVolumeClaim" in volumes[deepest["name"]], \
            f"{role}: the product store {cfg.products} is not the shared volume"
    assert set(roles) == set(ROLES)
    # One watcher per inbox, never two at once.
    for single in ("watcher",):
        spec = roles[single]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    # Two planners under the planner lease: one publishes, one stands by.
    planner = roles["planner"]["spec"]
    assert planner["replicas"] == 2 and cfg.planner_lease
    # Replaced one at a time, never both at once.
    assert roles["planner"]["kind"] == "StatefulSet"
    assert planner["updateStrategy"]["type"] == "RollingUpdate"
    assert planner.get("updateStrategy", {}).get("rollingUpdate", {}).get(
        "maxUnavailable", 1) == 1
    (budget,) = [b for b in of_kind("PodDisruptionBudget")
                 if b["spec"]["selector"]["matchLabels"].items()
                 <= planner["template"]["metadata"]["labels"].items()]
    assert budget["spec"]["minAvailable"] == 1


def test_kustomize_can_build_the_manifests():
    """`kubectl apply -k deploy/k8s` builds every resource the kustomization
    lists, and kustomize refuses two resources with one id (group, kind,
    namespace, name): keda.yaml declared the TriggerAuthentication
    calstream-kafka twice (once for stage 2, again for stage 3), and the
    build stopped there ("may not add resource with an already registered
    id"): nothing of calstream could be applied."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    seen: dict[tuple, str] = {}
    for name in listed:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if not doc:
                continue
            group = doc["apiVersion"].rpartition("/")[0]
            meta = doc["metadata"]
            key = (group, doc["kind"], meta.get("namespace", kustomization.get("namespace")),
                   meta["name"])
            assert key not in seen, f"{name}: {key} is declared in {seen[key]} too"
            seen[key] = name
    # The PodMonitor (it needs the Prometheus Operator's CRD) is applied apart:
    # in the pods' namespace, or it selects none of them.
    (monitor,) = yaml.safe_load_all((K8S / "podmonitor.yaml").read_text())
    assert monitor["metadata"]["namespace"] == kustomization["namespace"]
    # Every other manifest is applied by it.
    assert set(listed) | {"podmonitor.yaml", "kustomization.yaml"} == \
        {p.name for p in K8S.glob("*.yaml")}


def test_the_planner_keeps_its_snapshot_and_ledger_across_pod_replacements():
    """The planner's work directory holds its snapshot (a restart replays
    the snapshot's tail, not all of history: the HA design) and its ledger
    of plans and holds (what it puts back on a broker that lost them, and
    its own record of each hold). On an emptyDir both went with every pod
    replacement (a rollout, a node drain): each new planner rebuilt from the
    whole history, and the ledger was gone. One persistent volume per
    replica: a StatefulSet's claim template."""
    (planner,) = [w for w in workloads()
                  if run_command(w["spec"]["template"]["spec"]["containers"][0]["args"])[0]
                  == "planner"]
    pod = planner["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    work_dir = Path(container["args"][container["args"].index("--work-dir") + 1])
    (mount,) = [m for m in container["volumeMounts"]
                if work_dir.is_relative_to(m["mountPath"])
                and m["mountPath"] != "/"]
    claims = {c["metadata"]["name"]: c for c in planner["spec"].get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mount["name"] in claims and mount["name"] not in volumes, \
        f"the planner's work dir {work_dir} is on {volumes.get(mount['name'])}, lost with the pod"
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]  # its own


def test_the_planner_is_never_autoscaled():
    """Only the lease holder publishes: more planners are more standbys, not speed."""
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in of_kind("ScaledObject")}
    for dep in workloads():
        role, _ = run_command(dep["spec"]["template"]["spec"]["containers"][0]["args"])
        if role == "planner":
            assert dep["metadata"]["name"] not in targets
    assert "planner is NOT autoscaled" in (K8S / "keda.yaml").read_text()


def test_kubernetes_ports_and_probes_match_the_daemon():
    cfg = k8s_config()
    assert host_port(cfg.metrics_address) == ("0.0.0.0", DEFAULT_PORT)
    for dep in workloads():
        template = dep["spec"]["template"]
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": DEFAULT_PORT}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(DEFAULT_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"
    (svc,) = of_kind("Service")
    (port,) = svc["spec"]["ports"]
    assert port["port"] == DEFAULT_PORT and port["targetPort"] == "metrics"
    for dep in workloads():
        assert svc["spec"]["selector"].items() <= \
            dep["spec"]["template"]["metadata"]["labels"].items()


def test_kubernetes_volumes_and_secrets_are_declared():
    claims = {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    (cm,) = of_kind("ConfigMap")
    for dep in workloads():
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        templates = {c["metadata"]["name"] for c in dep["spec"].get("volumeClaimTemplates", [])}
        assert not templates & set(volumes), "a claim template and a volume of one name"
        (container,) = pod["containers"]
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes or mount["name"] in templates
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in v:
                assert v["configMap"]["name"] == cm["metadata"]["name"]
    for claim in of_kind("PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "shared between replicas"
    # A StatefulSet's claims need a headless Service (its serviceName).
    (svc,) = of_kind("Service")
    for sts in of_kind("StatefulSet"):
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
        assert svc["spec"]["clusterIP"] == "None"


def test_keda_scales_each_stage_on_its_own_consumer_group():
    cfg = k8s_config()
    topics = Topics(cfg.topic_prefix)
    deployments = {d["metadata"]["name"]: d for d in workloads()}
    auths = {a["metadata"]["name"] for a in of_kind("TriggerAuthentication")}
    scaled = {}
    for so in of_kind("ScaledObject"):
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        role, _ = run_command(target["spec"]["template"]["spec"]["containers"][0]["args"])
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["bootstrapServers"] == cfg.kafka_bootstrap
        # runtime.py: the consumer group of a stage is "<group_prefix>.<stage>".
        assert meta["consumerGroup"] == f"{cfg.group_prefix}.{role}"
        assert meta["offsetResetPolicy"] == "earliest"  # as the daemon's consumers
        assert trigger["authenticationRef"]["name"] in auths
        logical = topics.logical(meta["topic"])
        assert so["spec"]["maxReplicaCount"] <= topics.spec(logical).partitions
        scaled[role] = (logical,)
    # The same table `calstream status` computes lag from; KEDA scales on the
    # live topic only: replayed work uses spare capacity, it does not buy more.
    assert scaled == {stage: inputs[:1] for stage, inputs in status.STAGE_INPUTS.items()}


def test_compose_runs_every_role_against_kafka_with_valid_settings():
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    kafka_env = services["kafka"]["environment"]
    assert "broker" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper
    roles = {}
    for name, svc in services.items():
        if svc.get("command", [None])[0] != "run":
            continue
        role, _ = run_command(svc["command"])
        roles[role] = name
        settings = {k: str(v) for k, v in svc["environment"].items()
                    if k.startswith("CALSTREAM_")}
        cfg = load(None, env=settings)
        assert cfg.kafka_bootstrap.split(":")[0] == "kafka"
        assert host_port(cfg.metrics_address)[1] == DEFAULT_PORT
        assert str(DEFAULT_PORT) in svc["expose"]
    assert set(roles) == set(ROLES)
    mounts = services["prometheus"]["volumes"]
    assert any(m.startswith("./prometheus:/etc/prometheus") for m in mounts)


def test_the_prometheus_config_scrapes_every_role_on_the_metrics_port():
    doc = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    (job,) = doc["scrape_configs"]
    assert job["job_name"].startswith("calstream")  # the alerts match job=~"calstream.*"
    (sd,) = job["dns_sd_configs"]
    assert sd["port"] == DEFAULT_PORT
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert set(sd["names"]) == {n for n, s in compose.items()
                                if s.get("command", [None])[0] == "run"}


def systemd_exec(role: str) -> list[str]:
    unit = (DEPLOY / "systemd" / "calstream@.service").read_text()
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", role))
    assert argv[0].endswith("/calstream")
    return argv[1:]


def test_the_systemd_template_runs_each_role_with_its_own_port():
    example = load(DEPLOY / "calstream.example.toml")
    ports = {}
    for role in ROLES:
        got, config = run_command(systemd_exec(role))
        assert got == role and config == "/etc/calstream/calstream.toml"
        env_file = DEPLOY / "systemd" / f"{role}.env"
        env = {}
        if env_file.exists():
            for line in env_file.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, val = line.partition("=")
                    env[key.strip()] = val.strip()
        cfg = load(DEPLOY / "calstream.example.toml", env=env)
        ports[role] = host_port(cfg.metrics_address)[1]
    # Roles may share a host, so each listens on its own port; the default
    # (from the shared TOML file) is one of them.
    assert len(set(ports.values())) == len(ROLES), ports
    assert host_port(example.metrics_address)[1] in ports.values()


def test_the_systemd_template_leaves_a_worker_killed_for_memory_to_the_daemon():
    """A run whose work takes more and more memory has its worker killed by
    the kernel's OOM killer: the daemon counts that lost worker as one of the
    item's attempts, then dead-letters it (retries_exhausted). systemd's
    default (DefaultOOMPolicy=stop) stopped the whole unit instead, every
    other run of the role with it; Restart= started it again, the record was
    redelivered, and the same run took the unit down again, never
    dead-lettered."""
    unit = (DEPLOY / "systemd" / "calstream@.service").read_text()
    settings = [x.strip() for x in unit.splitlines() if x.strip().startswith("OOMPolicy=")]
    assert settings == ["OOMPolicy=continue"], settings


def test_the_container_image_runs_the_cli_and_exposes_the_metrics_port():
    text = (DEPLOY / "Containerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    # An init as PID 1 (tini, installed in the image) reaps the processes
    # handed to it; the daemon as PID 1 left their zombies for good.
    assert entry == ["tini", "--", "calstream"]
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"apt-get install [^\n]*\btini\b", final), "tini not in the final image"
    args = build_parser().parse_args(cmd)
    assert args.func is cmd_run
    assert re.search(rf"^EXPOSE {DEFAULT_PORT}$", text, re.M)
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in text
    # It installs what pyproject.toml packages.
    for room in ("daemon", "steps", "topics"):
        assert re.search(rf"^COPY {room} {room}$", text, re.M)


def test_the_container_image_runs_the_python_the_tests_run_on():
    """`make install` builds the environment the suite runs on; the image
    installed the same requirements under another Python (3.12 against the
    machine's 3.11): other wheels, and an interpreter whose multiprocessing
    (the worker server, the child guard) no test had run on."""
    import sys

    text = (DEPLOY / "Containerfile").read_text()
    bases = re.findall(r"^FROM python:(\d+)\.(\d+)\S*", text, re.M)
    assert bases and all((int(a), int(b)) == sys.version_info[:2] for a, b in bases), \
        f"image Python {bases}, tests on {sys.version_info[:2]}"


def systemd_settings() -> dict[str, list[str]]:
    """The unit's [Service] settings: name -> every value given (in order)."""
    unit = (DEPLOY / "systemd" / "calstream@.service").read_text()
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0]
    out: dict[str, list[str]] = {}
    for line in service.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_systemd_sandbox_lets_the_daemon_write_where_it_writes():
    """ProtectSystem=strict leaves the file system read-only but for the
    unit's own directories and ReadWritePaths, and ProtectHome hides /home.
    The work directory, the inbox, the product store, the quarantine and the
    CRDS cache must be writable, and so must $HOME: the workers' matplotlib
    (previews) and astropy keep their configuration and caches there. The
    unit set no HOME, so the calstream user's was read-only or hidden:
    matplotlib warned in every worker and built its font cache again in each."""
    settings = systemd_settings()
    assert settings["ProtectSystem"] == ["strict"]
    role = "detector1"
    writable = [Path("/tmp")] if settings.get("PrivateTmp") == ["yes"] else []
    writable += [Path(p) for v in settings.get("ReadWritePaths", []) for p in v.split()]
    for setting, base in (("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache")):
        writable += [Path(base) / d.replace("%i", role)
                     for v in settings.get(setting, []) for d in v.split()]
    specifiers = {"%S": "/var/lib", "%C": "/var/cache", "%i": role}

    def expand(text: str) -> str:
        for spec, value in specifiers.items():
            text = text.replace(spec, value)
        return text

    environment = dict(shlex.split(expand(v))[0].split("=", 1)
                       for v in settings.get("Environment", []))
    crds = dict(line.split("=", 1) for line in
                (DEPLOY / "systemd" / "crds.env").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    argv = systemd_exec(role)
    work_dir = Path(argv[argv.index("--work-dir") + 1])
    cfg = load(DEPLOY / "calstream.example.toml", env={}, flags={"work_dir": work_dir})
    needed = {"work_dir": cfg.work_dir, "inbox": cfg.inbox, "products": cfg.products,
              "quarantine": cfg.quarantine, "CRDS_PATH": Path(crds["CRDS_PATH"])}
    assert "HOME" in environment, "the unit sets no HOME: the user's own is not writable here"
    needed["HOME"] = Path(environment["HOME"])
    for what, path in needed.items():
        assert any(path.is_relative_to(w) for w in writable), f"{what} {path}: read-only"


def test_the_systemd_scrape_example_lists_every_role_s_port():
    """prometheus.yml's commented systemd job is what an operator copies: it
    listed 9310-9313, and stage 3 (9314) went unscraped, its alerts silent."""
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (targets,) = re.findall(r"^\s*#\s+- targets: \[(.*)\]$", text, re.M)
    listed = {int(t.strip().strip('"').rsplit(":", 1)[1]) for t in targets.split(",")}
    ports = set()
    for role in ROLES:
        env_file = DEPLOY / "systemd" / f"{role}.env"
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                   if line.strip() and not line.startswith("#")) if env_file.exists() else {}
        cfg = load(DEPLOY / "calstream.example.toml",
                   env={k: v for k, v in env.items() if k.startswith("CALSTREAM_")})
        ports.add(host_port(cfg.metrics_address)[1])
    assert listed == ports, f"scraped {sorted(listed)}, the roles listen on {sorted(ports)}"
