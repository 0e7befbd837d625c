"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

The files are parsed and held to the code they deploy: every tokendist command in the
compose file must parse with the real CLI parser, every TOKENDIST_* variable must be a
real setting, the setup script runs against a stand-in ``tokendist``, and the pinned
Kafka and anvil versions must be the native stack's (stack/stack.sh).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, cast
from urllib.parse import urlparse

import pytest
import yaml

from tokendist.cli.app import build_parser
from tokendist.core.errors import ChainRejected, TokendistError
from tokendist.core.settings import ENV_PREFIX, Settings, SettingsError
from tokendist.ops.deploy import deploy_tokenization

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

INFRA = ("postgres", "kafka", "anvil")
APPS = ("setup", "relay", "consumer", "webhook", "simulator", "chain-check")
# The infrastructure each tokendist service talks to, so must find healthy at start.
NEEDS = {
    "setup": {"postgres", "anvil"},
    "relay": {"postgres", "kafka"},
    "consumer": {"postgres", "kafka", "anvil"},
    "webhook": {"postgres"},
    "simulator": {"postgres", "kafka", "webhook"},
    "chain-check": {"postgres", "anvil"},
}
# The subcommands each service runs, in order (``argparse.Namespace.command``).
COMMANDS = {
    "setup": ["db", "chain"],
    "relay": ["relay"],
    "consumer": ["consume"],
    "webhook": ["webhook"],
    "simulator": ["simulate"],
    "chain-check": ["chain-check"],
}
DEMO_TOKENIZATION = "demo-tok"
# Chain commands need these beyond the settings that have no default.
CHAIN_SETTINGS = {"rpc_url", "operator_key", "deployer_key"}

# A ``tokendist`` word in command position of a shell script, and its arguments up to the
# first shell operator or redirection (``2>&1``).
INVOCATION = re.compile(
    r"(?:^|[;&|(!]|\b(?:then|else|elif|do|if|while|until|exec)\b)[ \t]*"
    r"tokendist((?:[ \t]+(?!\d*[<>])[^\s;&|()<>]+)*)",
    re.MULTILINE,
)


# ---------------------------------------------------------------- reading the files


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    svc: dict[str, Any] = services[name]
    return svc


def env_anchor() -> dict[str, str]:
    anchor = compose().get("x-tokendist-env")
    assert isinstance(anchor, dict), "docker-compose.yml has no x-tokendist-env mapping"
    return {str(k): str(v) for k, v in anchor.items()}


def unescape(text: str) -> str:
    """What a container receives: compose turns ``$$`` into ``$``."""
    return text.replace("$$", "$")


def as_argv(value: str | list[Any]) -> list[str]:
    """Compose splits a string ``command``/``entrypoint`` like a shell does."""
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return tuple(found)


def exec_form(args: str) -> list[str]:
    if args.startswith("["):
        return [str(a) for a in json.loads(args)]
    return shlex.split(args)


def copy_sources() -> list[str]:
    """Build-context paths the Dockerfile's COPY instructions read (not ``--from``)."""
    sources: list[str] = []
    for ins in dockerfile():
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        words = exec_form(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += [str(PurePosixPath(p)) for p in paths[:-1]]
    return sources


def image_entrypoint() -> list[str]:
    entrypoints = [exec_form(i.args) for i in dockerfile() if i.keyword == "ENTRYPOINT"]
    assert entrypoints, "the Dockerfile has no ENTRYPOINT"
    return entrypoints[-1]


# ---------------------------------------------------------------- commands


def service_argv(name: str) -> list[str]:
    svc = service(name)
    entrypoint = as_argv(svc["entrypoint"]) if "entrypoint" in svc else image_entrypoint()
    command = as_argv(svc.get("command", []))
    return [unescape(a) for a in entrypoint + command]


def shell_script(argv: list[str]) -> str | None:
    """The script of ``sh -c SCRIPT`` (also ``-ec`` etc.), else None."""
    if len(argv) >= 3 and Path(argv[0]).name in {"sh", "bash", "dash"}:
        flags = argv[1]
        if flags.startswith("-") and "c" in flags:
            return argv[2]
    return None


def tokendist_invocations(name: str) -> list[list[str]]:
    """The argument lists of every ``tokendist`` the service runs."""
    argv = service_argv(name)
    if Path(argv[0]).name == "tokendist":
        return [argv[1:]]
    script = shell_script(argv)
    assert script is not None, f"{name}: runs {argv[0]!r}, neither tokendist nor sh -c"
    return [shlex.split(m.group(1)) for m in INVOCATION.finditer(script)]


def parse(name: str, args: list[str]) -> Any:
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{name}: `tokendist {shlex.join(args)}` is rejected by the CLI parser")


def parsed(name: str) -> list[Any]:
    return [parse(name, args) for args in tokendist_invocations(name)]


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# ---------------------------------------------------------------- compose: structure


def test_compose_has_every_service_and_no_version_key() -> None:
    assert "version" not in compose(), "the compose spec has no `version:` key"
    missing = set(INFRA + APPS) - set(compose()["services"])
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_no_host_variable_is_interpolated() -> None:
    """Compose substitutes ``$VAR`` from the host; shell variables must be written ``$$``."""
    for text in strings(compose()):
        assert "$" not in text.replace("$$", ""), f"unescaped $ (write $$): {text!r}"


def stack_versions() -> tuple[str, str]:
    pom = (ROOT / "stack" / "kafka" / "pom.xml").read_text(encoding="utf-8")
    kafka = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert kafka, "stack/kafka/pom.xml has no <kafka.version>"
    package = json.loads((ROOT / "stack" / "package.json").read_text(encoding="utf-8"))
    return kafka.group(1), str(package["dependencies"]["@foundry-rs/anvil"])


def test_infra_images_are_official_and_match_the_native_stack() -> None:
    kafka_version, anvil_version = stack_versions()
    postgres = service("postgres")["image"]
    assert re.fullmatch(r"(docker\.io/(library/)?)?postgres:16(\.\d+)*", postgres), postgres
    assert service("kafka")["image"] == f"apache/kafka:{kafka_version}"
    assert service("anvil")["image"] == f"ghcr.io/foundry-rs/foundry:v{anvil_version}"


# ---------------------------------------------------------------- compose: commands


@pytest.mark.parametrize("name", APPS)
def test_app_commands_parse_with_the_cli(name: str) -> None:
    invocations = tokendist_invocations(name)
    assert invocations, f"{name}: no tokendist invocation found in {service_argv(name)}"
    assert [ns.command for ns in parsed(name)] == COMMANDS[name]


def test_setup_migrates_then_deploys_the_demo_tokenization() -> None:
    migrate, deploy = parsed("setup")
    assert (migrate.command, migrate.db) == ("db", "migrate")
    assert (deploy.command, deploy.c) == ("chain", "deploy")
    assert deploy.tokenization_id == DEMO_TOKENIZATION
    assert deploy.property_id


def test_simulator_pays_into_the_deployed_tokenization() -> None:
    (simulate,) = parsed("simulator")
    _, deploy = parsed("setup")
    assert simulate.tokenization_id == deploy.tokenization_id == DEMO_TOKENIZATION
    assert simulate.property_id == deploy.property_id
    assert simulate.rate == 5
    port = env_anchor()["TOKENDIST_WEBHOOK_PORT"]
    assert simulate.webhook_url == f"http://webhook:{port}", "pays through the receiver"


def test_the_webhook_listens_inside_the_network_and_reports_health() -> None:
    env = env_anchor()
    # 127.0.0.1 would be unreachable from the other containers.
    assert env["TOKENDIST_WEBHOOK_HOST"] == "0.0.0.0"  # noqa: S104 -- the compose network only
    assert env["TOKENDIST_PAYSTACK_SECRET_KEY"].startswith("sk_test_"), "never a live key here"
    test = " ".join(healthcheck_test("webhook"))
    assert f"http://127.0.0.1:{env['TOKENDIST_WEBHOOK_PORT']}/healthz" in test


# ---------------------------------------------------------------- compose: settings


def test_env_anchor_names_only_real_settings() -> None:
    for variable in env_anchor():
        assert variable.startswith(ENV_PREFIX), f"{variable} is not a TOKENDIST_* variable"
        field = variable.removeprefix(ENV_PREFIX).lower()
        assert field in Settings.model_fields, f"{variable} is not a Settings field"


def test_env_anchor_sets_every_required_and_chain_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    required = {name for name, f in Settings.model_fields.items() if f.is_required()}
    assert {"database_url", "kafka_bootstrap"} <= required
    given = {v.removeprefix(ENV_PREFIX).lower() for v in env_anchor()}
    assert not (required | CHAIN_SETTINGS) - given, "settings missing from x-tokendist-env"
    for variable, value in env_anchor().items():
        monkeypatch.setenv(variable, value)
    settings = Settings()  # read from the environment
    settings.require_chain()
    settings.require_deployer()
    assert settings.bootstrap_servers == ["kafka:9092"]
    assert settings.metrics_port == 9100
    assert settings.topic_replication == 1, "one broker: one replica per partition"
    assert settings.operator_key != settings.deployer_key, "operator and owner are apart"


@pytest.mark.parametrize("name", APPS)
def test_app_services_share_the_env_anchor_and_the_image(name: str) -> None:
    svc = service(name)
    assert svc.get("environment") == compose()["x-tokendist-env"]
    build = svc.get("build")
    if isinstance(build, str):
        build = {"context": build}
    assert isinstance(build, dict), f"{name}: not built from ./Dockerfile"
    assert build.get("context") == ".", f"{name}: not built from this repository"
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    images = {service(app).get("image") for app in APPS}
    assert len(images) == 1, f"tokendist services use different images: {images}"


def test_connection_settings_reach_the_infra_services() -> None:
    env = env_anchor()
    pg = service("postgres")["environment"]
    db = urlparse(env["TOKENDIST_DATABASE_URL"])
    assert (db.hostname, db.port or 5432) == ("postgres", 5432)
    assert (db.username, db.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert db.path.lstrip("/") == pg["POSTGRES_DB"]

    advertised = service("kafka")["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for server in env["TOKENDIST_KAFKA_BOOTSTRAP"].split(","):
        assert f"PLAINTEXT://{server}" in advertised.split(","), server

    anvil = service_argv("anvil")
    rpc = urlparse(env["TOKENDIST_RPC_URL"])
    assert rpc.hostname == "anvil"
    port = anvil[anvil.index("--port") + 1] if "--port" in anvil else "8545"
    assert str(rpc.port) == port
    listen = anvil[anvil.index("--host") + 1]
    assert listen == "0.0.0.0", "anvil must listen beyond itself"  # noqa: S104
    assert "--block-time" in anvil, "interval mining: automine stalls under load"


def test_kafka_is_a_single_kraft_node_with_replication_one() -> None:
    env = service("kafka")["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert key in env, f"{key} unset: Kafka's default of 3 cannot be met by one broker"
    for key, value in env.items():
        if key.endswith(("REPLICATION_FACTOR", "MIN_ISR", "MIN_INSYNC_REPLICAS")):
            assert str(value) == "1", f"{key}={value} on a single broker"


# ---------------------------------------------------------------- compose: health, order


def healthcheck_test(name: str) -> list[str]:
    check = service(name).get("healthcheck") or {}
    test = check.get("test")
    assert test, f"{name} has no healthcheck"
    assert not check.get("disable"), f"{name}: healthcheck disabled"
    return as_argv(test)


def test_infra_healthchecks() -> None:
    assert "pg_isready" in healthcheck_test("postgres")
    kafka = healthcheck_test("kafka")
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka
    assert kafka[kafka.index("--bootstrap-server") + 1] == "localhost:9092"
    anvil = " ".join(healthcheck_test("anvil"))
    assert "cast block-number" in anvil


@pytest.mark.parametrize("name", ["relay", "consumer", "chain-check"])
def test_relay_and_consumer_report_readiness_on_the_metrics_port(name: str) -> None:
    test = " ".join(healthcheck_test(name))
    port = env_anchor()["TOKENDIST_METRICS_PORT"]
    assert "python" in test, "the slim image has no curl"
    assert f"http://127.0.0.1:{port}/readyz" in test


@pytest.mark.parametrize("name", APPS)
def test_app_dependencies_wait_for_health_and_setup(name: str) -> None:
    depends = service(name).get("depends_on")
    assert isinstance(depends, dict), f"{name}: depends_on needs the long form (conditions)"
    conditions = {dep: (spec or {}).get("condition") for dep, spec in depends.items()}
    for infra in NEEDS[name]:
        assert conditions.get(infra) == "service_healthy", f"{name} -> {infra}"
    for dep, condition in conditions.items():
        if dep in INFRA:
            assert condition == "service_healthy", f"{name} -> {dep}: {condition}"
            healthcheck_test(dep)  # service_healthy on a service without one never starts
    if name != "setup":
        assert conditions.get("setup") == "service_completed_successfully", name


def test_setup_runs_once() -> None:
    # Unquoted `no` is YAML 1.1 for false, which compose rejects.
    assert service("setup").get("restart") == "no"


def test_consumer_scales() -> None:
    consumer = service("consumer")
    assert "container_name" not in consumer, "a fixed name allows one container"
    for port in consumer.get("ports", []):
        fixed = port.get("published") if isinstance(port, dict) else ":" in str(port)
        assert not fixed, f"host port {port} allows one container"


# ---------------------------------------------------------------- the setup script


def already_deployed_error() -> str:
    """What ``tokendist chain deploy`` prints (before exiting 2) for a recorded id."""
    assert issubclass(ChainRejected, TokendistError), "main() exits 2 on TokendistError"

    class Recorded:
        async def fetchval(self, *args: object) -> object:
            return 1

    async def attempt() -> None:
        await deploy_tokenization(
            cast(Any, None),
            cast(Any, Recorded()),
            tokenization_id=DEMO_TOKENIZATION,
            property_id="demo-prop",
            operator="0x0000000000000000000000000000000000000001",
            name="Property Token",
            symbol="PROP",
            decimals=18,
            supply=1,
        )

    with pytest.raises(ChainRejected) as caught:
        asyncio.run(attempt())
    return f"tokendist: {caught.value}"


def missing_setting_error() -> str:
    with pytest.raises(SettingsError) as caught:
        Settings(database_url="postgresql://x", kafka_bootstrap="x:9092").require_deployer()
    return f"tokendist: {caught.value}"


FAKE_TOKENDIST = """#!/bin/sh
printf '%s\\n' "$*" >>"$FAKE_LOG"
case "$1 $2" in
"db migrate") exit "$FAKE_MIGRATE_RC" ;;
"chain deploy") printf '%s\\n' "$FAKE_DEPLOY_OUTPUT" >&2; exit "$FAKE_DEPLOY_RC" ;;
esac
echo "fake tokendist: unexpected arguments: $*" >&2
exit 99
"""


def run_setup(tmp_path: Path, migrate_rc: int, deploy_rc: int, output: str) -> tuple[int, str]:
    fake = tmp_path / "bin" / "tokendist"
    fake.parent.mkdir()
    fake.write_text(FAKE_TOKENDIST, encoding="utf-8")
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_LOG": str(log),
        "FAKE_MIGRATE_RC": str(migrate_rc),
        "FAKE_DEPLOY_RC": str(deploy_rc),
        "FAKE_DEPLOY_OUTPUT": output,
    }
    argv = service_argv("setup")
    assert shell_script(argv) is not None, "setup is expected to be an sh -c script"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, log.read_text(encoding="utf-8")


DEPLOY = f"chain deploy --tokenization-id {DEMO_TOKENIZATION} --property-id demo-prop"


@pytest.mark.parametrize(
    ("case", "migrate_rc", "deploy_rc", "succeeds"),
    [
        ("first run", 0, 0, True),
        ("re-run: already deployed", 0, 2, True),
        ("missing setting (also exit 2)", 0, 2, False),
        ("deploy failed", 0, 1, False),
        ("migration failed", 2, 0, False),
    ],
)
def test_setup_script_tolerates_a_rerun_and_nothing_else(
    tmp_path: Path, case: str, migrate_rc: int, deploy_rc: int, succeeds: bool
) -> None:
    output = {
        "first run": "tokenization demo-tok: token 0x1, distributor 0x2",
        "re-run: already deployed": already_deployed_error(),
        "missing setting (also exit 2)": missing_setting_error(),
        "deploy failed": "Traceback (most recent call last): ...",
        "migration failed": "",
    }[case]
    code, calls = run_setup(tmp_path, migrate_rc, deploy_rc, output)
    assert (code == 0) is succeeds, f"{case}: setup exited {code}"
    expected = ["db migrate"] if migrate_rc else ["db migrate", DEPLOY]
    assert calls.splitlines() == expected


# ---------------------------------------------------------------- Dockerfile


def stages() -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for ins in dockerfile():
        if ins.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(ins)
    return found


def test_dockerfile_builds_on_python_311_slim_and_runs_unprivileged() -> None:
    bases = [ins.args.split()[0] for ins in dockerfile() if ins.keyword == "FROM"]
    assert bases, "no FROM"
    assert set(bases) == {"python:3.11-slim"}, bases
    users = [ins.args for ins in stages()[-1] if ins.keyword == "USER"]
    assert users, "the final stage runs as root (no USER)"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]}"


def test_dockerfile_installs_the_project_with_contracts_and_cli_entrypoint() -> None:
    runs = " && ".join(ins.args for ins in dockerfile() if ins.keyword == "RUN")
    assert re.search(r"\bpip install (?:--?\S+ )*\.(?:\s|$)", runs), "no `pip install .`"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = pyproject["tool"]["setuptools"]["package-data"]["tokendist"]
    assert "consumer/abi/*.json" in data, "the ABIs are read at run time: package data"
    assert "artifact('Distributor')" in runs, "the image never checks it can load the ABIs"
    assert image_entrypoint() == ["tokendist"]


def test_dockerfile_copies_every_packaged_directory() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.split(".")[0].rstrip("*") for p in patterns}
    sources = set(copy_sources())
    assert "pyproject.toml" in sources
    missing = packages - sources
    assert not missing, f"pip install . would miss {sorted(missing)}: COPY them"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent
    directory excludes everything below it."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert dockerignored(".venv/bin/python", patterns), "the matcher itself works"
    for source in copy_sources():
        files = [p for p in (ROOT / source).rglob("*") if p.is_file() and p.suffix != ".pyc"]
        for file in files or [ROOT / source]:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                continue
            assert not dockerignored(relative, patterns), f".dockerignore drops {relative}"
