"""The ``heph`` command: its commands registered on the Typer app (``heph.cli.app``), and ``run``,
the console script. Options, help and usage errors are Typer's; the work is in ``heph.cli.commands``.
"""

from typing import Annotated, List, Optional

import typer

from heph.cli import admin, commands
from heph.cli.app import IdOption, JsonOption, ValueArg, WorkflowArg, cli


@cli.command()
def check(json_out: JsonOption = False) -> None:
    """Import every workflow module, validate every workflow, list them and every error."""
    commands.check(json_out=json_out)


@cli.command()
def start(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    value: Annotated[Optional[str], typer.Argument(help="Business value: [a-z0-9]+ or a lower-case UUID.")] = None,
    context: Annotated[Optional[str], typer.Option(
        "--context", help="JSON file with the start context ('-' for stdin).")] = None,
    context_json: Annotated[Optional[str], typer.Option(
        "--context-json", help="The start context as inline JSON.")] = None,
    version: Annotated[Optional[int], typer.Option(
        "--version", help="Start this version (default: version_for, else current).")] = None,
    option: Annotated[Optional[List[str]], typer.Option(
        "--option", "-o", metavar="KEY=VALUE",
        help="An option for the workflow's version_for (repeatable; VALUE is JSON, else text).")] = None,
    full_id: IdOption = None,
    json_out: JsonOption = False,
) -> None:
    """Start an instance; print its id and resulting status."""
    commands.start(workflow=workflow, value=value, context=context, context_json=context_json, version=version,
                   option=option, full_id=full_id, json_out=json_out)


@cli.command()
def resume(
    args: Annotated[List[str], typer.Argument(
        metavar="WORKFLOW VALUE EVENT", help="WORKFLOW VALUE EVENT, or EVENT with --id.")],
    step: Annotated[Optional[str], typer.Option(
        "--step", help="The waiting step to resume when several accept EVENT.")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", metavar="JSON", help="The event's data, a JSON object: the resumed step's context entry.")] = None,
    data_file: Annotated[Optional[str], typer.Option(
        "--data-file", metavar="FILE", help="The event's data from a JSON file ('-' for stdin).")] = None,
    buffer: Annotated[bool, typer.Option(
        "--buffer", help="If no step waits for EVENT yet, keep it in the instance's inbox until one does.")] = False,
    full_id: IdOption = None,
    json_out: JsonOption = False,
) -> None:
    """Resume a waiting instance with EVENT (and its data)."""
    commands.resume(args=args, step=step, data=data, data_file=data_file, buffer=buffer, full_id=full_id,
                    json_out=json_out)


@cli.command()
def show(
    workflow: WorkflowArg = None,
    value: ValueArg = None,
    full_id: IdOption = None,
    run: Annotated[Optional[str], typer.Option(
        "--run", help="Show this run of the id (default: the active one, else the newest).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Show status, waiting steps and timers, context, runtime metadata, history and error."""
    commands.show(workflow=workflow, value=value, full_id=full_id, run=run, json_out=json_out)


@cli.command("list")
def list_(
    workflow: Annotated[Optional[str], typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    status: Annotated[Optional[List[str]], typer.Option(
        "--status", "-s", help="Only these statuses (repeatable).")] = None,
    full_id: Annotated[Optional[str], typer.Option("--id", help="Every run of this instance id.")] = None,
    version: Annotated[Optional[int], typer.Option("--version", help="Only this version.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows (newest first).")] = 50,
    json_out: JsonOption = False,
) -> None:
    """List instances, newest first."""
    commands.list_(workflow=workflow, status=status, full_id=full_id, version=version, limit=limit, json_out=json_out)


@cli.command()
def cancel(workflow: WorkflowArg = None, value: ValueArg = None, full_id: IdOption = None,
           wait: Annotated[bool, typer.Option("--wait", help="While a step of it runs elsewhere: wait until the "
                                                            "instance has ended cancelled.")] = False,
           json_out: JsonOption = False) -> None:
    """Cancel an active instance (its timers are dropped); while a step of it runs, request it."""
    commands.cancel(workflow=workflow, value=value, full_id=full_id, wait=wait, json_out=json_out)


@cli.command()
def retry(workflow: WorkflowArg = None, value: ValueArg = None, full_id: IdOption = None,
          json_out: JsonOption = False) -> None:
    """Re-run a failed instance from its failed step."""
    commands.retry(workflow=workflow, value=value, full_id=full_id, json_out=json_out)


@cli.command()
def graph(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="tree (terminal), mermaid or dot.")] = "tree",
    instance: Annotated[Optional[str], typer.Option(
        "--instance", help="Mark the steps of this instance (business value or full id).")] = None,
    version: Annotated[Optional[int], typer.Option(
        "--version", help="Draw this version (default: current, or the instance's).")] = None,
    full_id: Annotated[Optional[str], typer.Option(
        "--id", help="Mark the steps of the instance with this full id (key::value[::suffix]).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Draw the workflow's DAG; with --instance or --id, mark completed, active, waiting and failed steps."""
    commands.graph(workflow=workflow, fmt=fmt, instance=instance, version=version, full_id=full_id,
                   json_out=json_out)


@cli.command()
def tick(json_out: JsonOption = False) -> None:
    """Fire due timers and retries once (and finish steps interrupted by a dead process)."""
    commands.tick(json_out=json_out)


@cli.command()
def schedules(json_out: JsonOption = False) -> None:
    """List every schedule: workflow, cron, value, catch-up, the last slot started, the next slot."""
    commands.schedules(json_out=json_out)


@cli.command()
def worker(
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Seconds between ticks.")] = 1.0,
    iterations: Annotated[Optional[int], typer.Option(
        "--iterations", hidden=True, help="Stop after this many ticks (tests).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Keep firing due timers and retries until SIGINT/SIGTERM (finishing the current write first)."""
    commands.worker(interval=interval, iterations=iterations, json_out=json_out)


cli.command()(admin.doctor)
cli.add_typer(admin.db_cli, name="db")
cli.add_typer(admin.storage_cli, name="storage")


def run() -> None:
    """The console script (``heph``) and ``python -m heph``: run the Typer app on ``sys.argv``.

    Typer's own usage errors (an unknown option, a bad value, a missing argument) are printed in
    heph's one style, ``Usage error: ... (see heph COMMAND --help)``, and exit 2 like heph's."""
    import sys

    from typer._click.exceptions import NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError

    try:
        code = cli(prog_name="heph", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `heph` or `heph db` alone: the help, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except ClickUsageError as exc:
        commands.usage_error(exc.format_message(), exc.ctx.command_path if exc.ctx is not None else "heph")
    sys.exit(code if isinstance(code, int) else 0)
