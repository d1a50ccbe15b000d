"""What every client script here does on a failure: name the call and exit non-zero."""
import sys
import time


def check(name, condition, detail):
    if not condition:
        sys.exit(f"{name}: {detail}")


def wait(name, condition, seconds=30, every=0.3):
    """`condition()`'s first true value within `seconds`, else the failure."""
    deadline = time.time() + seconds
    while True:
        result = condition()
        if result:
            return result
        check(name, time.time() < deadline, f"not true after {seconds} s")
        time.sleep(every)
