"""Schema-driven configuration checks.

``config.schema.json`` (next to this module) describes every environment variable the
platform reads: its format, whether it is secret, its group and the modes that cannot
run without it. This module turns that schema into

* ``startup_problems(environ, mode)`` — what stops the process in that mode (settings.py
  calls it in production before anything else runs);
* ``format_startup_problems(problems)`` — the message printed when it refuses to start;
* ``report(environ, mode)`` — one ``VariableState`` per variable for ``manage.py config_report``.

It imports only the standard library and ``jsonschema`` (lazily), because settings.py
imports it before Django is set up. Secret values are never put in a message or a
report: only their length is shown (``mask``).

``python -m comms_platform.config --mode production`` prints the same report as
``manage.py config_report`` without loading Django settings, for a shell where the
production process refuses to start.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("config.schema.json")

KINDS = ("missing", "placeholder", "invalid")
STATES = ("set", "default", "missing", "placeholder", "invalid")

_PLACEHOLDER_WORDS = frozenset({"changeme", "change-me", "change_me"})
_PLACEHOLDER_PREFIXES = ("xxx", "your-", "your_")


@dataclass(frozen=True)
class Problem:
    """Something that stops the process: ``variable`` is the name (or ``A or B`` for alternatives)."""

    variable: str
    kind: str  # 'missing' | 'placeholder' | 'invalid'
    message: str

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self.variable.split(" or "))


@dataclass(frozen=True)
class VariableState:
    """One variable as ``config_report`` shows it; ``display`` never holds a secret's characters."""

    name: str
    group: str
    state: str  # 'set' | 'default' | 'missing' | 'placeholder' | 'invalid'
    display: str
    required: bool
    description: str
    secret: bool


# --- The schema -----------------------------------------------------------------------


@functools.cache
def load_schema() -> dict[str, Any]:
    """The parsed ``config.schema.json`` (read once)."""
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        return json.load(f)


def properties() -> dict[str, dict[str, Any]]:
    return load_schema()["properties"]


def groups() -> dict[str, str]:
    """Group key -> title, in display order."""
    schema = load_schema()
    titles = dict(schema.get("x-groups", {}))
    for prop in schema["properties"].values():
        titles.setdefault(prop["x-group"], prop["x-group"])
    return titles


def modes() -> tuple[str, ...]:
    """The values COMMS_MODE may take."""
    return tuple(properties()["COMMS_MODE"]["enum"])


def _check_mode(mode: str) -> None:
    if mode not in modes():
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(modes())}")


def required_in(mode: str) -> list[str]:
    """Variables the mode cannot run without, whatever else is set (``x-required-in``)."""
    _check_mode(mode)
    return [name for name, prop in properties().items() if mode in prop.get("x-required-in", ())]


@functools.cache
def mode_schema(mode: str) -> dict[str, Any]:
    """The JSON Schema an environment must satisfy in ``mode``.

    The file's properties, the mode's required list, the file's top-level ``allOf``
    (conditions for every mode) and the mode's ``x-modes`` part.
    """
    _check_mode(mode)
    schema = load_schema()
    result: dict[str, Any] = {
        "$schema": schema["$schema"],
        "type": "object",
        "properties": schema["properties"],
        "required": required_in(mode),
    }
    all_of = list(schema.get("allOf", []))
    if mode_part := schema.get("x-modes", {}).get(mode):
        all_of.append(mode_part)
    if all_of:
        result["allOf"] = all_of
    return result


@functools.cache
def _validator(mode: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(mode_schema(mode))


def _is_valid(subschema: Mapping[str, Any], instance: Mapping[str, str]) -> bool:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(subschema).is_valid(instance)


def _rejects_placeholder_secrets(mode: str) -> bool:
    return bool(load_schema().get("x-modes", {}).get(mode, {}).get("x-reject-placeholder-secrets", False))


# --- Values ---------------------------------------------------------------------------


def is_placeholder(value: str) -> bool:
    """True for values nobody means to deploy: empty, ``changeme``, ``xxx…``, ``your-…``, ``<…>``, ``…placeholder…``."""
    text = value.strip().lower()
    return (
        not text
        or text in _PLACEHOLDER_WORDS
        or text.startswith(_PLACEHOLDER_PREFIXES)
        or (text.startswith("<") and text.endswith(">"))
        or "placeholder" in text
    )


def mask(value: str) -> str:
    """How a set secret is shown: its length only, never a character of it."""
    return f"set ({len(value)} chars)"


def _required_names(fragment: Mapping[str, Any], instance: Mapping[str, str]) -> set[str]:
    """Variables ``fragment`` requires given the rest of ``instance`` (static and conditional)."""
    names = set(fragment.get("required", ()))
    for sub in fragment.get("allOf", ()):
        names |= _required_names(sub, instance)
    if "if" in fragment:
        branch = "then" if _is_valid(fragment["if"], instance) else "else"
        if branch in fragment:
            names |= _required_names(fragment[branch], instance)
    for key in ("anyOf", "oneOf"):
        if key in fragment:
            alternatives = fragment[key]
            satisfied = [alt for alt in alternatives if _is_valid(alt, instance)]
            for alt in satisfied[:1] or alternatives:
                names |= _required_names(alt, instance)
    return names


def _context(schema: Mapping[str, Any], schema_path: Sequence[Any]) -> str:
    """The innermost ``description`` of the mode-level condition an error came from."""
    found = ""
    node: Any = schema
    for step in schema_path:
        if step == "properties":
            break
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, Mapping) and isinstance(node.get("description"), str):
            found = node["description"]
    return found


# --- Messages -------------------------------------------------------------------------


def _should_hold(name: str) -> str:
    return f"it should hold: {properties()[name]['description']}"


def _missing_message(name: str, because: str = "") -> str:
    reason = f" ({because.rstrip('.')})" if because else ""
    return f"{name} is not set{reason}; {_should_hold(name)}"


def _alternatives_message(names: Sequence[str], because: str = "") -> str:
    reason = f" ({because.rstrip('.')})" if because else ""
    details = "; ".join(
        f"{name} should hold: {properties()[name]['description'].rstrip('.')}" for name in names
    )
    return f"{' or '.join(names)} must be set{reason}; {details}"


def _placeholder_message(name: str, required: bool) -> str:
    action = "set the real value" if required else "set the real value, or unset it if it is not used"
    return f"{name} holds a placeholder value; {action}; {_should_hold(name)}"


def _invalid_message(name: str, value: str, validator: str, subschema: Mapping[str, Any]) -> str:
    prop = properties()[name]
    if isinstance(subschema.get("x-message"), str):
        reason = subschema["x-message"]
    elif validator == "enum":
        reason = "must be one of " + ", ".join(repr(v) for v in subschema["enum"])
    elif validator == "pattern":
        reason = "does not have the expected format"
    else:
        reason = "is not valid"
    shown = "" if prop.get("x-secret") else f" (got {value!r})"
    return f"{name} {reason}{shown}; {_should_hold(name)}"


# --- Checks ---------------------------------------------------------------------------


def _analyse(environ: Mapping[str, str], mode: str) -> tuple[list[Problem], set[str]]:
    """The mode's problems, and the variables it requires given ``environ``."""
    schema = mode_schema(mode)
    props = schema["properties"]
    order = {name: index for index, name in enumerate(props)}
    reject_secrets = _rejects_placeholder_secrets(mode)

    present = {name: str(environ[name]) for name in props if name in environ}
    placeholders = {name for name, value in present.items() if is_placeholder(value)}
    # Placeholders count as unset for what is required; their own checks come below.
    clean = {name: value for name, value in present.items() if name not in placeholders}
    required = _required_names(schema, clean)

    found: dict[tuple[str, str], Problem] = {}

    def add(problem: Problem) -> None:
        found.setdefault((problem.variable, problem.kind), problem)

    for name in sorted(placeholders, key=order.__getitem__):
        prop, value = props[name], present[name]
        if name in required or (prop.get("x-secret") and reject_secrets):
            add(Problem(name, "placeholder", _placeholder_message(name, name in required)))
        elif prop.get("x-secret") or (not value.strip() and prop.get("default") == ""):
            continue  # a placeholder secret where the mode allows one, or empty meaning "unset"
        else:
            for error in _property_errors(name, value):
                add(Problem(name, "invalid", _invalid_message(name, value, error.validator, error.schema)))
                break

    for error in _validator(mode).iter_errors(clean):
        because = _context(schema, list(error.schema_path))
        if error.path:
            name = str(error.path[0])
            add(Problem(name, "invalid", _invalid_message(name, clean[name], error.validator, error.schema)))
        elif error.validator == "required":
            for name in error.validator_value:
                if name not in clean and name not in placeholders:
                    add(Problem(name, "missing", _missing_message(name, because)))
        elif error.validator in ("anyOf", "oneOf"):
            names: list[str] = []
            for alternative in error.validator_value:
                names += [n for n in sorted(_required_names(alternative, {})) if n not in names]
            if any(name in placeholders for name in names):
                continue  # reported above as placeholders
            add(Problem(" or ".join(names), "missing", _alternatives_message(names, because)))
        else:  # a top-level condition that is not about one variable
            add(Problem("(environment)", "invalid", because or "the environment does not satisfy the schema"))

    problems = sorted(
        found.values(),
        key=lambda p: (KINDS.index(p.kind), order.get(p.variables[0], len(order)), p.variable),
    )
    return problems, required


def _property_errors(name: str, value: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(properties()[name]).iter_errors(value)


def startup_problems(environ: Mapping[str, str], mode: str) -> list[Problem]:
    """What stops the process in ``mode``: missing required variables (including the
    mode's alternatives and conditions), values that fail their format, and placeholder
    values (for secrets that are set, where the mode rejects them, and for required
    variables). Variables not in the schema are ignored."""
    return _analyse(environ, mode)[0]


def format_startup_problems(problems: Iterable[Problem], mode: str = "production") -> str:
    """The message a refusing process prints: one line per problem, no secret values."""
    lines = [f"Refusing to start in {mode} mode:"]
    lines += [f"  - {problem.message}" for problem in problems]
    lines.append(
        f"Run `python manage.py config_report --mode {mode}` to see every variable's state "
        f"(from a shell where this process cannot start: `COMMS_MODE=test python manage.py "
        f"config_report --mode {mode}` or `python -m comms_platform.config --mode {mode}`)."
    )
    return "\n".join(lines)


def _default_display(name: str, prop: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    if source := prop.get("x-default-from"):
        other = properties()[source]
        value = environ.get(source) or other.get("default", "")
        shown = mask(value) if other.get("x-secret") else value
        return f"{shown} (from {source})"
    default = prop.get("default", "")
    if default == "":
        return "(empty)"
    return "(built-in default)" if prop.get("x-secret") else default


def report(environ: Mapping[str, str], mode: str) -> list[VariableState]:
    """Every schema variable's state in ``mode``, secrets masked, in schema order."""
    problems, required = _analyse(environ, mode)
    kinds: dict[str, set[str]] = {}
    for problem in problems:
        for name in problem.variables:
            kinds.setdefault(name, set()).add(problem.kind)

    states = []
    for name, prop in properties().items():
        secret = bool(prop.get("x-secret"))
        has_default = "default" in prop or "x-default-from" in prop
        value = environ.get(name)
        problem_kinds = kinds.get(name, set())
        if value is None:
            state = "default" if has_default and "missing" not in problem_kinds else "missing"
        elif "placeholder" in problem_kinds:
            state = "placeholder"
        elif "invalid" in problem_kinds:
            state = "invalid"
        elif is_placeholder(value):
            empty_is_default = not value.strip() and prop.get("default") == ""
            state = "default" if empty_is_default and name not in required else "placeholder"
        else:
            state = "set"

        if state == "default":
            display = _default_display(name, prop, environ)
        elif value is None:
            display = ""
        else:
            display = mask(value) if secret else value
        states.append(
            VariableState(
                name=name,
                group=prop["x-group"],
                state=state,
                display=display,
                required=name in required,
                description=prop["description"],
                secret=secret,
            )
        )
    return states


# --- Rendering (shared by manage.py config_report and ``python -m``) -------------------


def report_data(environ: Mapping[str, str], mode: str) -> dict[str, Any]:
    """The ``config_report --json`` object."""
    problems = startup_problems(environ, mode)
    return {
        "mode": mode,
        "ok": not problems,
        "variables": [asdict(state) for state in report(environ, mode)],
        "problems": [asdict(problem) for problem in problems],
    }


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_report(environ: Mapping[str, str], mode: str) -> str:
    """The ``config_report`` table: grouped by x-group, then the problems and a summary line."""
    states = report(environ, mode)
    problems = startup_problems(environ, mode)
    name_width = max(len(s.name) for s in states)
    state_width = max(len(s) for s in STATES)
    value_width = 56
    lines = [f"Configuration report, mode: {mode}"]
    for group, title in groups().items():
        members = [s for s in states if s.group == group]
        if not members:
            continue
        lines += ["", f"[{group}] {title}"]
        lines.append(
            f"  {'NAME':<{name_width}}  {'STATE':<{state_width}}  {'VALUE':<{value_width}}  REQUIRED"
        )
        for s in members:
            value = _clip(s.display, value_width)
            required = "yes" if s.required else "no"
            lines.append(
                f"  {s.name:<{name_width}}  {s.state:<{state_width}}  {value:<{value_width}}  {required}"
            )
    if problems:
        lines += ["", "Problems:"]
        lines += [f"  - {problem.message}" for problem in problems]
    counts = {state: f"{sum(1 for s in states if s.state == state)} {state}" for state in STATES}
    if missing_required := sum(1 for s in states if s.state == "missing" and s.required):
        counts["missing"] += f" ({missing_required} required)"
    summary = ", ".join(counts.values())
    verdict = (
        f"{mode} would refuse to start ({len(problems)} problem{'s' if len(problems) != 1 else ''})"
        if problems
        else f"OK: {mode} can start"
    )
    lines += ["", f"Summary: {len(states)} variables: {summary}. {verdict}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m comms_platform.config [--json] [--mode MODE]``; 1 when the mode would refuse to start."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m comms_platform.config", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mode", choices=modes(), default=None, help="default: COMMS_MODE, else test")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    args = parser.parse_args(argv)
    mode = args.mode or environ.get("COMMS_MODE") or "test"
    if mode not in modes():
        parser.error(f"COMMS_MODE={mode!r} is not one of {', '.join(modes())}")
    data = report_data(environ, mode)
    print(json.dumps(data, indent=2) if args.json else render_report(environ, mode))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
