"""``Workflow`` and ``VersionedWorkflow``: validated when the class is defined, registered by name."""

from __future__ import annotations

import builtins
import dataclasses
import sys
from typing import Any, ClassVar

from heph.core import validation
from heph.core.current import FacadeApp, current_app
from heph.core.definition import Unique, WorkflowDefinition
from heph.core.ids import build_id, check_id, parse_id
from heph.errors import InvalidId, InvalidVersion, WorkflowDefinitionError

_REGISTRY: dict[str, type[Facade]] = {}
_collected: list[WorkflowDefinitionError] | None = None


class collect_errors:
    """Within this block a broken workflow class records its ``WorkflowDefinitionError`` in
    ``errors`` instead of raising, so ``heph check`` can report every class of a module."""

    def __enter__(self) -> builtins.list[WorkflowDefinitionError]:
        global _collected
        self._previous, _collected = _collected, []
        return _collected

    def __exit__(self, *exc: object) -> None:
        global _collected
        _collected = self._previous


def _fail(cls: type, problems: builtins.list[str]) -> None:
    error = WorkflowDefinitionError(cls.__qualname__, problems, cls.__heph_file__, cls.__heph_line__)  # type: ignore[attr-defined]
    if _collected is None:
        raise error
    _collected.append(error)


def registry() -> dict[str, type[Facade]]:
    """Every registered workflow (plain or umbrella) by name."""
    return dict(_REGISTRY)


def lookup(name: str) -> type[Facade] | None:
    """The registered workflow called ``name``, or None."""
    return _REGISTRY.get(name)


def _register(cls: type[Facade], name: str, problems: list[str]) -> None:
    other = _REGISTRY.get(name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        problems.extend(validation.located([
            f"workflow name {name!r} is already used by {other.__module__}.{other.__qualname__} "
            f"({other.__heph_file__}:{other.__heph_line__}): set a different name = \"...\""
        ], cls.__heph_file__, cls.__heph_line__, cls.__qualname__))
        return
    _REGISTRY[name] = cls


def _schedules_of(cls: type) -> tuple[tuple, list[str]]:
    """The class's checked schedules and their problems (``heph.core.schedules`` is imported only
    by a class that has some: a dataclass and a regex fewer for every CLI start without)."""
    raw = getattr(cls, "schedules", None)
    if raw is None or (isinstance(raw, (list, tuple)) and not raw):
        return (), []
    from heph.core.schedules import check_schedules

    return check_schedules(raw)


def _definition_site() -> tuple[str, int]:
    """File and line of the ``class`` statement being executed (two frames up from the metaclass)."""
    try:
        frame = sys._getframe(2)
        return frame.f_code.co_filename, frame.f_lineno
    except ValueError:  # pragma: no cover - no caller frame
        return "?", 0


class WorkflowMeta(type):
    """Moves the ``start`` step aside (``start`` is also the facade), then validates the class."""

    def __new__(mcls, cls_name: str, bases: tuple, namespace: dict, **kwargs: Any):
        if "start" in namespace and not isinstance(namespace["start"], (classmethod, staticmethod)):
            namespace["__heph_start__"] = namespace.pop("start")
        file, line = _definition_site()
        cls: Any = super().__new__(mcls, cls_name, bases, namespace, **kwargs)
        cls.__heph_file__, cls.__heph_line__ = file, line
        if namespace.get("__heph_base__"):
            return cls
        cls.__heph_compile__()
        return cls


class Facade:
    """What workflows and umbrellas share: the facade API (calls go to the app set with
    ``heph.use``) and the compiled facts the runtime reads (``__heph_*__``, set when the
    class is validated)."""

    __heph_base__ = True
    __heph_file__: ClassVar[str]
    __heph_line__: ClassVar[int]
    __heph_workflow_name__: ClassVar[str]
    __heph_unique__: ClassVar[Unique]
    __heph_versions__: ClassVar[dict[int, WorkflowDefinition]]
    __heph_current__: ClassVar[int]
    unique: ClassVar[Unique | str | None] = None
    name: ClassVar[str]
    tags: ClassVar[list[str]] = []
    metadata: ClassVar[dict] = {}
    schedules: ClassVar[list] = []  # heph.Schedule(...) entries: started by tick/worker (SPEC §10)
    __heph_schedules__: ClassVar[tuple] = ()

    @classmethod
    def _app(cls) -> FacadeApp:
        return current_app()

    @classmethod
    def start(cls, value: str, context: dict | None = None, *, version: int | None = None, **options: Any) -> str:
        """Start an instance for business ``value``; return its id.

        Keyword ``options`` (``OrderFlow.start("o1", ctx, legacy=True)``) go to ``version_for``.
        """
        if "options" in options:
            given = options["options"]
            spelled = (", ".join(f"{k}={v!r}" for k, v in given.items())
                       if isinstance(given, dict) and given and all(isinstance(k, str) and k.isidentifier()
                                                                    for k in given)
                       else "legacy=True")
            raise TypeError(
                f"{cls.__name__}.start() takes the start options as keyword arguments: "
                f"write {cls.__name__}.start(value, context, {spelled}), not options={given!r} "
                f"(options= is the spelling of app.start_instance)"
            )
        return cls._app().start(cls, value, context, version=version, **options)

    @classmethod
    def resume(cls, value: str, event: str, data: dict | None = None, *, step: str | None = None,
               buffer: bool = False):
        """Hand ``event`` (and ``data``, the resumed step's context entry) to the waiting instance
        for ``value``; with ``buffer``, keep it in the inbox if no step waits for it yet; returns
        the updated instance."""
        return cls._app().resume(cls.instance_id(value), event, data, step=step, buffer=buffer, workflow=cls)

    @classmethod
    def get(cls, value: str):
        """The instance for ``value`` (the active one, else the newest run)."""
        return cls._app().get(cls.instance_id(value), workflow=cls)

    @classmethod
    def list(cls, **filters: Any) -> builtins.list:
        """Instances of this workflow matching ``filters`` (status, status_in, id, version)."""
        return cls._app().list(workflow=cls, **filters)

    @classmethod
    def cancel(cls, value: str):
        """Cancel the active instance for ``value``; returns it."""
        return cls._app().cancel(cls.instance_id(value), workflow=cls)

    @classmethod
    def retry(cls, value: str):
        """Re-run the failed instance for ``value`` from its failed step; returns it."""
        return cls._app().retry(cls.instance_id(value), workflow=cls)

    @classmethod
    def instance_id(cls, value: str) -> str:
        """``key::value`` for this workflow; with scope ``none`` pass the full id instead."""
        unique = cls.__heph_unique__
        if unique.scope == "none" and isinstance(value, str) and "::" not in value:
            raise InvalidId(
                f"workflow {cls.__heph_workflow_name__} uses scope 'none': its ids carry a random suffix; "
                f"pass the full id {unique.key}::{value}::<suffix> (the value start() returned, or see "
                f"{cls.__name__}.list())",
                given=value,
            )
        if unique.scope == "none" or "::" in str(value):
            key = parse_id(value)[0]
            if key != unique.key:
                raise InvalidId(f"id {value!r} does not use the business key {unique.key!r} of this workflow",
                                given=value)
            return check_id(value)
        return build_id(unique.key, value)

    # -- what the engine and tools use --------------------------------------------------

    @classmethod
    def definition(cls, version: int | None = None) -> WorkflowDefinition:
        """The definition of ``version`` (default: the current one); ``InvalidVersion`` if unknown."""
        versions = cls.__heph_versions__
        if version is None:
            version = cls.__heph_current__
        if version not in versions:
            raise InvalidVersion(
                f"workflow {cls.__heph_workflow_name__} has no version {version!r}; "
                f"known versions: {', '.join(map(str, sorted(versions)))}",
                workflow=cls.__heph_workflow_name__, version=version, known=sorted(versions),
            )
        return versions[version]

    @classmethod
    def resolve_version(cls, explicit: int | None = None, options: dict | None = None) -> int:
        """Version for a new instance: explicit > ``version_for`` > ``current``."""
        if explicit is not None:
            cls.definition(explicit)
            return explicit
        return cls.__heph_current__


class Workflow(Facade, metaclass=WorkflowMeta):
    """A workflow: ``unique``, ``start`` and ``transitions`` (plus optional name, version, tags, metadata).

    The class is validated when it is defined; any problem raises ``WorkflowDefinitionError``.
    A class that sets ``version`` but no ``unique`` is a version of a ``VersionedWorkflow``.
    """

    __heph_base__ = True
    version: ClassVar[int] = 1
    transitions: ClassVar[dict] = {}
    __heph_definition__: ClassVar[WorkflowDefinition]

    @classmethod
    def __heph_compile__(cls) -> None:
        name = cls.__dict__.get("name") or cls.__name__.lower()
        cls.name = name  # the default reads as the class attribute too (SPEC §2)
        is_version_module = "version" in cls.__dict__ and getattr(cls, "unique", None) is None
        definition, problems = validation.compile_workflow(cls, name=name, unique_required=not is_version_module)
        cls.__heph_schedules__, found = _schedules_of(cls)
        if is_version_module and cls.__heph_schedules__:
            found.append("schedules belong on the VersionedWorkflow that lists this version, not on the version")
        problems = validation.located(problems + found, cls.__heph_file__, cls.__heph_line__, cls.__qualname__)
        if definition is not None:
            definition = dataclasses.replace(definition, file=cls.__heph_file__, line=cls.__heph_line__, cls=cls)
            cls.__heph_definition__ = definition
            cls.__heph_workflow_name__ = definition.name
            cls.__heph_unique__ = definition.unique  # type: ignore[assignment]  # None for a version module
            cls.__heph_versions__ = {definition.version: definition}
            cls.__heph_current__ = definition.version
            if definition.unique is not None:
                _register(cls, definition.name, problems)
        if problems:
            _fail(cls, problems)


class VersionedWorkflow(Facade, metaclass=WorkflowMeta):
    """An umbrella over several versions of one workflow: ``versions``, ``current``, ``version_for``."""

    __heph_base__ = True
    versions: ClassVar[dict[int, type]] = {}
    current: ClassVar[int | None] = None

    @classmethod
    def version_for(cls, versions: builtins.list[int], options: dict) -> int | None:
        """Override to pick a version from the start options; None means ``current``."""
        return None

    @classmethod
    def resolve_version(cls, explicit: int | None = None, options: dict | None = None) -> int:
        if explicit is not None:
            cls.definition(explicit)
            return explicit
        chosen = cls.version_for(sorted(cls.__heph_versions__), dict(options or {}))
        if chosen is not None:
            cls.definition(chosen)
            return chosen
        return cls.__heph_current__

    @classmethod
    def __heph_compile__(cls) -> None:
        name = cls.__dict__.get("name") or cls.__name__.lower()
        cls.name = name  # the default reads as the class attribute too (SPEC §2)
        definitions, unique, problems = validation.compile_versioned(cls, name=name)
        cls.__heph_schedules__, found = _schedules_of(cls)
        problems = validation.located(problems + found, cls.__heph_file__, cls.__heph_line__, cls.__qualname__)
        if not problems and unique is not None:
            cls.__heph_workflow_name__ = name
            cls.__heph_unique__ = unique
            cls.__heph_versions__ = {
                number: dataclasses.replace(d, name=name, unique=unique) for number, d in definitions.items()
            }
            current = cls.current if cls.current is not None else next(iter(definitions))
            cls.__heph_current__ = current
            _register(cls, name, problems)
        if problems:
            _fail(cls, problems)
