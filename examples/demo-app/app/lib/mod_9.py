"""Demo module 9."""

def handler_9(x):
    return x * 9
