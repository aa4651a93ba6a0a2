"""The allocator tuning applied on import: freed large blocks are reused, not re-faulted."""

import os
import platform
import subprocess
import sys

import pytest

from sgn_theano.allocator import reuse_freed_memory

# After importing sgn_theano, allocates six 8 MiB arrays and frees them, 20 times, and
# prints the minor page faults of those rounds: with glibc's defaults the 48 MiB freed at
# the top of the heap are trimmed each round and faulted back in the next (thousands of
# faults a round); with the tuning the heap keeps them.
FAULTS = """
import resource, numpy as np, sgn_theano
def one_round():
    arrays = [np.ones(2**21, np.float32) for _ in range(6)]
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(tuning: str) -> int:
    environment = dict(os.environ, SGN_THEANO_MALLOC_TUNING=tuning)
    completed = subprocess.run([sys.executable, "-c", FAULTS], env=environment,
                               capture_output=True, text=True, check=True)
    return int(completed.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's")
def test_import_makes_malloc_reuse_freed_blocks():
    assert page_faults("0") > 20 * 1000  # 48 MiB a round is 12288 pages
    assert page_faults("1") < 20 * 100


def test_the_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SGN_THEANO_MALLOC_TUNING", "0")
    assert reuse_freed_memory() is False
