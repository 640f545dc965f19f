"""The schema-driven configuration checks: comms_platform/config.py, config.schema.json,
.env.example and ``manage.py config_report``.

Most tests call the pure functions with an explicit environment; the command tests use
``call_command`` under pytest-django, and one test starts a real production process.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator

from comms_platform import config

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_PY = ROOT / "comms_platform" / "settings.py"
ENV_EXAMPLE = ROOT / ".env.example"

SCHEMA = config.load_schema()
PROPS = SCHEMA["properties"]
SECRETS = sorted(name for name, prop in PROPS.items() if prop["x-secret"])

REQUIRED_IN_PRODUCTION = {
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "PUBLIC_BASE_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_VOICE_CALLER_ID",
    "OPENAI_API_KEY",
    "REMOTE_AGENT_SECRET",
}

# Read by later phases (make run, the agents, the deployment) rather than settings.py.
LATER_PHASE_VARIABLES = {
    "OPERATOR_USERNAME": None,
    "OPERATOR_EMAIL": None,
    "OPERATOR_PASSWORD": None,
    "TWILIO_STATUS_CALLBACK_OVERRIDE": "#rc=3&rp=all",
    "SMS_MAX_SEGMENTS": "10",
    "MESSAGING_RATE_PER_SECOND": "1",
    "MESSAGING_MAX_RETRIES": "5",
    "MESSAGING_HELP_REPLY": None,
    "VOICE_MODE": None,
    "VOICE_DEFAULT_LANGUAGE": None,
    "VOICE_DEFAULT_VOICE": None,
    "VOICE_MAX_DURATION_SECONDS": None,
    "SENDGRID_EVENT_MAX_AGE_SECONDS": "86400",
    "ARTIFACT_URL_TTL_SECONDS": "3600",
    "ARTIFACT_STORAGE": None,
    "AWS_STORAGE_BUCKET_NAME": None,
    "AWS_S3_ENDPOINT_URL": None,
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "HEARTBEAT_INTERVAL_SECONDS": "5",
    "HEARTBEAT_STALE_SECONDS": "30",
    "PORT": None,
    "WEB_CONCURRENCY": None,
}

# Distinctive secret values: the tests look for them in every output.
PRODUCTION_SECRETS = {
    "SECRET_KEY": "Sk-prod-4u7Hq2LmZx9Rv3Nw8Ty6Pb1Cd5Fg0Jk-q2LmZx9Rv3Nw8Ty6Pb1Cd5Fg0",
    "DATABASE_URL": "postgres://comms:Db-Pa55word-9f8e7d@db.internal:5432/comms",
    "REDIS_URL": "rediss://default:Redis-Pa55-7c6b5a@redis.internal:6379/0",
    "TWILIO_AUTH_TOKEN": "fedcba9876543210fedcba9876543210",
    "SENDGRID_API_KEY": "SG.Abc123Def456Ghi789Jkl0.Mno-Pqr_Stu123Vwx456Yz7890AbCdEfGhIjKlMn",
    "OPENAI_API_KEY": "sk-proj-0penAiK3y-s3cret-41b2c3d4e5f6",
    "REMOTE_AGENT_SECRET": "remote-agent-shared-secret-0f1e2d3c4b5a69788796",
}


def production_env(**overrides: str | None) -> dict[str, str]:
    """A complete, valid production environment; ``NAME=None`` removes a variable."""
    env = {
        "COMMS_MODE": "production",
        "ALLOWED_HOSTS": "comms.example.com",
        "PUBLIC_BASE_URL": "https://comms.example.com",
        "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
        "TWILIO_MESSAGING_SERVICE_SID": "MG89abcdef0123456789abcdef01234567",
        "TWILIO_VOICE_CALLER_ID": "+14155550100",
        "SENDGRID_EVENT_PUBLIC_KEY": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEabc+/def0123456789ghij==",
        # Not in the schema: ignored.
        "HOME": "/home/app",
        "SOMETHING_ELSE": "changeme",
        **PRODUCTION_SECRETS,
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def problem_map(problems: list[config.Problem]) -> dict[str, str]:
    return {p.variable: p.kind for p in problems}


def parse_env_file(path: Path) -> list[tuple[str, str, str]]:
    """(name, value, comment above it) for every assignment line."""
    entries: list[tuple[str, str, str]] = []
    comment = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            comment = ""
            continue
        if line.startswith("#"):
            comment = line
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        assert match, f"not a NAME=value line in .env.example: {raw!r}"
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        entries.append((name, value, comment))
        comment = ""
    return entries


# --- The schema -----------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12_and_every_mode_schema_too():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)
    for mode in config.modes():
        Draft202012Validator.check_schema(config.mode_schema(mode))
    assert set(config.modes()) == {"test", "production"}


@pytest.mark.parametrize("name", list(PROPS))
def test_every_property_is_fully_described(name):
    prop = PROPS[name]
    assert prop["type"] == "string"
    assert isinstance(prop["description"], str) and len(prop["description"]) > 20
    assert isinstance(prop["x-secret"], bool)
    assert prop["x-group"] in SCHEMA["x-groups"]
    assert set(prop["x-required-in"]) <= set(config.modes())
    assert "pattern" in prop or "enum" in prop or prop["x-secret"] or name in {"SMTP_USER"}
    if "pattern" in prop:
        re.compile(prop["pattern"])
    default = prop.get("default")
    # An empty default means "unset"; a secret's default is a test-mode stand-in that
    # production (which requires the secret) never uses.
    if default and not prop["x-secret"]:
        assert Draft202012Validator(prop).is_valid(default), (
            f"{name} default {default!r} fails its own schema"
        )


def test_groups_are_the_documented_ones():
    expected = {
        "core",
        "database",
        "redis",
        "twilio",
        "sendgrid",
        "smtp",
        "openai",
        "agents",
        "retention",
        "operations",
        "storage",
    }
    assert set(SCHEMA["x-groups"]) == expected
    assert {prop["x-group"] for prop in PROPS.values()} == expected


def settings_variables() -> set[str]:
    source = SETTINGS_PY.read_text(encoding="utf-8")
    names = set(re.findall(r"\benv\.[a-z_]+\(\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", source))
    names |= set(re.findall(r"\benv\(\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", source))
    names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", source))
    names |= set(re.findall(r"os\.getenv\(\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']", source))
    return names


def test_every_variable_settings_reads_is_in_the_schema():
    names = settings_variables()
    # The regex must really find the reads (guards against a regex that matches nothing).
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "TWILIO_AUTH_TOKEN", "RETENTION_TASKS_DAYS"} <= names
    assert len(names) >= 60
    assert sorted(names - set(PROPS)) == []


def _literal(node: ast.AST):
    """The value of a constant or a product of constants (``64 * 1024``), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, int) and isinstance(right, int):
            return left * right
    return None


def test_schema_defaults_match_the_literal_defaults_in_settings():
    source = SETTINGS_PY.read_text(encoding="utf-8")
    reads = re.findall(r"\benv\.(str|int|float|bool)\(\s*\"([A-Z0-9_]+)\",\s*default=([^)\n]+)\)", source)
    checked = 0
    for kind, name, literal in reads:
        try:
            value = _literal(ast.parse(literal.strip(), mode="eval").body)
        except SyntaxError:  # a call cut at its first ")" by the regex: computed, not literal
            continue
        if value is None:  # computed from other settings (f-strings, names): not comparable
            continue
        expected = str(value).lower() if kind == "bool" else str(value)
        assert PROPS[name].get("default") == expected, name
        checked += 1
    assert checked >= 40


def test_variables_of_later_phases_are_in_the_schema_with_their_defaults():
    for name, default in LATER_PHASE_VARIABLES.items():
        assert name in PROPS, name
        if default is not None:
            assert PROPS[name]["default"] == default, name
    assert set(PROPS["VOICE_MODE"]["enum"]) == {"conversationrelay", "gather"}
    assert set(PROPS["ARTIFACT_STORAGE"]["enum"]) == {"filesystem", "s3"}


def test_required_in_production_is_the_documented_list():
    assert set(config.required_in("production")) == REQUIRED_IN_PRODUCTION
    assert config.required_in("test") == []
    production = SCHEMA["x-modes"]["production"]
    assert json.dumps(production).count("anyOf") >= 1


def test_secret_flags():
    expected = {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_PREVIOUS_AUTH_TOKENS",
        "SENDGRID_API_KEY",
        "SMTP_PASSWORD",
        "OPENAI_API_KEY",
        "REMOTE_AGENT_SECRET",
        "OPERATOR_PASSWORD",
        "METRICS_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "SMS_GATEWAY_API_KEY",
        "SMS_GATEWAY_WEBHOOK_SECRET",
    }
    assert set(SECRETS) == expected
    for name in ("TWILIO_ACCOUNT_SID", "ALLOWED_HOSTS", "PUBLIC_BASE_URL", "EMAIL_FROM", "SMTP_USER"):
        assert PROPS[name]["x-secret"] is False


def test_twilio_formats_are_the_documented_ones():
    assert PROPS["TWILIO_ACCOUNT_SID"]["pattern"] == r"^AC[0-9a-fA-F]{32}$"
    assert PROPS["TWILIO_MESSAGING_SERVICE_SID"]["pattern"] == r"^MG[0-9a-fA-F]{32}$"
    assert PROPS["TWILIO_SMS_FROM"]["pattern"] == r"^\+[1-9][0-9]{6,14}$"
    assert PROPS["TWILIO_VOICE_CALLER_ID"]["pattern"] == r"^\+[1-9][0-9]{6,14}$"
    assert PROPS["TWILIO_WHATSAPP_FROM"]["pattern"] == r"^whatsapp:\+[1-9][0-9]{6,14}$"


def test_schema_is_loaded_once():
    assert config.load_schema() is config.load_schema()


def test_config_module_imports_only_stdlib_and_jsonschema():
    source = (ROOT / "comms_platform" / "config.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", source, flags=re.M))
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"jsonschema"}


# --- .env.example ---------------------------------------------------------------------


def test_env_example_lists_exactly_the_schema_variables_once_each():
    entries = parse_env_file(ENV_EXAMPLE)
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), "duplicated variables in .env.example"
    assert set(names) == set(PROPS)
    assert entries[0][:2] == ("COMMS_MODE", "test")


def test_env_example_comments_every_variable_and_groups_them():
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name, _, comment in parse_env_file(ENV_EXAMPLE):
        assert comment.startswith("# "), f"{name} has no comment line above it"
        assert PROPS[name]["description"] in comment
    for title in SCHEMA["x-groups"].values():
        assert f"# --- {title} " in text


def test_env_example_secrets_are_obvious_placeholders():
    for name, value, _ in parse_env_file(ENV_EXAMPLE):
        if not PROPS[name]["x-secret"]:
            continue
        if name == "DATABASE_URL":  # the embedded SQLite default: a URL without credentials
            assert urlsplit(value).password is None
        else:
            assert config.is_placeholder(value), f"{name}={value!r} does not look like a placeholder"


def test_env_example_is_valid_in_test_mode_and_refused_in_production():
    env = {name: value for name, value, _ in parse_env_file(ENV_EXAMPLE)}
    assert config.startup_problems(env, "test") == []
    problems = problem_map(config.startup_problems(env, "production"))
    for name in REQUIRED_IN_PRODUCTION & set(SECRETS) - {"DATABASE_URL"}:
        assert problems.get(name) == "placeholder", name


# --- startup_problems -----------------------------------------------------------------


def test_complete_production_environment_has_no_problems():
    assert config.startup_problems(production_env(), "production") == []


def test_sms_from_number_instead_of_messaging_service_is_enough():
    env = production_env(TWILIO_MESSAGING_SERVICE_SID=None, TWILIO_SMS_FROM="+442071838750")
    assert config.startup_problems(env, "production") == []


def test_smtp_provider_needs_smtp_host_instead_of_sendgrid():
    env = production_env(EMAIL_PROVIDER="smtp", SENDGRID_API_KEY=None, SENDGRID_EVENT_PUBLIC_KEY=None)
    assert problem_map(config.startup_problems(env, "production")) == {"SMTP_HOST": "missing"}
    env["SMTP_HOST"] = "smtp.example.com"
    assert config.startup_problems(env, "production") == []


def test_sendgrid_fallback_needs_the_sendgrid_keys():
    env = production_env(
        EMAIL_PROVIDER="smtp",
        SMTP_HOST="smtp.example.com",
        EMAIL_FALLBACK_PROVIDER="sendgrid",
        SENDGRID_API_KEY=None,
    )
    assert problem_map(config.startup_problems(env, "production")) == {"SENDGRID_API_KEY": "missing"}


def test_empty_environment_in_test_mode_has_no_problems():
    assert config.startup_problems({}, "test") == []


@pytest.mark.parametrize(
    "name", sorted(REQUIRED_IN_PRODUCTION | {"SENDGRID_API_KEY", "SENDGRID_EVENT_PUBLIC_KEY"})
)
def test_each_required_variable_removed_is_missing(name):
    problems = config.startup_problems(production_env(**{name: None}), "production")
    assert [(p.variable, p.kind) for p in problems] == [(name, "missing")]
    assert name in problems[0].message
    assert PROPS[name]["description"].rstrip(".") in problems[0].message


def test_missing_sms_sender_names_both_alternatives():
    env = production_env(TWILIO_MESSAGING_SERVICE_SID=None, TWILIO_SMS_FROM=None)
    problems = config.startup_problems(env, "production")
    assert len(problems) == 1
    assert problems[0].kind == "missing"
    assert set(problems[0].variables) == {"TWILIO_MESSAGING_SERVICE_SID", "TWILIO_SMS_FROM"}
    assert "TWILIO_MESSAGING_SERVICE_SID" in problems[0].message
    assert "TWILIO_SMS_FROM" in problems[0].message


def test_s3_storage_needs_a_bucket_in_every_mode():
    for mode, env in (("test", {}), ("production", production_env())):
        env = {**env, "ARTIFACT_STORAGE": "s3"}
        assert problem_map(config.startup_problems(env, mode)) == {"AWS_STORAGE_BUCKET_NAME": "missing"}
        env["AWS_STORAGE_BUCKET_NAME"] = "comms-artifacts"
        assert config.startup_problems(env, mode) == []


def test_empty_environment_in_production_names_every_required_variable():
    problems = config.startup_problems({"COMMS_MODE": "production"}, "production")
    named = {name for p in problems for name in p.variables}
    assert named >= REQUIRED_IN_PRODUCTION
    assert {"SENDGRID_API_KEY", "SENDGRID_EVENT_PUBLIC_KEY", "TWILIO_SMS_FROM"} <= named
    assert {p.kind for p in problems} == {"missing"}


PLACEHOLDER_FORMS = [
    "",
    "   ",
    "changeme",
    "CHANGEME",
    "change-me",
    "Change_Me",
    "xxx",
    "X" * 32,
    "xxx-my-token",
    "your-api-key",
    "YOUR_TOKEN_HERE",
    "<token>",
    "<your Twilio auth token>",
    "placeholder",
    "a-PLACEHOLDER-value",
]


@pytest.mark.parametrize("form", PLACEHOLDER_FORMS)
def test_is_placeholder_forms(form):
    assert config.is_placeholder(form)


@pytest.mark.parametrize(
    "value", ["hunter2-but-long", "yourself", "sk-abc", "AC0123", "x", "change", "<a", "Sxxx"]
)
def test_is_placeholder_leaves_real_values_alone(value):
    assert not config.is_placeholder(value)


@pytest.mark.parametrize("form", PLACEHOLDER_FORMS)
@pytest.mark.parametrize("name", ["SECRET_KEY", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY", "REMOTE_AGENT_SECRET"])
def test_placeholder_forms_of_required_secrets_are_refused(name, form):
    problems = config.startup_problems(production_env(**{name: form}), "production")
    assert [(p.variable, p.kind) for p in problems] == [(name, "placeholder")]
    assert name in problems[0].message


@pytest.mark.parametrize("name", SECRETS)
def test_every_secret_set_to_a_placeholder_is_refused_in_production(name):
    problems = config.startup_problems(production_env(**{name: "changeme"}), "production")
    assert (name, "placeholder") in [(p.variable, p.kind) for p in problems]


@pytest.mark.parametrize("name", ["SMTP_PASSWORD", "TWILIO_PREVIOUS_AUTH_TOKENS", "AWS_SECRET_ACCESS_KEY"])
def test_optional_secret_placeholder_refused_in_production_but_not_in_test_mode(name):
    assert problem_map(config.startup_problems(production_env(**{name: ""}), "production")) == {
        name: "placeholder"
    }
    assert config.startup_problems({name: "changeme"}, "test") == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("ALLOWED_HOSTS", "<your host>"), ("PUBLIC_BASE_URL", "changeme"), ("TWILIO_ACCOUNT_SID", "")],
)
def test_placeholder_in_a_required_non_secret_is_refused(name, value):
    problems = config.startup_problems(production_env(**{name: value}), "production")
    assert problem_map(problems) == {name: "placeholder"}


def test_placeholder_sms_sender_is_reported_as_placeholder_not_missing():
    env = production_env(TWILIO_MESSAGING_SERVICE_SID=None, TWILIO_SMS_FROM="your-number")
    assert problem_map(config.startup_problems(env, "production")) == {"TWILIO_SMS_FROM": "placeholder"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TWILIO_ACCOUNT_SID", "AB0123456789abcdef0123456789abcdef"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcde"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdeg"),
        ("TWILIO_MESSAGING_SERVICE_SID", "MG123"),
        ("TWILIO_VOICE_CALLER_ID", "4155550100"),
        ("TWILIO_VOICE_CALLER_ID", "+0155550100"),
        ("TWILIO_VOICE_CALLER_ID", "+1 415 555 0100"),
        ("TWILIO_VOICE_CALLER_ID", "+1415555010012345"),
        ("TWILIO_SMS_FROM", "+1-415-555-0100"),
        ("TWILIO_WHATSAPP_FROM", "+14155550100"),
        ("PUBLIC_BASE_URL", "comms.example.com"),
        ("DATABASE_URL", "mysql//nope"),
        ("REDIS_URL", "http://redis:6379"),
        ("DEBUG", "maybe"),
        ("DEBUG", "true"),
        ("SMTP_PORT", "twenty-five"),
        ("RETENTION_CALLS_DAYS", "0"),
        ("VOICE_MODE", "stream"),
        ("EMAIL_PROVIDER", "mailgun"),
        ("LOG_LEVEL", "info"),
        ("SECRET_KEY", "too-short-secret-key"),
        ("SECRET_KEY", "django-insecure-" + "a" * 50),
        ("TWILIO_AUTH_TOKEN", "not-hex-and-not-32-characters"),
    ],
)
def test_bad_formats_are_invalid(name, value):
    problems = config.startup_problems(production_env(**{name: value}), "production")
    assert (name, "invalid") in [(p.variable, p.kind) for p in problems]
    message = next(p.message for p in problems if p.variable == name)
    assert name in message
    if PROPS[name]["x-secret"]:
        assert value not in message
    else:
        assert repr(value) in message


def test_invalid_values_are_problems_in_test_mode_too():
    problems = config.startup_problems({"TWILIO_VOICE_CALLER_ID": "555-0100", "SMTP_PORT": ""}, "test")
    assert problem_map(problems) == {"TWILIO_VOICE_CALLER_ID": "invalid", "SMTP_PORT": "invalid"}


def test_empty_value_of_an_optional_variable_with_empty_default_counts_as_unset():
    env = production_env(TWILIO_WHATSAPP_FROM="", VOICE_AGENT_URL="", EMAIL_FALLBACK_PROVIDER="")
    assert config.startup_problems(env, "production") == []


def test_unknown_environment_variables_are_ignored():
    env = production_env(UNRELATED_TOKEN="changeme", PATH="/usr/bin")
    assert config.startup_problems(env, "production") == []


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="staging"):
        config.startup_problems({}, "staging")


# --- format_startup_problems ----------------------------------------------------------


def test_formatted_message_names_variables_and_hides_secret_values():
    env = production_env(
        SECRET_KEY=None,
        TWILIO_AUTH_TOKEN="Secret-But-Not-Hex-Token-0042",
        OPENAI_API_KEY="your-openai-key",
        TWILIO_ACCOUNT_SID="AC-not-a-sid",
    )
    problems = config.startup_problems(env, "production")
    assert problem_map(problems) == {
        "SECRET_KEY": "missing",
        "OPENAI_API_KEY": "placeholder",
        "TWILIO_ACCOUNT_SID": "invalid",
        "TWILIO_AUTH_TOKEN": "invalid",
    }
    message = config.format_startup_problems(problems)
    lines = message.splitlines()
    assert lines[0] == "Refusing to start in production mode:"
    assert len(lines) == len(problems) + 2
    for problem, line in zip(problems, lines[1:-1], strict=True):
        assert problem.variable in line
        assert PROPS[problem.variable]["description"].rstrip(".") in line
    assert "python manage.py config_report --mode production" in lines[-1]
    for secret in ("Secret-But-Not-Hex-Token-0042", "your-openai-key", *PRODUCTION_SECRETS.values()):
        assert secret not in message
    assert "'AC-not-a-sid'" in message  # non-secret values are shown to help fixing them


def test_problem_is_a_frozen_dataclass():
    problem = config.Problem("SECRET_KEY", "missing", "SECRET_KEY is not set")
    with pytest.raises(AttributeError):
        problem.kind = "invalid"  # type: ignore[misc]


# --- report ---------------------------------------------------------------------------


def test_mask_shows_only_the_length():
    assert config.mask("hunter2") == "set (7 chars)"
    assert config.mask("") == "set (0 chars)"


def test_report_masks_every_secret():
    env = production_env(SMTP_PASSWORD="Smtp-Pa55-very-secret", OPERATOR_PASSWORD="Op3rator-Pa55")
    states = {s.name: s for s in config.report(env, "production")}
    assert list(states) == list(PROPS)
    for name in SECRETS:
        if name in env:
            assert states[name].display == f"set ({len(env[name])} chars)"
            assert states[name].state == "set"
    dumped = json.dumps([vars(s) for s in states.values()]) + config.render_report(env, "production")
    for name in SECRETS:
        if name in env:
            assert env[name] not in dumped, name


def test_report_states_and_required_flags():
    env = production_env(
        SECRET_KEY=None,
        OPENAI_API_KEY="changeme",
        TWILIO_VOICE_CALLER_ID="555",
        LOG_LEVEL="WARNING",
    )
    states = {s.name: s for s in config.report(env, "production")}
    assert (states["SECRET_KEY"].state, states["SECRET_KEY"].required) == ("missing", True)
    assert states["SECRET_KEY"].display == ""
    assert (states["OPENAI_API_KEY"].state, states["OPENAI_API_KEY"].display) == (
        "placeholder",
        "set (8 chars)",
    )
    assert (states["TWILIO_VOICE_CALLER_ID"].state, states["TWILIO_VOICE_CALLER_ID"].display) == (
        "invalid",
        "555",
    )
    assert (states["LOG_LEVEL"].state, states["LOG_LEVEL"].display) == ("set", "WARNING")
    assert (states["RETENTION_CALLS_DAYS"].state, states["RETENTION_CALLS_DAYS"].display) == (
        "default",
        "365",
    )
    assert states["RETENTION_CALLS_DAYS"].required is False
    assert states["SENDGRID_API_KEY"].required is True  # EMAIL_PROVIDER defaults to sendgrid
    assert states["SMTP_HOST"].required is False
    assert states["TWILIO_MESSAGING_SERVICE_SID"].group == "twilio"
    assert states["CSRF_TRUSTED_ORIGINS"].display == "https://comms.example.com (from PUBLIC_BASE_URL)"


def test_report_in_test_mode_shows_defaults_and_flags_placeholder_secrets_without_failing():
    states = {s.name: s for s in config.report({"TWILIO_AUTH_TOKEN": "changeme"}, "test")}
    assert states["SECRET_KEY"].state == "default"
    assert "test-mode" not in states["SECRET_KEY"].display  # a secret's default is not shown either
    assert states["TWILIO_AUTH_TOKEN"].state == "placeholder"
    assert not any(s.required for s in states.values())


def test_render_report_groups_and_summarises():
    text = config.render_report(production_env(SECRET_KEY=None), "production")
    for title in SCHEMA["x-groups"].values():
        assert title in text
    assert "SECRET_KEY is not set" in text
    assert text.splitlines()[-1].startswith("Summary: ")
    assert "would refuse to start (1 problem)" in text.splitlines()[-1]


def test_python_dash_m_entry_point(capsys):
    assert config.main(["--mode", "production", "--json"], production_env()) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["mode"] == "production"
    assert config.main(["--mode", "production"], production_env(REDIS_URL=None)) == 1
    out = capsys.readouterr().out
    assert "REDIS_URL" in out
    for secret in PRODUCTION_SECRETS.values():
        assert secret not in out


# --- manage.py config_report ----------------------------------------------------------


def _clear_schema_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROPS:
        monkeypatch.delenv(name, raising=False)


def _run_config_report(*args: str) -> tuple[int, str]:
    from django.core.management import call_command

    out = io.StringIO()
    try:
        call_command("config_report", *args, stdout=out)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    return code, out.getvalue()


def test_config_report_json_fails_for_incomplete_production_env(monkeypatch):
    _clear_schema_env(monkeypatch)
    for name, value in production_env(SECRET_KEY=None, TWILIO_VOICE_CALLER_ID=None).items():
        monkeypatch.setenv(name, value)
    code, out = _run_config_report("--json", "--mode", "production")
    assert code == 1
    data = json.loads(out)
    assert data["mode"] == "production"
    assert data["ok"] is False
    assert {p["variable"] for p in data["problems"]} == {"SECRET_KEY", "TWILIO_VOICE_CALLER_ID"}
    assert {v["name"] for v in data["variables"]} == set(PROPS)
    for secret in PRODUCTION_SECRETS.values():
        assert secret not in out


def test_config_report_json_passes_for_complete_production_env(monkeypatch):
    _clear_schema_env(monkeypatch)
    for name, value in production_env().items():
        monkeypatch.setenv(name, value)
    code, out = _run_config_report("--json", "--mode", "production")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["problems"] == []
    for secret in PRODUCTION_SECRETS.values():
        assert secret not in out


def test_config_report_table_defaults_to_the_running_mode(monkeypatch, settings):
    _clear_schema_env(monkeypatch)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", PRODUCTION_SECRETS["TWILIO_AUTH_TOKEN"])
    settings.COMMS_MODE = "test"
    code, out = _run_config_report()
    assert code == 0
    assert out.startswith("Configuration report, mode: test")
    assert "TWILIO_AUTH_TOKEN" in out and "set (32 chars)" in out
    assert PRODUCTION_SECRETS["TWILIO_AUTH_TOKEN"] not in out
    settings.COMMS_MODE = "production"
    code, out = _run_config_report()
    assert code == 1
    assert "would refuse to start" in out


# --- The real startup check -----------------------------------------------------------

# Loads the WSGI application as gunicorn does: the entry point runs the startup checks.
SETUP_SNIPPET = (
    "import os; os.environ['DJANGO_SETTINGS_MODULE']='comms_platform.settings'; "
    "os.environ['COMMS_MODE']='production'; import comms_platform.wsgi; print('STARTED')"
)


def _run_setup(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1", **extra_env}
    return subprocess.run(
        [sys.executable, "-c", SETUP_SNIPPET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_process_with_empty_environment_refuses_to_start():
    result = _run_setup({"TWILIO_AUTH_TOKEN": "Leaky-Token-Value-That-Is-Not-Hex"})
    assert result.returncode != 0
    assert "STARTED" not in result.stdout
    assert "Refusing to start in production mode:" in result.stderr
    assert "SECRET_KEY" in result.stderr
    assert "config_report --mode production" in result.stderr
    assert "Leaky-Token-Value-That-Is-Not-Hex" not in result.stderr


def test_production_process_with_complete_environment_gets_past_the_check():
    result = _run_setup(production_env(HOME=None, SOMETHING_ELSE=None))
    assert "Refusing to start" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert "STARTED" in result.stdout


def test_test_mode_refuses_to_start_on_render():
    import subprocess
    import sys

    env = {"PATH": os.environ.get("PATH", ""), "COMMS_MODE": "test", "RENDER": "true",
           "DJANGO_SETTINGS_MODULE": "comms_platform.settings"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", "import comms_platform.wsgi"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "set COMMS_MODE=production" in done.stderr
