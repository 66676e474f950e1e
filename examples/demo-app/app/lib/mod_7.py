"""Demo module 7."""

def handler_7(x):
    return x * 7
