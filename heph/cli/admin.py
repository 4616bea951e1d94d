"""Store administration commands: ``heph doctor``, and the ``db`` and ``storage`` groups
(``heph db migrate``, ``heph storage copy``); ``heph.cli.main`` adds them to the app."""

import json
from pathlib import Path
from typing import Annotated

import typer

from heph.cli.app import JsonOption, new_typer
from heph.cli.commands import current_project, echo, emit, refusals
from heph.cli.project import CONFIG_NAME, Project, find_config, load_project, open_storage
from heph.errors import CliError


def doctor(
    repair: Annotated[bool, typer.Option(
        "--repair", help="Rebuild the index and move corrupt files to quarantine/.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Check every instance file, the index, locks and leases; --repair fixes what is safe to fix."""
    with refusals(json_out):
        from heph.core.workflow import lookup
        from heph.runtime.doctor import diagnose
        from heph.runtime.storage.jsonfile import JsonFileStorage

        project, _ = current_project()
        if project.storage_type != "json":
            raise CliError("heph doctor checks JSON-file stores; this project stores runs in PostgreSQL "
                           "(`heph db migrate` checks its schema; use `heph list` and PostgreSQL's own tools)")

        def known(name: str, version: int) -> bool:
            cls = lookup(name)
            return cls is not None and version in cls.__heph_versions__

        report = diagnose(JsonFileStorage(project.storage_path, lock_timeout=project.lock_timeout),
                          repair=repair, known=known)
        if json_out:
            echo(json.dumps(report))
        else:
            echo("\n".join(doctor_lines(report)))
        if not report["healthy"]:
            raise SystemExit(1)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _index_line(report: dict) -> str:
    """The index as one human line: complete, or what is wrong with it and how it is fixed."""
    index = report["index"]
    missing, stale = index["missing_markers"], index["stale_markers"]
    fix = "rebuilt below" if report["repaired"] else "heph doctor --repair rebuilds it"
    if not missing and not stale:
        if index["complete"]:
            return "complete"
        if not report["instances"] and not report["corrupt"]:
            return "none yet (no instance stored)"  # a fresh store: its first write makes it
        return f"not marked complete ({fix})"
    parts = [f"{n} {word}" for n, word in ((missing, "missing"), (stale, "stale")) if n]
    return f"{' and '.join(parts)} marker{'' if missing + stale == 1 else 's'} ({fix})"


def doctor_lines(report: dict) -> list[str]:
    """``heph doctor``'s text: one ``label: value`` line per check, details, repairs, verdict."""
    lines = [
        f"store:        {report['store']}",
        f"instances:    {report['instances']} readable",
        f"corrupt:      {len(report['corrupt'])}" + (" (heph doctor --repair moves them to quarantine/)"
                                                      if report["corrupt"] and not report["repaired"] else ""),
        f"unreadable:   {len(report['unreadable'])} (I/O errors reading them; never moved)",
        f"temp files:   {len(report['temp_files'])} (left by interrupted writes)",
        f"index:        {_index_line(report)}",
        f"interrupted:  {len(report['interrupted'])} (owner died mid-step; `heph tick` runs them again)",
        f"busy:         {len(report['busy'])} (a live process holds their lock)",
        f"unknown:      {len(report['unknown_workflows'])} (workflow or version not defined in this project)",
    ]
    for item in report["corrupt"]:
        lines.append(f"  corrupt: {item['reason']}")
    for item in report["unreadable"]:
        lines.append(f"  unreadable: {item['reason']}")
    for item in report["interrupted"]:
        lines.append(f"  interrupted: {item['id']} run {item['run']} steps {', '.join(item['steps'])} "
                     f"(pid {item['owner_pid']} on {item['owner_host']})")
    for item in report["unknown_workflows"]:
        lines.append(f"  unknown: {item['id']} run {item['run']} ({item['workflow']} v{item['version']})")
    repaired = report["repaired"]
    if repaired:
        lines.append(f"quarantined:  {_count(len(repaired['quarantined']), 'file')} moved to quarantine/")
        rebuilt = repaired.get("index")
        if isinstance(rebuilt, dict):
            said = {"instances": ("instance", "instances"), "added": ("marker added", "markers added"),
                    "removed": ("marker removed", "markers removed"), "corrupt": ("corrupt file skipped",
                                                                                 "corrupt files skipped")}
            parts = [f"{rebuilt[k]} {one if rebuilt[k] == 1 else many}" for k, (one, many) in said.items()
                     if k in rebuilt]
            parts += [f"{k} {v}" for k, v in rebuilt.items() if k not in said]
            lines.append(f"index rebuilt: {', '.join(parts)}")
        else:
            lines.append("index rebuilt")
    if report["healthy"]:
        lines.append("repaired: healthy now" if repaired else "healthy")
    elif report["unreadable"]:
        lines.append("problems found: files the store cannot read (above); check the disk, then run "
                     "`heph doctor` again")
    else:
        lines.append("problems found: run `heph doctor --repair`")
    return lines


db_cli = new_typer("db", "PostgreSQL storage: schema migrations.")


@db_cli.command("migrate")
def db_migrate(json_out: JsonOption = False) -> None:
    """Create or upgrade heph's tables in the project's PostgreSQL schema (safe to run again)."""
    with refusals(json_out):
        from heph.runtime.storage.postgres import LATEST, redact

        project, _ = current_project(workflows=False)
        if project.storage_type != "postgres":
            raise CliError("this project stores runs in JSON files; `heph db migrate` is for storage type postgres "
                           "(storage: {type: postgres, dsn: ...} in heph.yaml, or $HEPH_DATABASE_URL)")
        store = open_storage(project)
        try:
            applied = store.migrate()
            versions = [m["version"] for m in store.migrations()]
        finally:
            store.close()
        where = f"schema {project.schema} at {redact(project.dsn or '')}"
        data = {"schema": project.schema, "applied": applied, "versions": versions, "latest": LATEST}
        text = (f"applied migration(s) {', '.join(map(str, applied))} to {where}" if applied
                else f"{where} is up to date")
        emit(json_out, data, f"{text} (version {max(versions, default=0)})")


storage_cli = new_typer("storage", "Move runs between stores.")


@storage_cli.command("copy")
def storage_copy(
    to: Annotated[str, typer.Option("--to", help="The heph.yaml (or its directory) of the target store.")],
    json_out: JsonOption = False,
) -> None:
    """Copy every run of this project's store into the store of another heph.yaml, verified by checksums."""
    with refusals(json_out):
        from heph.runtime.storage.transfer import copy_runs

        project, _ = current_project()
        target_config = _target_config(to)
        target = load_project(target_config, use_env=False)  # the target is exactly what its heph.yaml says
        if _store_key(target) == _store_key(project):
            raise CliError(f"{target_config} uses the same store as this project; nothing to copy")
        source_store, target_store = open_storage(project), open_storage(target)
        try:
            report = copy_runs(source_store, target_store)
        finally:
            source_store.close()
            target_store.close()
        report = {"source": _store_name(project), "target": _store_name(target), **report}
        emit(json_out, report,
              f"copied {report['copied']} run(s) of {report['ids']} instance id(s) from {report['source']} to "
              f"{report['target']} ({report['already_present']} already there); "
              f"verified {report['verified']}/{report['runs']} checksums (sha256 {report['checksum'][:16]}...); "
              f"{report['schedules']} schedule state(s) copied")


def _target_config(to: str) -> Path:
    """The heph.yaml named by ``--to`` (a file, or a directory holding one)."""
    path = Path(to)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.is_file():
        raise CliError(f"config file {path} (from --to) does not exist: give the path of the target's heph.yaml")
    return find_config(str(path))


def _store_key(project: Project) -> tuple:
    if project.storage_type == "postgres":
        return ("postgres", project.dsn, project.schema)
    return ("json", str(project.storage_path.resolve()))


def _store_name(project: Project) -> str:
    if project.storage_type == "postgres":
        from heph.runtime.storage.postgres import redact

        return f"postgres {redact(project.dsn or '')} schema {project.schema}"
    return f"json {project.storage_path}"
