"""The Typer app of the ``heph`` command, its global options and the parameters its commands share.

``heph.cli.main`` registers the commands on ``cli``; ``heph.cli.admin`` builds its groups with
``new_typer`` and uses the shared parameters. Neither is imported from here.
"""

from typing import Annotated, Optional

import typer

from heph.cli import commands

# -h beside --help on every command (a group's settings reach its subcommands through the context)
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def new_typer(name: str, help: str, completion: bool = False) -> typer.Typer:
    """A Typer app (or command group) with heph's settings: plain help, ``-h``, no pretty tracebacks;
    ``completion``: Typer's ``--install-completion`` and ``--show-completion`` (the top level only)."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=completion,
                       pretty_exceptions_enable=False, rich_markup_mode=None, context_settings=CONTEXT_SETTINGS)


cli = new_typer("heph", "heph: durable workflows for Python, driven from the command line.", completion=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
IdOption = Annotated[Optional[str], typer.Option(
    "--id", help="The full instance id (key::value[::suffix]) instead of WORKFLOW VALUE.")]
WorkflowArg = Annotated[Optional[str], typer.Argument(help="Workflow name.")]
ValueArg = Annotated[Optional[str], typer.Argument(help="Business value.")]


def _print_version(value: bool) -> None:
    if value:
        from heph import __version__

        commands.echo(f"heph {__version__}")
        raise typer.Exit()


@cli.callback()
def main(
    config: Annotated[Optional[str], typer.Option(
        "--config", help="Path of heph.yaml (default: $HEPH_CONFIG, else the nearest heph.yaml).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of refused commands.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print heph's version and exit.")] = False,
) -> None:
    """Start, resume, inspect, cancel and retry workflow instances stored next to your project."""
    commands.configure(config, debug)
