"""Finding and loading a project: ``heph.yaml``, its workflow modules and its storage."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from pathlib import Path

from heph.errors import CliError, HephError

CONFIG_NAME = "heph.yaml"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONTEXT_BYTES = 2 * 1024 * 1024  # the same limit as heph.runtime.app.MAX_CONTEXT_BYTES
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_KNOWN_KEYS = {"workflows", "storage"}
_STORAGE_KEYS = {"json": {"type", "path", "lock_timeout"}, "postgres": {"type", "dsn", "schema", "lock_timeout"}}
DATABASE_URL_ENV = "HEPH_DATABASE_URL"


class Project:
    """A loaded ``heph.yaml``: a plain class, not a dataclass, which every invocation would pay
    ~0.4 ms to build."""

    __slots__ = ("config", "modules", "storage_path", "lock_timeout", "storage_type", "dsn", "schema")

    def __init__(self, config: Path, modules: list[str], storage_path: Path, lock_timeout: float = 30.0,
                 storage_type: str = "json", dsn: str | None = None, schema: str = "heph") -> None:
        self.config = config
        self.modules = modules
        self.storage_path = storage_path
        self.lock_timeout = lock_timeout
        self.storage_type = storage_type  # "json" or "postgres"
        self.dsn = dsn                    # postgres: from $HEPH_DATABASE_URL, else storage.dsn
        self.schema = schema              # postgres: the schema holding heph's tables

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Project({fields})"

    @property
    def root(self) -> Path:
        return self.config.parent


def find_config(explicit: str | None) -> Path:
    """``--config`` > ``$HEPH_CONFIG`` > the nearest ``heph.yaml`` in the working directory or a parent."""
    given = explicit or os.environ.get("HEPH_CONFIG")
    if given:
        path = Path(given)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            source = "--config" if explicit else "$HEPH_CONFIG"
            raise CliError(f"config file {path} (from {source}) does not exist: give the path of a heph.yaml")
        return path.resolve()
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise CliError(f"no {CONFIG_NAME} found in {here} or its parents: create one, or pass --config PATH")


def load_project(path: Path, use_env: bool = True) -> Project:
    """Parse and check ``heph.yaml``; ``CliError`` names the first problem.

    ``$HEPH_DATABASE_URL`` (unless ``use_env`` is false) selects PostgreSQL at that URL,
    whatever ``storage.type`` says."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CliError(f"{path} is larger than 1 MB; is it really a heph.yaml?")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    data = _safe_load(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CliError(f"{path} must be a mapping with 'workflows' and 'storage' keys")
    unknown = sorted(str(k) for k in data if k not in _KNOWN_KEYS)
    if unknown:
        raise CliError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: workflows, storage")
    modules = data.get("workflows", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) and _MODULE_RE.match(m) for m in modules):
        raise CliError(f"{path}: 'workflows' must be a list of module names such as shop.orders")
    storage = data.get("storage") or {}
    if not isinstance(storage, dict):
        raise CliError(f"{path}: 'storage' must be a mapping such as {{path: .heph}}")
    kind = storage.get("type", "json")
    if not isinstance(kind, str) or kind not in _STORAGE_KEYS:
        raise CliError(f"{path}: storage type {kind!r} is not supported; use json or postgres")
    allowed = _STORAGE_KEYS[kind]
    unknown = sorted(str(k) for k in storage if k not in allowed)
    if unknown:
        raise CliError(f"{path}: unknown storage key(s) {', '.join(unknown)} for type {kind}; "
                       f"allowed: {', '.join(sorted(allowed))}")
    store = storage.get("path", ".heph")
    if not isinstance(store, str) or not store or "\0" in store:
        raise CliError(f"{path}: storage.path must be a non-empty string")
    timeout = storage.get("lock_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= 3600:
        raise CliError(f"{path}: storage.lock_timeout must be a number of seconds between 0 and 3600")
    project = Project(config=path, modules=list(modules), storage_path=(path.parent / store),
                      lock_timeout=float(timeout))
    dsn = storage.get("dsn")
    if dsn is not None and (not isinstance(dsn, str) or not dsn.strip() or "\0" in dsn):
        raise CliError(f"{path}: storage.dsn must be a PostgreSQL URL such as postgresql://user@host:5432/dbname")
    schema = storage.get("schema", "heph")
    if not isinstance(schema, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", schema):
        raise CliError(f"{path}: storage.schema must be a lower-case PostgreSQL name "
                       f"([a-z_][a-z0-9_]*, at most 40 characters)")
    env_dsn = os.environ.get(DATABASE_URL_ENV) if use_env else None
    if env_dsn:
        project.storage_type, project.dsn, project.schema = "postgres", env_dsn, schema
    elif kind == "postgres":
        if dsn is None:
            raise CliError(f"{path}: storage type postgres needs storage.dsn (or set ${DATABASE_URL_ENV})")
        project.storage_type, project.dsn, project.schema = "postgres", dsn, schema
    return project


def _safe_load(path: Path, text: str) -> object:
    """``text`` read as ``yaml.safe_load`` reads it, with libyaml's ``CSafeLoader`` when PyYAML has
    it. A text that does not parse is read again by the pure-Python loader, so that the error
    names PyYAML's own problem and position; ``CliError`` says where."""
    import yaml

    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            loader = fast(text)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
        except yaml.YAMLError:
            pass  # the message below is the pure-Python loader's, as without libyaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CliError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def import_workflows(project: Project, collect: bool = False) -> list[dict]:
    """Import the project's workflow modules (the project directory goes on ``sys.path``).

    With ``collect`` every failure is returned (``{"module", "file", "line", "message"}``) and
    broken workflow classes are reported rather than raised; otherwise the first failure
    raises ``CliError``.
    """
    from heph.core.workflow import collect_errors
    from heph.errors import WorkflowDefinitionError

    root = str(project.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    problems: list[dict] = []
    for module in project.modules:
        with collect_errors() as definition_errors:
            try:
                importlib.import_module(module)
            except WorkflowDefinitionError as exc:
                definition_errors.append(exc)
            except ModuleNotFoundError as exc:
                missing = exc.name or module
                if module == missing or module.startswith(missing + "."):
                    problems.append({"module": module, "file": str(project.config),
                                     "line": _config_line(project, module),
                                     "message": f"module {module} cannot be imported: no module named {missing!r} "
                                                f"(check heph.yaml's workflows and the project directory)"})
                else:  # the listed module exists but imports something missing: point at that import
                    problems.append(_raised(module, exc))
            except SyntaxError as exc:
                problems.append({"module": module, "file": exc.filename or "?", "line": exc.lineno or 0,
                                 "message": f"module {module} has a syntax error: {exc.msg}"})
            except (Exception, SystemExit) as exc:  # the user's module raised (or called sys.exit) while importing
                problems.append(_raised(module, exc))
        for error in definition_errors:
            for problem in error.problems:
                file, line, message = _split_location(problem)
                problems.append({"module": module, "file": file, "line": line, "message": message,
                                 "workflow": error.workflow})
    if problems and not collect:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems: run `heph check`)" if len(problems) > 1 else ""
        raise CliError(f"{first['file']}:{first['line']}: {first['message']}{more}")
    return problems


def _raised(module: str, exc: BaseException) -> dict:
    """A module that raised on import, located at the frame that raised."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return {"module": module, "file": frame.filename, "line": frame.lineno or 0,
            "message": f"module {module} raised {type(exc).__name__} on import: {exc}"}


def _config_line(project: Project, module: str) -> int:
    """The line of heph.yaml that lists ``module`` (0 if it cannot be found)."""
    try:
        lines = project.config.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    entry = re.compile(r"\s*-\s*['\"]?" + re.escape(module) + r"['\"]?\s*(#.*)?\Z")
    return next((number for number, line in enumerate(lines, 1) if entry.match(line)), 0)


def _split_location(problem: str) -> tuple[str, int, str]:
    match = re.match(r"(.*?):(\d+): (.*)\Z", problem, re.S)
    if not match:
        return "?", 0, problem
    return match.group(1), int(match.group(2)), match.group(3)


def read_context(file: str | None, inline: str | None, *, what: str = "context",
                 options: tuple[str, str] = ("--context", "--context-json"),
                 error: type[HephError] = CliError) -> dict | None:
    """A JSON object from ``--context FILE|-`` or ``--context-json`` (the two ``options``; for
    event data, ``--data-file`` and ``--data``), or None if neither is given; ``error`` (one
    line) if it is unusable."""
    if file is not None and inline is not None:
        raise CliError(f"give either {options[0]} or {options[1]}, not both")
    if inline is not None:
        return parse_context(inline.encode("utf-8", "surrogatepass"), options[1], what, error)
    if file is None:
        return None
    if file == "-":
        data = sys.stdin.buffer.read(MAX_CONTEXT_BYTES + 1)
        source = "standard input"
    else:
        try:
            with open(file, "rb") as fh:
                data = fh.read(MAX_CONTEXT_BYTES + 1)
        except OSError as exc:
            raise error(f"cannot read {what} file {file}: {exc.strerror}") from None
        source = file
    return parse_context(data, source, what, error)


def parse_context(data: bytes, source: str, what: str = "context", error: type[HephError] = CliError) -> dict:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, an object at the top."""
    if len(data) > MAX_CONTEXT_BYTES:
        raise error(f"the {what} in {source} is larger than {MAX_CONTEXT_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"the {what} in {source} is not valid UTF-8 (byte {exc.start})") from None

    def no_constants(name: str):
        raise ValueError(f"{name} is not valid JSON")

    def no_duplicates(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen[key] = value
        return seen

    try:
        value = json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise error(f"the {what} in {source} is not valid JSON: {exc.msg} "
                    f"at line {exc.lineno}, column {exc.colno}") from None
    except ValueError as exc:
        raise error(f"the {what} in {source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise error(f"the {what} in {source} is nested too deeply") from None
    if not isinstance(value, dict):
        raise error(f"the {what} in {source} must be a JSON object ({{...}}), got a JSON {type(value).__name__}")
    return value


def open_storage(project: Project):
    """The project's store: ``JsonFileStorage`` (the default) or ``PostgresStorage``."""
    if project.storage_type == "postgres":
        from heph.runtime.storage.postgres import PostgresStorage

        if not project.dsn:
            raise CliError(f"{project.config}: storage type postgres needs storage.dsn (or set ${DATABASE_URL_ENV})")
        return PostgresStorage(project.dsn, schema=project.schema, lock_timeout=project.lock_timeout)
    from heph.runtime.storage.jsonfile import JsonFileStorage

    return JsonFileStorage(project.storage_path, lock_timeout=project.lock_timeout)
