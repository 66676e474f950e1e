"""Demo module 8."""

def handler_8(x):
    return x * 8
