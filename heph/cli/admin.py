"""Store administration commands: ``heph doctor``, and the ``db`` and ``storage`` groups
(``heph db migrate``, ``heph storage copy``); ``heph.cli.main`` adds them to the app."""

import json
from typing import Annotated

import typer

from heph.cli.app import JsonOption, new_typer
from heph.cli.commands import current_project, echo, emit, refusals
from heph.cli.project import Project, find_config, load_project, open_storage
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
            index = report["index"]
            lines = [
                f"store        {report['store']}",
                f"instances    {report['instances']} readable",
                f"corrupt      {len(report['corrupt'])}",
                f"temp files   {len(report['temp_files'])} (left by interrupted writes)",
                f"index        {'complete' if index['complete'] else 'INCOMPLETE'}, "
                f"{index['missing_markers']} missing and {index['stale_markers']} stale markers",
                f"interrupted  {len(report['interrupted'])} (owner died mid-step; `heph tick` runs them again)",
                f"busy         {len(report['busy'])} (a live process holds their lock)",
                f"unknown      {len(report['unknown_workflows'])} (workflow or version not defined in this project)",
            ]
            for item in report["corrupt"]:
                lines.append(f"  corrupt: {item['reason']}")
            for item in report["interrupted"]:
                lines.append(f"  interrupted: {item['id']} run {item['run']} steps {', '.join(item['steps'])} "
                             f"(pid {item['owner_pid']} on {item['owner_host']})")
            for item in report["unknown_workflows"]:
                lines.append(f"  unknown: {item['id']} run {item['run']} ({item['workflow']} v{item['version']})")
            if report["repaired"]:
                lines.append(f"repaired: moved {len(report['repaired']['quarantined'])} file(s) to quarantine/, "
                             f"index rebuilt ({report['repaired']['index']})")
            lines.append("healthy" if report["healthy"] else "problems found: run `heph doctor --repair`")
            echo("\n".join(lines))
        if not report["healthy"]:
            raise SystemExit(1)


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
        target_config = find_config(to)
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
              f"verified {report['verified']}/{report['runs']} checksums (sha256 {report['checksum'][:16]}...)")


def _store_key(project: Project) -> tuple:
    if project.storage_type == "postgres":
        return ("postgres", project.dsn, project.schema)
    return ("json", str(project.storage_path.resolve()))


def _store_name(project: Project) -> str:
    if project.storage_type == "postgres":
        from heph.runtime.storage.postgres import redact

        return f"postgres {redact(project.dsn or '')} schema {project.schema}"
    return f"json {project.storage_path}"
