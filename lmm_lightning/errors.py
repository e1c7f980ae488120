"""Errors caused by what the user gave (config, task, data, model folder): shown as one message, exit code 2."""


class InputError(ValueError):
    """Bad input: the message says what, where, and what was expected."""


EXIT_INPUT_ERROR = 2
EXIT_FAILURE = 1
