"""haste's exceptions: every error the engine reports arrives as a HasteError carrying the
command line's one-line message (naming the file and the problem)."""


class HasteError(Exception):
    """Any error haste reports."""


class InputError(HasteError, ValueError):
    """Bad input: a corrupt or unsupported model, a bad dataset, card or policy file, an
    argument out of range (the command line's exit code 2)."""


class InternalError(HasteError, RuntimeError):
    """A bug in haste, not a problem with the input (the command line's exit code 1)."""
