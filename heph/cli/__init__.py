"""The ``heph`` command line: Typer commands (main), project loading (project), output (render, graph)."""
