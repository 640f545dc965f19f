"""``manage.py validate_blueprint``: the committed render.yaml passes; broken copies fail, naming the problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from comms_platform import config
from comms_platform.blueprint import blueprint_problems

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = ROOT / "render.yaml"


def _data() -> dict:
    return yaml.safe_load(BLUEPRINT.read_text())


def _service(data: dict, name: str) -> dict:
    return next(s for s in data["services"] if s.get("name") == name)


def _group(data: dict, name: str) -> list[dict]:
    return next(g for g in data["envVarGroups"] if g["name"] == name)["envVars"]


def _write(tmp_path: Path, data: dict) -> Path:
    """A copy beside the bin/ scripts, so start commands resolve as in the repository."""
    shutil.copytree(ROOT / "bin", tmp_path / "bin")
    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(path: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "manage.py", "validate_blueprint", str(path)],
        cwd=ROOT, capture_output=True, text=True,
        # An empty production environment: the command must still run.
        env={"PATH": "/usr/bin:/bin", "COMMS_MODE": "production"},
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_committed_blueprint_is_ok_even_in_an_incomplete_production_environment():
    code, out = _run(BLUEPRINT)
    assert code == 0, out
    assert out.strip().endswith("ok")


def test_committed_blueprint_declares_the_documented_services():
    data = _data()
    kinds = {s["name"]: s["type"] for s in data["services"]}
    assert kinds == {
        "comms-web": "web", "comms-realtime": "web", "comms-worker": "worker",
        "comms-worker-voice": "worker", "comms-worker-messaging": "worker", "comms-worker-email": "worker",
        "comms-beat": "worker", "comms-kv": "keyvalue",
    }  # fmt: skip
    assert _service(data, "comms-kv")["maxmemoryPolicy"] == "noeviction"
    assert _service(data, "comms-worker")["maxShutdownDelaySeconds"] == 300
    assert _service(data, "comms-web")["preDeployCommand"] == "bin/render-predeploy"
    for script in ("build", "predeploy", "web", "realtime", "worker", "beat"):
        text = (ROOT / "bin" / f"render-{script}").read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


def test_worker_script_consumes_every_agent_queue_by_default(settings):
    text = (ROOT / "bin" / "render-worker").read_text()
    default = text.split("${WORKER_QUEUES:-")[1].split("}")[0].split(",")
    assert sorted(default) == sorted(settings.AGENT_QUEUES)


def test_worker_services_are_the_pools_and_cover_every_queue_once(settings):
    from comms_platform.worker_pools import POOLS

    data = _data()
    services = [s for s in data["services"] if s.get("startCommand") == "bin/render-worker"]
    queues = {
        s["name"]: next(e["value"] for e in s["envVars"] if e.get("key") == "WORKER_QUEUES") for s in services
    }
    assert sorted(queues.values()) == sorted(POOLS.values())
    consumed = [q for value in queues.values() for q in value.split(",")]
    assert sorted(consumed) == sorted(settings.AGENT_QUEUES)  # every queue, each by one pool
    for channel in ("voice", "messaging", "email"):
        assert queues[f"comms-worker-{channel}"] == channel
        assert _service(data, f"comms-worker-{channel}")["maxShutdownDelaySeconds"] == 300


def test_placeholder_secret_fails_naming_it(tmp_path):
    data = _data()
    group = _group(data, "comms-secrets")
    entry = next(e for e in group if e["key"] == "TWILIO_AUTH_TOKEN")
    entry.pop("sync")
    entry["value"] = "changeme"
    code, out = _run(_write(tmp_path, data))
    assert code == 1
    assert "TWILIO_AUTH_TOKEN is a secret committed as a value" in out


def test_placeholder_value_of_a_plain_variable_fails(tmp_path):
    data = _data()
    entry = next(e for e in _group(data, "comms-secrets") if e["key"] == "ALLOWED_HOSTS")
    entry.pop("sync")
    entry["value"] = "your-domain.example"
    problems = blueprint_problems(_write(tmp_path, data))
    assert any("ALLOWED_HOSTS holds a placeholder value 'your-domain.example'" in p for p in problems)


@pytest.mark.parametrize("name", config.required_in("production"))
def test_each_missing_required_variable_fails_naming_it(tmp_path, name):
    data = _data()
    for group in data["envVarGroups"]:
        group["envVars"] = [e for e in group["envVars"] if e.get("key") != name]
    for service in data["services"]:
        if "envVars" in service:
            service["envVars"] = [e for e in service["envVars"] if e.get("key") != name]
    code, out = _run(_write(tmp_path, data))
    assert code == 1
    assert f"service comms-web: {name} " in out
    assert f"service comms-worker: {name} " in out


def test_missing_sms_sender_names_both_alternatives(tmp_path):
    data = _data()
    group = _group(data, "comms-secrets")
    group[:] = [e for e in group if e["key"] != "TWILIO_MESSAGING_SERVICE_SID"]
    problems = blueprint_problems(_write(tmp_path, data))
    assert any(
        "TWILIO_MESSAGING_SERVICE_SID or TWILIO_SMS_FROM is required in production" in p for p in problems
    )


def test_worker_without_the_broker_url_fails(tmp_path):
    data = _data()
    worker = _service(data, "comms-worker")
    worker["envVars"] = [e for e in worker["envVars"] if e.get("key") != "REDIS_URL"]
    code, out = _run(_write(tmp_path, data))
    assert code == 1
    assert "service comms-worker: REDIS_URL is not provided: the Celery broker URL" in out
    assert "comms-web: REDIS_URL" not in out


def test_keyvalue_that_evicts_fails(tmp_path):
    data = _data()
    _service(data, "comms-kv")["maxmemoryPolicy"] = "allkeys-lru"
    problems = blueprint_problems(_write(tmp_path, data))
    assert problems == [
        "keyvalue comms-kv: maxmemoryPolicy must be noeviction (got 'allkeys-lru'): it holds the Celery "
        "queues, and an evicted message is a lost task"
    ]


def test_inline_shell_command_and_short_shutdown_delay_fail(tmp_path):
    data = _data()
    worker = _service(data, "comms-worker")
    worker["startCommand"] = "celery -A comms_platform worker"
    worker["maxShutdownDelaySeconds"] = 10
    problems = blueprint_problems(_write(tmp_path, data))
    assert any(
        "startCommand 'celery -A comms_platform worker' is not a script under bin/" in p for p in problems
    )
    assert any("maxShutdownDelaySeconds 10 must be an integer from 60 to 300" in p for p in problems)


def test_reference_to_an_undeclared_database_fails(tmp_path):
    data = _data()
    data["databases"][0]["name"] = "other-db"
    problems = blueprint_problems(_write(tmp_path, data))
    assert any(
        "DATABASE_URL comes from database 'comms-db', which databases: does not declare" in p
        for p in problems
    )


def test_secret_generated_per_service_fails(tmp_path):
    data = _data()
    _service(data, "comms-web")["envVars"].append({"key": "SECRET_KEY", "generateValue": True})
    problems = blueprint_problems(_write(tmp_path, data))
    assert any("SECRET_KEY is generated for this service alone" in p for p in problems)


def test_debug_true_and_test_mode_fail(tmp_path):
    data = _data()
    _group(data, "comms-settings").append({"key": "DEBUG", "value": "true"})
    next(e for e in _group(data, "comms-settings") if e["key"] == "COMMS_MODE")["value"] = "test"
    problems = blueprint_problems(_write(tmp_path, data))
    assert any("DEBUG must be false in production" in p for p in problems)
    assert any("COMMS_MODE must be the value 'production'" in p for p in problems)


def test_missing_file_and_bad_yaml(tmp_path):
    assert blueprint_problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [\n")
    assert "not valid YAML" in blueprint_problems(bad)[0]


def test_call_command_prints_ok(capsys):
    call_command("validate_blueprint", str(BLUEPRINT))
    assert capsys.readouterr().out.strip() == f"{BLUEPRINT}: ok"
