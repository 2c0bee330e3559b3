"""Offline checks of docker-compose.yml: no Docker engine and no network are needed.

The file is validated against the Compose specification's JSON schema that ``check-jsonschema``
vendors (``--builtin-schema vendor.compose-spec``), and a copy with one misspelt key is shown to
fail that check, so a pass means something. The services are then read back with PyYAML (which
resolves the ``<<`` merges of the ``x-`` extension fields) and compared with the default pool,
``broker/pools/local.toml``: one worker per agent, each reaching its own model server at the
``api_base`` the pool gives it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
LOCAL_POOL = ROOT / "broker" / "pools" / "local.toml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    """Run the Compose-spec schema check on ``path`` (the schema ships inside the package)."""
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def slug(name: str) -> str:
    """The service-name form of an agent or model name (``qwen2.5-coder-0.5b`` → ``…2-5…0-5b``)."""
    return name.replace(".", "-")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    result: dict[str, dict[str, Any]] = document["services"]
    return result


@pytest.fixture(scope="module")
def agents() -> list[dict[str, Any]]:
    with LOCAL_POOL.open("rb") as handle:
        result: list[dict[str, Any]] = tomllib.load(handle)["agents"]
    assert result, f"{LOCAL_POOL} defines no agents"
    return result


def option(command: list[str], flag: str) -> str:
    """The value that follows ``flag`` in an argv list."""
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_compose_file_passes_the_compose_schema() -> None:
    result = schema_check(COMPOSE_FILE)

    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    line = "\n    restart: unless-stopped\n"  # a service-level key, e.g. redis's
    assert line in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(line, "\n    restrat: unless-stopped\n", 1), encoding="utf-8")

    result = schema_check(broken)

    assert result.returncode != 0
    assert "restrat" in result.stdout + result.stderr


def test_every_pool_agent_has_a_worker_service(
    services: dict[str, dict[str, Any]], agents: list[dict[str, Any]]
) -> None:
    assert {"redis", "postgres", "worker-control", "flower"} <= services.keys()
    assert services["worker-control"]["command"] == ["sale", "worker", "--control"]
    assert services["flower"]["command"] == ["sale", "flower"]
    agent_workers = {
        name: option(service["command"], "--agent")
        for name, service in services.items()
        if service.get("command", [])[:3] == ["sale", "worker", "--agent"]
    }

    assert agent_workers == {f"worker-{slug(agent['name'])}": agent["name"] for agent in agents}


def test_each_agent_worker_reaches_its_own_model_server(
    services: dict[str, dict[str, Any]], agents: list[dict[str, Any]]
) -> None:
    local_agents = [agent for agent in agents if "local_model" in agent]
    assert local_agents
    for agent in local_agents:
        worker = services[f"worker-{slug(agent['name'])}"]
        server_name = f"model-{slug(agent['local_model'])}"
        server = services[server_name]
        api_base = urlsplit(agent["api_base"])
        command = server["command"]

        # The server binds 127.0.0.1, so the worker shares its network namespace.
        assert api_base.hostname == "127.0.0.1"
        assert worker["network_mode"] == f"service:{server_name}"
        assert worker["depends_on"][server_name]["condition"] == "service_healthy"
        assert command[:3] == ["python", "-m", "sale.scripts.local.model_server"]
        assert option(command, "--port") == str(api_base.port)
        assert option(command, "--alias") == agent["local_model"]
        assert option(command, "--threads") == "1"
        assert Path(option(command, "--model")).name == f"{agent['local_model']}.gguf"
        assert f"127.0.0.1:{api_base.port}/health" in " ".join(server["healthcheck"]["test"])
        assert server["depends_on"] == {
            "models-install": {"condition": "service_completed_successfully"}
        }


def test_every_long_running_service_restarts_and_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"models-install"}
    for name, service in services.items():
        if name in one_shot:
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), name
    for name, service in services.items():
        command = service.get("command", [])
        if command[:2] == ["sale", "worker"]:
            node = "control" if "--control" in command else option(command, "--agent")
            assert f"-d {node}@$$HOSTNAME" in service["healthcheck"]["test"][1], name
