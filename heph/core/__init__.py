"""The pure core: authoring API, validation, instance values and the engine. No I/O."""
