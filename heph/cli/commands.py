"""The CLI's commands, free of any argument parser: ``heph.cli.main`` (the Typer app) calls these.

Every refused command prints one line on stderr (``--json``: ``{"error": {...}}`` on stdout
too) and exits 1 (``SystemExit``); usage errors exit 2; ``--debug`` shows tracebacks. What a
command does not use it does not import: the runtime, the storage adapters and rich are
imported inside the commands that need them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator, List, NoReturn, Optional

from heph.cli.project import Project, find_config, import_workflows, load_project, read_context
from heph.cli.text import error_line, printable, when
from heph.errors import (
    CliError,
    HephError,
    InvalidContext,
    MaybeApplied,
    OutputFailed,
    StorageError,
    UnknownWorkflow,
    UsageError,
)


class Options:
    """The global options (``heph --config PATH --debug COMMAND ...``): a plain class, not a
    dataclass, which every invocation would pay ~0.3 ms to build."""

    __slots__ = ("config", "debug")

    def __init__(self, config: Optional[str] = None, debug: bool = False) -> None:
        self.config, self.debug = config, debug


OPTIONS = Options()


def _write_out(stream, text: str) -> None:
    """Write ``text`` to ``stream`` and flush; a real file descriptor is written with ``os.write``
    until every byte is taken. Through the buffered stream, a write that a pipe whose reader has
    left takes in part (``heph list --json | head -c 100``) could end without the BrokenPipeError
    of the next one, and the command would exit 0 as if its whole answer had been read."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a StringIO, a test's capture
        fd = None
    if fd is None or os.linesep != "\n":
        stream.write(text)
        stream.flush()
        return
    data = memoryview(text.encode(stream.encoding or "utf-8", stream.errors or "strict"))
    stream.flush()
    while data:
        data = data[os.write(fd, data):]


def echo(text: str, err: bool = False, nl: bool = True) -> None:
    """Write a line to stdout (``err``: stderr) and flush."""
    stream = sys.stderr if err else sys.stdout
    try:
        if err:
            stream.write(text + "\n" if nl else text)
            stream.flush()
        else:
            _write_out(stream, text + "\n" if nl else text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        if err:
            raise
        raise OutputFailed(f"cannot write the output: {exc}") from None


class _Warnings(logging.Handler):
    """Holds heph's warnings until the command ends: shown after a success, dropped after a
    refusal (whose one error line says what matters); ``--debug`` shows every record at once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().splitlines()[0] if record.getMessage() else record.levelname)

    def drop(self, prefix: str) -> None:
        """Forget the warnings starting with ``prefix`` (what the command's answer already says)."""
        self.lines = [line for line in self.lines if not line.startswith(prefix)]

    def flush_to_stderr(self) -> None:
        for line in self.lines:
            echo(f"warning: {printable(line)}", err=True)
        self.lines.clear()


WARNINGS = _Warnings()


def configure(config: Optional[str], debug: bool) -> None:
    """Apply the global options: the config path, and logging (buffered warnings, or all with --debug)."""
    OPTIONS.config, OPTIONS.debug = config, debug
    logger = logging.getLogger("heph")
    if debug:
        logger.setLevel(logging.DEBUG)
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        if WARNINGS not in logger.handlers:
            logger.addHandler(WARNINGS)


# -- plumbing ----------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    return lines[0] if len(lines) == 1 else f"{lines[0]} {' '.join(line.strip() for line in lines[1:])}"


@contextmanager
def refusals(json_out: bool) -> Iterator[None]:
    """Turn errors into one clear line (and exit 1); let usage errors and exits through."""
    try:
        yield
        WARNINGS.flush_to_stderr()
    except SystemExit as exc:
        if not exc.code:
            WARNINGS.flush_to_stderr()
        raise
    except UsageError as exc:
        usage_error(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # `heph list | head`: the reader left; nothing to say (click exits 1 too)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(1) from None
    except RecursionError:
        _refuse(json_out, "invalid_input", "the input is nested too deeply")
    except HephError as exc:  # CliError, UnknownWorkflow, InstanceNotFound, StorageError, ...: exit 1
        _refuse(json_out, exc.code, _one_line(exc), 3 if isinstance(exc, MaybeApplied) else 1)
    except Exception as exc:
        _refuse(json_out, "internal",
                f"internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)")


def usage_error(message: str, command: Optional[str] = None) -> NoReturn:
    """Print ``Usage error: MESSAGE (see heph COMMAND --help)`` on stderr and exit 2: the one
    style of every usage error, heph's and Typer's (``heph.cli.main.run``)."""
    if command is None:
        from typer._click.globals import get_current_context

        ctx = get_current_context(silent=True)
        command = ctx.command_path if ctx is not None else "heph"
    echo(f"Usage error: {printable(message).rstrip('.')} (see {command} --help)", err=True)
    raise SystemExit(2)


def _refuse(json_out: bool, code: str, message: str, status: int = 1) -> None:
    """Print the one error line (and the ``--json`` error) and exit ``status``: 1 (nothing
    changed) or 3 (the change may have been applied)."""
    if OPTIONS.debug:
        import traceback

        traceback.print_exc()
    for line, err in ((json.dumps({"error": {"code": code, "message": message}}), False),
                      (f"error: {printable(message)}", True)):
        if err or json_out:
            try:
                echo(line, err=err)
            except (OSError, OutputFailed):  # nowhere to say it: the exit status still does
                pass
    raise SystemExit(status)


def current_project(collect: bool = False, workflows: bool = True) -> tuple[Project, list[dict]]:
    """The project of ``heph.yaml`` (``--config``) and, with ``collect``, its definition problems.

    With ``workflows`` false its modules are not imported: ``show --id`` and ``list`` without a
    WORKFLOW read stored runs without running the project's code."""
    project = load_project(find_config(OPTIONS.config))
    return project, (import_workflows(project, collect=collect) if workflows else [])


def _app(project: Project):
    from heph.cli.project import open_storage
    from heph.runtime.app import Hephaestus

    return Hephaestus(storage=open_storage(project))


def _workflow(name: str):
    from heph.core.workflow import lookup, registry

    cls = lookup(name)
    if cls is None:
        raise UnknownWorkflow(workflow=name, known=sorted(registry()))
    return cls


def _target(workflow: Optional[str], value: Optional[str], full_id: Optional[str]):
    """(instance id, workflow class or None) from WORKFLOW VALUE or --id."""
    from heph.core.ids import build_id, check_id

    if full_id is not None:
        if value is not None:
            raise UsageError("give either WORKFLOW VALUE or --id FULL_ID, not both")
        return check_id(full_id), (_workflow(workflow) if workflow else None)
    if workflow is None or value is None:
        raise UsageError("give WORKFLOW VALUE (or --id FULL_ID)")
    cls = _workflow(workflow)
    unique = cls.__heph_unique__
    if unique.scope == "none" and "::" not in value:
        raise CliError(f"workflow {workflow} uses scope 'none': "
                       f"pass --id {unique.key}::{value}::<suffix> (see heph list -w {workflow})")
    return (check_id(value) if "::" in value else build_id(unique.key, value)), cls


def _check_options(cls, options: dict, version: Optional[int]) -> None:
    """Refuse ``--option``s that nothing would read: only a versioned workflow's own ``version_for``
    reads them, and only when no ``--version`` is given."""
    if not options:
        return
    from heph.core.workflow import VersionedWorkflow

    name, given = cls.__heph_workflow_name__, ", ".join(f"--option {k}" for k in options)
    if not (isinstance(cls, type) and issubclass(cls, VersionedWorkflow)):
        raise UsageError(f"{given}: workflow {name} has no versions, and only a versioned workflow's "
                         f"version_for reads options")
    if getattr(cls.version_for, "__func__", None) is VersionedWorkflow.version_for.__func__:  # type: ignore[attr-defined]
        raise UsageError(f"{given}: workflow {name} does not define version_for, the only reader of options")
    if version is not None:
        raise UsageError(f"{given}: --version {version} picks the version, so version_for (the only reader "
                         f"of options) is not asked")


def _parse_options(items: List[str]) -> dict:
    """``--option KEY=VALUE`` pairs: VALUE parsed as JSON (``true``, ``3``), else kept as text."""
    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--option takes KEY=VALUE with KEY an identifier, got {item!r}")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def _summary(inst) -> dict:
    from heph.core.instance import to_iso

    out = {
        "id": inst.id, "run": inst.run, "workflow": inst.workflow, "version": inst.version,
        "status": inst.status, "waiting": inst.waiting, "next_due_at": to_iso(inst.next_due_at),
        "created_at": to_iso(inst.created_at), "updated_at": to_iso(inst.updated_at),
    }
    if inst.error:
        out["error"] = {"step": inst.error.get("step"), "type": inst.error.get("type"),
                        "message": inst.error.get("message")}
    return out


def _describe(inst, verb: str) -> str:
    line = f"{verb} {inst.id} ({inst.workflow} v{inst.version}): {inst.status}"
    if inst.status == "waiting":
        line += f", waiting on {', '.join(inst.waiting)}"
        if inst.next_due_at:
            line += f" (next due {when(inst.next_due_at)} UTC)"
    if inst.error:
        line += f" in step {inst.error.get('step')}: {error_line(inst.error)}"
    return printable(line)


def _answer(json_out: bool, inst, verb: str, **extra: object) -> None:
    """Print what a command did to ``inst`` (``extra``: more keys for ``--json``); a failure it
    reports is not repeated as a warning."""
    if inst.error:
        WARNINGS.drop(f"step {inst.error.get('step')} of {inst.id} failed")
    emit(json_out, {**_summary(inst), **extra}, _describe(inst, verb), changed=inst.id)


def _terminal() -> bool:
    """Whether show and list draw with rich (in colour): on a terminal, or when ``FORCE_COLOR``
    asks for colour in a pipe, as rich itself reads it; else plain text without importing rich."""
    return sys.stdout.isatty() or bool(os.environ.get("FORCE_COLOR"))


def emit(json_out: bool, data: object, text: str, changed: Optional[str] = None) -> None:
    """Print ``data`` as JSON (``--json``), else ``text``. ``changed``: the id a command has just
    changed; if its answer cannot be written, the command must not read as refused (exit 3)."""
    try:
        echo(json.dumps(data, ensure_ascii=False) if json_out else text)
    except OutputFailed as exc:
        if changed is None:
            raise
        raise MaybeApplied(instance_id=changed, reason=f"it was written, but its answer could not be: {exc}") from None


# -- commands ------------------------------------------------------------------------


def _metadata(cls) -> dict:
    """A workflow's ``metadata`` (a versioned workflow's own, else its current version's)."""
    data = cls.__dict__.get("metadata") or cls.definition().metadata or getattr(cls, "metadata", None)
    return dict(data or {})


def check(json_out: bool = False) -> None:
    """Import every workflow module, validate every workflow, list them and every error."""
    with refusals(json_out):
        from heph.core.workflow import registry

        project, problems = current_project(collect=True)
        rows = []
        for name, cls in sorted(registry().items()):
            versions = sorted(cls.__heph_versions__)
            current = cls.definition()
            rows.append({"name": name, "key": cls.__heph_unique__.key, "scope": cls.__heph_unique__.scope,
                         "versions": versions, "current": cls.__heph_current__, "steps": len(current.steps),
                         "tags": list(cls.tags if cls.tags else current.tags), "file": current.file,
                         "line": current.line, "metadata": _metadata(cls),
                         "schedules": [{"cron": sch.cron, "value": sch.value, "catchup": sch.catchup,
                                        "context": sch.context} for sch in cls.__heph_schedules__]})
        if json_out:
            echo(json.dumps({"workflows": rows, "errors": problems, "ok": not problems}))
        else:
            from heph.cli import render

            render.check(render.console(), rows, problems)
            for name, cls in sorted(registry().items()):
                for sch in cls.__heph_schedules__:
                    echo(printable(f"schedule  {name}: cron {sch.cron!r} (UTC), value {sch.value!r}, "
                                   f"catchup {sch.catchup}"))
        if not rows and not problems:
            echo(f"warning: {project.config} lists no module that defines a workflow "
                 f"(name the modules that define them under workflows:)", err=True)
        if problems:
            if not json_out:
                echo(f"error: {len(problems)} definition problem(s) found", err=True)
            raise SystemExit(1)


def start(workflow: str, value: Optional[str] = None, context: Optional[str] = None,
          context_json: Optional[str] = None, version: Optional[int] = None,
          option: Optional[List[str]] = None, full_id: Optional[str] = None, json_out: bool = False) -> None:
    """Start an instance; print its id and resulting status."""
    with refusals(json_out):
        if (value is None) == (full_id is None):
            raise UsageError("give VALUE or --id FULL_ID (one of them)")
        options = _parse_options(option or [])
        initial = read_context(context, context_json)
        project, _ = current_project()
        cls = _workflow(workflow)
        _check_options(cls, options, version)
        app = _app(project)
        if value is not None:  # else --id FULL_ID
            from heph.core.ids import build_id

            full_id = build_id(cls.__heph_unique__.key, value)
        inst = app.start_run(cls, initial, id=full_id, version=version, options=options)
        _answer(json_out, inst, "started")


def resume(args: List[str], step: Optional[str] = None, data: Optional[str] = None,
           data_file: Optional[str] = None, buffer: bool = False, full_id: Optional[str] = None,
           json_out: bool = False) -> None:
    """Resume a waiting instance with EVENT (and its data)."""
    with refusals(json_out):
        if full_id is not None and len(args) in (1, 2):
            workflow, value, event = (args[0] if len(args) == 2 else None), None, args[-1]
        elif full_id is None and len(args) == 3:
            workflow, value, event = args
        else:
            raise UsageError("usage: heph resume WORKFLOW VALUE EVENT  (or: heph resume --id FULL_ID EVENT)")
        payload = read_context(data_file, data, what="event data", options=("--data-file", "--data"),
                               error=InvalidContext)
        project, _ = current_project()
        instance_id, cls = _target(workflow, value, full_id)
        delivery = _app(project).deliver(instance_id, event, payload, step=step, buffer=buffer, workflow=cls)
        inst = delivery.instance
        if delivery.outcome == "buffered":
            emit(json_out, {**_summary(inst), "outcome": "buffered", "inbox": len(inst.inbox)},
                 printable(f"buffered {event} for {inst.id} ({inst.workflow} v{inst.version}): "
                           f"{len(inst.inbox)} event(s) in its inbox, delivered when a step that declares "
                           f"{event} pauses"), changed=inst.id)
            return
        if delivery.outcome == "queued":
            _queued(json_out, instance_id, delivery, f"queued {event} for {instance_id}",
                    "it is applied when that step ends (or recorded as rejected in the history if no step "
                    "takes it then)")
            return
        _answer(json_out, inst, "resumed", outcome="resumed")


def show(workflow: Optional[str] = None, value: Optional[str] = None, full_id: Optional[str] = None,
         run: Optional[str] = None, json_out: bool = False) -> None:
    """Show status, waiting steps and timers, context, runtime metadata, history and error."""
    with refusals(json_out):
        project, _ = current_project(workflows=workflow is not None)
        instance_id, cls = _target(workflow, value, full_id)
        from heph.runtime.app import pick_run

        runs = _app(project).runs(instance_id, workflow=cls)  # read once: the shown run is one of them
        name = cls.__heph_workflow_name__ if cls else None
        if run is None:
            inst = pick_run(runs, instance_id, name)
        else:
            chosen = [r for r in runs if r.run == run]
            if not chosen:
                pick_run(runs, instance_id, name)  # no run at all: "no instance ..."
                raise CliError(f"{instance_id} has no run {run!r}; runs: {', '.join(r.run for r in runs)}")
            inst = chosen[0]
        metadata = _metadata(cls) if cls is not None else None  # the workflow's, when it is named
        busy = _app(project).running(instance_id) if inst.is_active else None
        if json_out:
            shown = {**inst.to_dict(), "runs": [r.run for r in runs], "busy": busy}
            echo(json.dumps({**shown, "status": "running"} if busy else shown, ensure_ascii=False))
        elif not _terminal():
            from heph.cli import plain

            plain.show(echo, inst, runs=len(runs), metadata=metadata, busy=busy)
        else:
            from heph.cli import render

            render.show(render.console(), inst, runs=len(runs), metadata=metadata, busy=busy)


def list_(workflow: Optional[str] = None, status: Optional[List[str]] = None, full_id: Optional[str] = None,
          version: Optional[int] = None, limit: int = 50, json_out: bool = False) -> None:
    """List instances, newest first."""
    with refusals(json_out):
        from heph.core.instance import STATUSES

        bad = [s for s in status or [] if s not in STATUSES]
        if bad:
            raise UsageError(f"--status {bad[0]!r} is not a status; statuses: {', '.join(STATUSES)}")
        project, _ = current_project(workflows=workflow is not None)
        if workflow is not None:
            _workflow(workflow)
        app = _app(project)
        found = app.list(workflow=workflow, status_in=status or None, id=full_id, version=version, limit=limit)
        busy = {i.id: note for i in found if i.is_active and (note := app.running(i.id)) is not None}
        more = " (--limit reached)" if len(found) == limit else ""
        if json_out:
            rows = [{**_summary(i), "status": "running", "busy": busy[i.id]} if i.id in busy else _summary(i)
                    for i in found]
            echo(json.dumps({"instances": rows}))
        elif not _terminal():
            from heph.cli import plain

            plain.list_table(echo, found, busy)
            echo(f"{len(found)} instance(s){more}")
        else:
            from heph.cli import render

            out = render.console()
            out.print(render.list_table(found, render.room(out), busy))
            out.print(f"{len(found)} instance(s){more}", style="dim")


def _act(action: str, verb: str, workflow: Optional[str], value: Optional[str], full_id: Optional[str],
         json_out: bool) -> None:
    """Run ``app.<action>(id)`` on the instance named by WORKFLOW VALUE or --id and report it."""
    with refusals(json_out):
        project, _ = current_project()
        instance_id, cls = _target(workflow, value, full_id)
        inst = getattr(_app(project), action)(instance_id, workflow=cls)
        _answer(json_out, inst, verb)


def cancel(workflow: Optional[str] = None, value: Optional[str] = None, full_id: Optional[str] = None,
           wait: bool = False, json_out: bool = False) -> None:
    """Cancel an active instance (its timers are dropped); while a step of it runs in another
    live process, request the cancel (and, with ``wait``, wait until it has ended)."""
    with refusals(json_out):
        project, _ = current_project()
        instance_id, cls = _target(workflow, value, full_id)
        app = _app(project)
        if wait:  # cancelled at once, or requested and waited for: either way it ends cancelled
            _answer(json_out, app.cancel(instance_id, workflow=cls, wait=True), "cancelled", outcome="cancelled")
            return
        requested = app.request_cancel(instance_id, workflow=cls)
        if requested.outcome == "cancel requested":
            _queued(json_out, instance_id, requested, f"cancel requested for {instance_id}",
                    "it ends cancelled when that step ends, and no further step starts (heph cancel --wait "
                    "waits for it)")
        else:
            _answer(json_out, requested.instance, "cancelled", outcome="cancelled")


def _queued(json_out: bool, instance_id: str, delivery, head: str, then: str) -> None:
    """Report a message queued for a busy instance: what ran it then, and what happens next."""
    from heph.cli.text import running

    note, inst = delivery.busy, delivery.instance
    who = f": {running(note)}" if note else ""
    data = {**(_summary(inst) if inst is not None else {"id": instance_id}), "outcome": delivery.outcome,
            "busy": note}
    emit(json_out, data, printable(f"{head} (a step of it is running{who}); {then}"), changed=instance_id)


def retry(workflow: Optional[str] = None, value: Optional[str] = None, full_id: Optional[str] = None,
          json_out: bool = False) -> None:
    """Re-run a failed instance from its failed step."""
    _act("retry", "retried", workflow, value, full_id, json_out)


def graph(workflow: str, fmt: str = "tree", instance: Optional[str] = None, version: Optional[int] = None,
          full_id: Optional[str] = None, json_out: bool = False) -> None:
    """Draw the workflow's DAG; with --instance, mark completed, active, waiting and failed steps."""
    with refusals(json_out):
        from heph.cli import graph as drawing

        if fmt not in ("tree", "mermaid", "dot"):
            raise UsageError(f"--format must be tree, mermaid or dot, not {fmt!r}")
        if instance is not None and full_id is not None:
            raise UsageError("give either --instance VALUE or --id FULL_ID, not both")
        project, _ = current_project()
        cls = _workflow(workflow)
        inst = None
        if instance is not None or full_id is not None:
            instance_id, _ = _target(workflow, instance, full_id)
            inst = _app(project).get(instance_id, workflow=cls)
            version = version or inst.version
        definition = cls.definition(version)
        if json_out:
            echo(json.dumps({**drawing.to_dict(definition, inst), "metadata": _metadata(cls)}))
        elif fmt == "mermaid":
            echo(drawing.to_mermaid(definition, inst), nl=False)
        elif fmt == "dot":
            echo(drawing.to_dot(definition, inst), nl=False)
        else:
            from heph.cli import render

            render.console().print(render.graph_tree(drawing.tree(definition, inst)))


def schedules(json_out: bool = False) -> None:
    """List every schedule of the project's workflows and its state."""
    with refusals(json_out):
        project, _ = current_project()
        found = _app(project).schedules()
        if json_out:
            echo(json.dumps({"schedules": found}))
            return
        if not found:
            echo("no schedules (set schedules = [heph.Schedule(cron=...)] on a workflow class)")
            return
        from heph.cli import plain

        plain.schedule_table(echo, found)
        echo(f"{len(found)} schedule(s); heph tick or heph worker starts them when due")


def tick(json_out: bool = False) -> None:
    """Fire due timers and retries once (and finish steps interrupted by a dead process).

    Exits 1 if the due work of some run could not be written (each named in a warning line, and
    in ``failed`` with ``--json``), 3 if such a write may have been applied; the rest was fired."""
    with refusals(json_out):
        project, _ = current_project()
        done = _app(project).tick()
        if json_out:
            echo(json.dumps({"fired": list(done), "failed": done.failed}))
        else:
            for a in done:
                echo(printable(f"{a['kind']:9} {a['id']}  step {a['step']}"))
            echo(f"fired {len(done)}" + (f", failed {len(done.failed)}" if done.failed else ""))
    if done.failed:
        first = done.failed[0]
        more = f" (and {len(done.failed) - 1} more run(s): see --json)" if len(done.failed) > 1 else ""
        maybe = any(f["code"] == MaybeApplied.code for f in done.failed)
        echo(printable(f"error: could not fire the due work of {first['id']}: {first['error']}{more}; "
                       + ("check with heph show before ticking again" if maybe else "the next tick tries again")),
             err=True)
        raise SystemExit(3 if maybe else 1)


class _Outage:
    """A worker's view of its store being out of reach: warns on the first failed tick and when
    it is back, and backs off (0.5 s doubling to 30 s) in between."""

    def __init__(self) -> None:
        self.pause = 0.0

    def failed(self, exc: BaseException) -> float:
        if not self.pause:
            logging.getLogger("heph").warning("worker: the store failed (%s); retrying with backoff", _one_line(exc))
        self.pause = min(30.0, self.pause * 2 if self.pause else 0.5)
        return self.pause

    def recovered(self) -> None:
        if self.pause:
            logging.getLogger("heph").warning("worker: the store answers again; carrying on")
        self.pause = 0.0


def _sleep_unless(stop: dict, seconds: float) -> None:
    """Sleep ``seconds`` in short slices, returning early once ``stop["now"]`` is set."""
    end = time.monotonic() + seconds
    while not stop["now"] and (left := end - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


def worker(interval: float = 1.0, iterations: Optional[int] = None, json_out: bool = False) -> None:
    """Keep firing due timers and retries until SIGINT/SIGTERM (finishing the current write first)."""
    import signal

    with refusals(json_out):
        project, _ = current_project()
        app = _app(project)
        stop = {"now": False}

        def ask_to_stop(signum, frame) -> None:
            stop["now"] = True

        previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        live = sys.stdout.isatty() and not json_out
        total = ticks = 0
        outage = _Outage()
        status = None
        if live:
            from heph.cli import render

            status = render.console().status("heph worker: waiting for due timers")
            status.start()
        try:
            while not stop["now"] and (iterations is None or ticks < iterations):
                try:
                    actions = app.tick()
                except StorageError as exc:  # the store is out of reach: say so once, back off, carry on
                    pause = outage.failed(exc)
                    WARNINGS.flush_to_stderr()
                    ticks += 1
                    _sleep_unless(stop, pause)
                    continue
                outage.recovered()
                WARNINGS.flush_to_stderr()
                ticks += 1
                total += len(actions)
                for a in actions:
                    if json_out:
                        echo(json.dumps(a))
                    else:
                        echo(printable(f"{time.strftime('%H:%M:%S')} {a['kind']:9} {a['id']}  step {a['step']}"))
                for f in actions.failed:  # the next tick tries again
                    echo(printable(f"warning: could not fire the due work of {f['id']}: {f['error']}"), err=True)
                if status is not None:
                    status.update(f"heph worker: {ticks} ticks, {total} fired; "
                                  f"next tick in {interval:g}s (Ctrl-C stops)")
                deadline = time.monotonic() + interval
                while not stop["now"] and time.monotonic() < deadline and (iterations is None or ticks < iterations):
                    # PostgreSQL wakes on LISTEN/NOTIFY; the default sleeps the slice
                    try:
                        if app.storage.wait_for_work(min(0.25, max(0.0, deadline - time.monotonic()))):
                            break
                    except StorageError:  # the next tick meets it and backs off
                        break
        finally:
            if status is not None:
                status.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not json_out:
            echo(f"worker stopped after {ticks} tick(s), {total} fired")
