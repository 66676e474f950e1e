"""Demo module 11."""

def handler_11(x):
    return x * 11
