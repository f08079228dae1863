"""The one error type of the native stack: its message is printed as is, exit status 1."""


class StackError(RuntimeError):
    pass
