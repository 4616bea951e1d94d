"""The ``heph`` command line: the Typer app (app), its commands (main, admin; the work in commands),
project loading (project), output (plain for pipes, render with rich for terminals, graph, text)."""
