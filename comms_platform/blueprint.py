"""Checks of a Render Blueprint (``render.yaml``) against ``config.schema.json``.

``blueprint_problems(path)`` returns one sentence per problem (empty when the Blueprint is
deployable): ``manage.py validate_blueprint`` prints them. What it checks:

* every Django service (web, worker, private service, cron) receives every variable the
  production start-up check requires, including the mode's alternatives and conditions
  (``x-modes.production`` in the schema), from a ``value``, ``fromDatabase``,
  ``fromService``, ``fromGroup``, ``generateValue`` or ``sync: false``;
* no committed secret (a ``value:`` for an ``x-secret`` variable) and no placeholder value;
* ``DATABASE_URL`` and ``REDIS_URL`` reach every Django service (the worker's Celery broker
  URL comes from ``REDIS_URL``), and references point at resources the Blueprint declares;
* the Key Value instance never evicts (``maxmemoryPolicy: noeviction``), the web service has
  a health check and runs migrations before deploy, a worker gets time to finish in-flight
  sends, and each start command is an executable script in the repository.

Render's own field reference: https://render.com/docs/blueprint-spec
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from comms_platform import config as platform_config

DJANGO_SERVICE_TYPES = frozenset({"web", "worker", "pserv", "cron"})
CONNECTIONS = ("DATABASE_URL", "REDIS_URL")
# Render's default is 30 s; a provider send or a content generation can take longer.
MIN_WORKER_SHUTDOWN_SECONDS = 60
MAX_SHUTDOWN_SECONDS = 300
# Stands for a value Render provides at deploy time (generated, prompted, or wired).
_PROVIDED = "provided-by-render"


@dataclass
class Source:
    """Where one service's variable comes from."""

    kind: str  # 'value' | 'generateValue' | 'sync:false' | 'fromDatabase' | 'fromService' | 'fromGroup'
    value: str | None = None
    via: str = ""


@dataclass
class Blueprint:
    path: Path
    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def services(self) -> list[dict[str, Any]]:
        return [s for s in self.data.get("services") or [] if isinstance(s, dict)]

    @property
    def databases(self) -> set[str]:
        return {d.get("name") for d in self.data.get("databases") or [] if isinstance(d, dict)}

    @property
    def groups(self) -> dict[str, list[dict[str, Any]]]:
        return {
            g.get("name"): g.get("envVars") or []
            for g in self.data.get("envVarGroups") or []
            if isinstance(g, dict)
        }


def load(path: Path) -> Blueprint:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Blueprint(path, {}, [f"{path}: no such file"])
    except yaml.YAMLError as exc:
        return Blueprint(path, {}, [f"{path}: not valid YAML ({exc})"])
    if not isinstance(data, dict):
        return Blueprint(path, {}, [f"{path}: expected a mapping with services, databases, envVarGroups"])
    return Blueprint(path, data)


def blueprint_problems(path: Path | str) -> list[str]:
    """Every problem found in the Blueprint at ``path`` (empty list: deployable)."""
    bp = load(Path(path))
    if bp.problems:
        return bp.problems
    problems: list[str] = []
    problems += _group_problems(bp)
    for service in bp.services:
        problems += _service_problems(bp, service)
    if not any(s.get("type") in DJANGO_SERVICE_TYPES for s in bp.services):
        problems.append("no web or worker service: nothing would run the platform")
    if not any(s.get("type") == "keyvalue" for s in bp.services):
        problems.append("no Key Value instance (type: keyvalue): Celery and Channels need Redis")
    if not bp.databases:
        problems.append("no Render Postgres under databases:")
    return problems


# --- Variables --------------------------------------------------------------------------


def _entry_problems(owner: str, entry: dict[str, Any]) -> list[str]:
    """A single envVars entry: committed secrets, placeholders, contradictory sources."""
    key = entry.get("key")
    if not key:
        return [] if "fromGroup" in entry else [f"{owner}: an envVars entry has no key"]
    props = platform_config.properties()
    problems = []
    sources = [k for k in ("value", "generateValue", "fromDatabase", "fromService") if k in entry]
    if entry.get("sync") is False:
        sources.append("sync")
    if len(sources) > 1:
        problems.append(f"{owner}: {key} has several sources ({', '.join(sources)}); give it exactly one")
    if "value" in entry:
        value = "" if entry["value"] is None else str(entry["value"])
        if props.get(key, {}).get("x-secret"):
            problems.append(
                f"{owner}: {key} is a secret committed as a value; use sync: false "
                "(or generateValue: true for one the platform only needs to be random)"
            )
        elif platform_config.is_placeholder(value):
            problems.append(
                f"{owner}: {key} holds a placeholder value {value!r}; set the real value or remove it"
            )
    elif not sources:
        problems.append(
            f"{owner}: {key} has no value and no source (value, generateValue, sync: false, from…)"
        )
    return problems


def _group_problems(bp: Blueprint) -> list[str]:
    problems = []
    for name, entries in bp.groups.items():
        for entry in entries:
            if isinstance(entry, dict):
                problems += _entry_problems(f"envVarGroup {name}", entry)
                for ref in ("fromDatabase", "fromService"):
                    if ref in entry:
                        problems.append(
                            f"envVarGroup {name}: {entry.get('key')} uses {ref}, which groups cannot"
                        )
    return problems


def _sources(bp: Blueprint, service: dict[str, Any]) -> tuple[dict[str, Source], list[str]]:
    """The service's variables (its own entries override its groups') and reference problems."""
    owner = f"service {service.get('name')}"
    found: dict[str, Source] = {}
    problems: list[str] = []
    own: dict[str, Source] = {}
    for entry in service.get("envVars") or []:
        if not isinstance(entry, dict):
            continue
        if "fromGroup" in entry:
            group = entry["fromGroup"]
            if group not in bp.groups:
                problems.append(f"{owner}: fromGroup {group!r} is not declared under envVarGroups")
                continue
            for item in bp.groups[group]:
                if isinstance(item, dict) and item.get("key"):
                    found[item["key"]] = _source(item, via=f"group {group}")
            continue
        problems += _entry_problems(owner, entry)
        problems += _reference_problems(bp, owner, entry)
        if entry.get("key"):
            own[entry["key"]] = _source(entry)
    found.update(own)
    return found, problems


def _source(entry: dict[str, Any], via: str = "") -> Source:
    if "value" in entry:
        return Source("value", "" if entry["value"] is None else str(entry["value"]), via)
    for kind in ("generateValue", "fromDatabase", "fromService"):
        if kind in entry:
            return Source(kind, None, via)
    return Source("sync:false", None, via)


def _reference_problems(bp: Blueprint, owner: str, entry: dict[str, Any]) -> list[str]:
    key = entry.get("key")
    if "fromDatabase" in entry:
        ref = entry["fromDatabase"] or {}
        if ref.get("name") not in bp.databases:
            return [
                f"{owner}: {key} comes from database {ref.get('name')!r}, which databases: does not declare"
            ]
    if "fromService" in entry:
        ref = entry["fromService"] or {}
        declared = {(s.get("type"), s.get("name")) for s in bp.services}
        if (ref.get("type"), ref.get("name")) not in declared:
            return [
                f"{owner}: {key} comes from service {ref.get('name')!r} of type {ref.get('type')!r}, "
                "which services: does not declare"
            ]
        if not (ref.get("property") or ref.get("envVarKey")):
            return [f"{owner}: {key} fromService needs a property (e.g. connectionString) or envVarKey"]
    return []


def _required_for(env: dict[str, Source]) -> list[str]:
    """What production requires given the variables whose values are known (mode conditions)."""
    instance = {name: (src.value if src.kind == "value" else _PROVIDED) for name, src in env.items()}
    instance = {name: value for name, value in instance.items() if value}
    # The same walk the start-up check does over x-modes.production (alternatives, conditions).
    names = platform_config._required_names(platform_config.mode_schema("production"), instance)
    order = list(platform_config.properties())
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _alternative_groups() -> list[list[str]]:
    """The x-modes.production ``anyOf`` alternatives, for messages naming every choice."""
    mode_part = platform_config.load_schema().get("x-modes", {}).get("production", {})
    groups = []
    for part in mode_part.get("allOf", []):
        if "anyOf" in part:
            groups.append([name for alt in part["anyOf"] for name in alt.get("required", [])])
    return groups


# --- Services ---------------------------------------------------------------------------


def _service_problems(bp: Blueprint, service: dict[str, Any]) -> list[str]:
    name, kind = service.get("name") or "(unnamed)", service.get("type")
    if kind == "keyvalue":
        return _keyvalue_problems(service)
    if kind not in DJANGO_SERVICE_TYPES:
        return []
    owner = f"service {name}"
    env, problems = _sources(bp, service)
    problems += _command_problems(bp, owner, service)
    mode = env.get("COMMS_MODE")
    if mode is None or mode.kind != "value" or mode.value != "production":
        problems.append(
            f"{owner}: COMMS_MODE must be the value 'production' (test mode uses simulated providers)"
        )
    for variable in CONNECTIONS:
        if variable not in env:
            problems.append(_connection_message(owner, kind, variable))
    alternatives = _alternative_groups()
    missing = [v for v in _required_for(env) if v not in env and v not in CONNECTIONS]
    for variable in missing:
        choice = next((g for g in alternatives if variable in g), None)
        if choice and any(c in env for c in choice):
            continue
        what = " or ".join(choice) if choice else variable
        problems.append(
            f"{owner}: {what} is required in production and not provided "
            f"(it should hold: {platform_config.properties()[variable]['description']})"
        )
    literal = {n: src.value for n, src in env.items() if src.kind == "value" and src.value is not None}
    for problem in platform_config.startup_problems(literal, "production"):
        if problem.kind == "invalid":
            problems.append(f"{owner}: {problem.message}")
    problems += _generated_problems(bp, owner, service)
    if kind == "worker" and _role(service) == "worker":
        problems += _worker_problems(owner, service)
    if kind == "web" and _role(service) == "web":
        problems += _web_problems(owner, service)
    return problems


def _connection_message(owner: str, kind: str, variable: str) -> str:
    if variable == "DATABASE_URL":
        return (
            f"{owner}: DATABASE_URL is not provided (wire it with fromDatabase … property: connectionString)"
        )
    if kind == "worker":
        return (
            f"{owner}: REDIS_URL is not provided: the Celery broker URL (CELERY_BROKER_URL) comes from it, "
            "so the worker would have no broker; wire it with fromService type: keyvalue, property: connectionString"
        )
    return f"{owner}: REDIS_URL is not provided (wire it with fromService type: keyvalue, property: connectionString)"


def _generated_problems(bp: Blueprint, owner: str, service: dict[str, Any]) -> list[str]:
    """A value generated per service differs between services: shared secrets belong in a group."""
    problems = []
    for entry in service.get("envVars") or []:
        if (
            isinstance(entry, dict)
            and entry.get("generateValue")
            and entry.get("key")
            in {
                "SECRET_KEY",
                "REMOTE_AGENT_SECRET",
            }
        ):
            others = [
                s.get("name")
                for s in bp.services
                if s is not service and s.get("type") in DJANGO_SERVICE_TYPES
            ]
            if others:
                problems.append(
                    f"{owner}: {entry['key']} is generated for this service alone, so the other services "
                    f"({', '.join(others)}) would hold a different one; generate it in an envVarGroup"
                )
    return problems


def _role(service: dict[str, Any]) -> str:
    """web, realtime, worker or beat: from the start script (bin/render-<role>)."""
    command = str(service.get("startCommand") or "")
    for role in ("realtime", "beat", "worker", "web"):
        if f"render-{role}" in command or (role in command and "celery" in command):
            return role
    return service.get("type") or ""


def _script(bp: Blueprint, command: str) -> Path | None:
    first = command.split()[0] if command.split() else ""
    if "/" not in first:
        return None
    return (bp.path.parent / first).resolve()


def _command_problems(bp: Blueprint, owner: str, service: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("buildCommand", "preDeployCommand", "startCommand"):
        command = service.get(key)
        if command is None:
            if key != "preDeployCommand":
                problems.append(f"{owner}: no {key}")
            continue
        script = _script(bp, str(command))
        if script is None:
            problems.append(
                f"{owner}: {key} {command!r} is not a script under bin/; Render runs commands "
                "without a shell, so put them in an executable script"
            )
        elif not script.is_file():
            problems.append(f"{owner}: {key} script {command.split()[0]} does not exist")
        elif not script.stat().st_mode & 0o111:
            problems.append(f"{owner}: {key} script {command.split()[0]} is not executable")
    return problems


def _worker_problems(owner: str, service: dict[str, Any]) -> list[str]:
    delay = service.get("maxShutdownDelaySeconds")
    if delay is None:
        return [
            f"{owner}: no maxShutdownDelaySeconds; Render's default (30 s) kills in-flight sends on deploy "
            f"(use {MIN_WORKER_SHUTDOWN_SECONDS}-{MAX_SHUTDOWN_SECONDS})"
        ]
    if not isinstance(delay, int) or not MIN_WORKER_SHUTDOWN_SECONDS <= delay <= MAX_SHUTDOWN_SECONDS:
        return [
            f"{owner}: maxShutdownDelaySeconds {delay!r} must be an integer from "
            f"{MIN_WORKER_SHUTDOWN_SECONDS} to {MAX_SHUTDOWN_SECONDS}"
        ]
    return []


def _web_problems(owner: str, service: dict[str, Any]) -> list[str]:
    problems = []
    if service.get("healthCheckPath") != "/healthz":
        problems.append(
            f"{owner}: healthCheckPath should be /healthz (got {service.get('healthCheckPath')!r})"
        )
    if not service.get("preDeployCommand"):
        problems.append(f"{owner}: no preDeployCommand; migrations must run before the new version serves")
    return problems


def _keyvalue_problems(service: dict[str, Any]) -> list[str]:
    owner = f"keyvalue {service.get('name')}"
    problems = []
    if service.get("maxmemoryPolicy") != "noeviction":
        problems.append(
            f"{owner}: maxmemoryPolicy must be noeviction (got {service.get('maxmemoryPolicy')!r}): "
            "it holds the Celery queues, and an evicted message is a lost task"
        )
    if "ipAllowList" not in service:
        problems.append(f"{owner}: ipAllowList is required (use [] for private-network access only)")
    return problems
