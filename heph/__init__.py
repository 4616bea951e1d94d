"""heph: a durable workflow engine for Python, driven from the command line."""

__version__ = "0.1.0"
