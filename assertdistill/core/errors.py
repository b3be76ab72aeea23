"""Errors shared by several modules, defined below them so no module imports another only for its error."""


class ModelLoadError(Exception):
    """A model, config or tokenizer that cannot be loaded, reported as one clear line."""
