"""The ``heph`` command as a Typer app: options, help and usage errors; the work is in
``heph.cli.commands``. The console script (``heph.cli.fast.run``) parses the common
invocations without importing Typer and hands the rest to this app.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from heph.cli import commands

cli = typer.Typer(
    name="heph",
    help="heph: durable workflows for Python, driven from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JSON_OPTION = typer.Option(False, "--json", help="Machine-readable output on stdout.")
ID_OPTION = typer.Option(None, "--id", help="The full instance id (key::value[::suffix]) instead of WORKFLOW VALUE.")
WORKFLOW_ARG = typer.Argument(None, help="Workflow name.")
VALUE_ARG = typer.Argument(None, help="Business value.")


@cli.callback()
def main(
    config: Optional[str] = typer.Option(None, "--config", help="Path of heph.yaml (default: $HEPH_CONFIG, else the nearest heph.yaml)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of refused commands."),
) -> None:
    """Start, resume, inspect, cancel and retry workflow instances stored next to your project."""
    commands.configure(config, debug)


@cli.command()
def check(json_out: bool = JSON_OPTION) -> None:
    """Import every workflow module, validate every workflow, list them and every error."""
    commands.check(json_out=json_out)


@cli.command()
def start(
    workflow: str = typer.Argument(..., help="Workflow name."),
    value: Optional[str] = typer.Argument(None, help="Business value: [a-z0-9]+ or a lower-case UUID."),
    context: Optional[str] = typer.Option(None, "--context", help="JSON file with the start context ('-' for stdin)."),
    context_json: Optional[str] = typer.Option(None, "--context-json", help="The start context as inline JSON."),
    version: Optional[int] = typer.Option(None, "--version", help="Start this version (default: version_for, else current)."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-o", metavar="KEY=VALUE",
                                               help="An option for the workflow's version_for (repeatable; VALUE is JSON, else text)."),
    full_id: Optional[str] = ID_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Start an instance; print its id and resulting status."""
    commands.start(workflow=workflow, value=value, context=context, context_json=context_json, version=version, option=option, full_id=full_id, json_out=json_out)


@cli.command()
def resume(
    args: List[str] = typer.Argument(..., metavar="WORKFLOW VALUE EVENT", help="WORKFLOW VALUE EVENT, or EVENT with --id."),
    step: Optional[str] = typer.Option(None, "--step", help="The waiting step to resume when several accept EVENT."),
    full_id: Optional[str] = ID_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Resume a waiting instance with EVENT."""
    commands.resume(args=args, step=step, full_id=full_id, json_out=json_out)


@cli.command()
def show(
    workflow: Optional[str] = typer.Argument(None, help="Workflow name."),
    value: Optional[str] = typer.Argument(None, help="Business value."),
    full_id: Optional[str] = ID_OPTION,
    run: Optional[str] = typer.Option(None, "--run", help="Show this run of the id (default: the active one, else the newest)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Show status, waiting steps and timers, context, runtime metadata, history and error."""
    commands.show(workflow=workflow, value=value, full_id=full_id, run=run, json_out=json_out)


@cli.command("list")
def list_(
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="Only this workflow."),
    status: Optional[List[str]] = typer.Option(None, "--status", "-s", help="Only these statuses (repeatable)."),
    full_id: Optional[str] = typer.Option(None, "--id", help="Every run of this instance id."),
    version: Optional[int] = typer.Option(None, "--version", help="Only this version."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many rows (newest first)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List instances, newest first."""
    commands.list_(workflow=workflow, status=status, full_id=full_id, version=version, limit=limit, json_out=json_out)


@cli.command()
def cancel(workflow: Optional[str] = WORKFLOW_ARG, value: Optional[str] = VALUE_ARG,
           full_id: Optional[str] = ID_OPTION, json_out: bool = JSON_OPTION) -> None:
    """Cancel an active instance (its timers are dropped)."""
    commands.cancel(workflow=workflow, value=value, full_id=full_id, json_out=json_out)


@cli.command()
def retry(workflow: Optional[str] = WORKFLOW_ARG, value: Optional[str] = VALUE_ARG,
          full_id: Optional[str] = ID_OPTION, json_out: bool = JSON_OPTION) -> None:
    """Re-run a failed instance from its failed step."""
    commands.retry(workflow=workflow, value=value, full_id=full_id, json_out=json_out)


@cli.command()
def graph(
    workflow: str = typer.Argument(..., help="Workflow name."),
    fmt: str = typer.Option("tree", "--format", "-f", help="tree (terminal), mermaid or dot."),
    instance: Optional[str] = typer.Option(None, "--instance", help="Mark the steps of this instance (business value or full id)."),
    version: Optional[int] = typer.Option(None, "--version", help="Draw this version (default: current, or the instance's)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Draw the workflow's DAG; with --instance, mark completed, active, waiting and failed steps."""
    commands.graph(workflow=workflow, fmt=fmt, instance=instance, version=version, json_out=json_out)


@cli.command()
def tick(json_out: bool = JSON_OPTION) -> None:
    """Fire due timers and retries once (and finish steps interrupted by a dead process)."""
    commands.tick(json_out=json_out)


@cli.command()
def worker(
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between ticks."),
    iterations: Optional[int] = typer.Option(None, "--iterations", hidden=True, help="Stop after this many ticks (tests)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Keep firing due timers and retries until SIGINT/SIGTERM (finishing the current write first)."""
    commands.worker(interval=interval, iterations=iterations, json_out=json_out)


from heph.cli import admin  # noqa: E402,F401  (registers doctor, db and storage commands)

