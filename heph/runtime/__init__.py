"""The runtime: the ``Hephaestus`` app, storage adapters, telemetry and the clock."""
