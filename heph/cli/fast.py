"""The ``heph`` console script: common invocations parsed without importing Typer.

Typer (with its vendored click) costs about as much start-up time as everything a
``heph show`` does. The commands that scripts call in loops (``start``, ``resume``,
``show``, ``list``, ``cancel``, ``retry``, ``tick``) are parsed here when their
arguments are plain: known options as ``--name value`` or ``--name=value``, the right
number of positionals. Anything else (``--help``, an unknown or repeated option, a
missing value, a bad number, ``--``) goes to the Typer app, which gives the same
result or the usage error. ``tests/test_cli_fast.py`` checks that both parsers
declare the same options and agree on what they parse.
"""

from __future__ import annotations

import sys
from typing import NamedTuple, Optional

FLAG, TEXT, INT, MANY = "flag", "text", "int", "many"


class Spec(NamedTuple):
    """How a command is called: its positionals (``None`` max: any number) and its options."""

    positionals: tuple[str, ...]
    min_positionals: int
    max_positionals: Optional[int]
    options: dict[str, tuple[str, str]]  # option -> (parameter, kind)
    minimum: dict[str, int] = {}         # parameter -> smallest accepted int


_JSON = {"--json": ("json_out", FLAG)}
_ID = {"--id": ("full_id", TEXT)}

SPECS: dict[str, Spec] = {
    "start": Spec(("workflow", "value"), 1, 2, {
        "--context": ("context", TEXT), "--context-json": ("context_json", TEXT), "--version": ("version", INT),
        "--option": ("option", MANY), "-o": ("option", MANY), **_ID, **_JSON}),
    "resume": Spec(("args",), 1, None, {"--step": ("step", TEXT), **_ID, **_JSON}),
    "show": Spec(("workflow", "value"), 0, 2, {"--run": ("run", TEXT), **_ID, **_JSON}),
    "list": Spec((), 0, 0, {
        "--workflow": ("workflow", TEXT), "-w": ("workflow", TEXT), "--status": ("status", MANY),
        "-s": ("status", MANY), "--version": ("version", INT), "--limit": ("limit", INT), **_ID, **_JSON},
        {"limit": 1}),
    "cancel": Spec(("workflow", "value"), 0, 2, {**_ID, **_JSON}),
    "retry": Spec(("workflow", "value"), 0, 2, {**_ID, **_JSON}),
    "tick": Spec((), 0, 0, dict(_JSON)),
}
FUNCTIONS = {"list": "list_"}  # command name -> function in heph.cli.commands, where they differ


class Call(NamedTuple):
    config: Optional[str]
    debug: bool
    command: str
    kwargs: dict


def parse(argv: list[str]) -> Optional[Call]:
    """The call ``argv`` asks for, or ``None`` if Typer should parse it."""
    config, debug, rest = None, False, list(argv)
    while rest and rest[0].startswith("-"):
        token = rest.pop(0)
        if token == "--debug" and not debug:
            debug = True
        elif token == "--config" and config is None and rest and _is_value(rest[0]):
            config = rest.pop(0)
        elif token.startswith("--config=") and config is None:
            config = token[len("--config="):]
        else:
            return None
    if not rest or rest[0] not in SPECS:
        return None
    name, tokens = rest[0], rest[1:]
    kwargs = _parse_command(SPECS[name], tokens)
    return None if kwargs is None else Call(config, debug, name, kwargs)


def _is_value(token: str) -> bool:
    return not token.startswith("-") or token == "-"


def _parse_command(spec: Spec, tokens: list[str]) -> Optional[dict]:
    kwargs: dict = {}
    positionals: list[str] = []
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("-"):
            positionals.append(token)
            continue
        option, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if option not in spec.options:
            return None  # --help, --, -, unknown options, -oVALUE, -o=VALUE: Typer's call
        param, kind = spec.options[option]
        if kind == FLAG:
            if eq or param in kwargs:
                return None
            kwargs[param] = True
            continue
        if eq:
            value = inline
        elif tokens and _is_value(tokens[0]):
            value = tokens.pop(0)
        else:
            return None
        if kind == MANY:
            kwargs.setdefault(param, []).append(value)
            continue
        if param in kwargs:
            return None
        if kind == INT:
            try:
                number = int(value)
            except ValueError:
                return None
            if number < spec.minimum.get(param, number):
                return None
            kwargs[param] = number
        else:
            kwargs[param] = value
    if len(positionals) < spec.min_positionals:
        return None
    if spec.max_positionals is None:
        kwargs[spec.positionals[0]] = positionals
    elif len(positionals) > spec.max_positionals:
        return None
    else:
        kwargs.update(zip(spec.positionals, positionals))
    return kwargs


def run() -> None:
    """Console-script entry point (``heph``): run the invocation, via Typer when it is not plain."""
    call = parse(sys.argv[1:])
    if call is None:
        from heph.cli.main import cli

        cli()
        return
    from heph.cli import commands

    commands.configure(call.config, call.debug)
    getattr(commands, FUNCTIONS.get(call.command, call.command))(**call.kwargs)  # refusals exit non-zero
    raise SystemExit(0)
