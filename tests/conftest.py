import os

# Each test and each script it starts uses one thread: on a 2-core machine, several torch processes with a thread
# pool each slow one another down several-fold.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long statistical checks, run with -m slow or MARBLER_SLOW=1")
