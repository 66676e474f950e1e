"""Demo module 13."""

def handler_13(x):
    return x * 13
