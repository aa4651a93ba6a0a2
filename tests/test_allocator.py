"""The allocator tuning: after `reuse_freed_memory()`, freed large blocks are reused, not
re-faulted; importing sgn_theano alone changes nothing."""

import os
import platform
import subprocess
import sys

import pytest

from sgn_theano.compilation.allocator import reuse_freed_memory

# After importing sgn_theano (and calling `reuse_freed_memory()` if argv[1] says so),
# allocates six 8 MiB arrays and frees them, 20 times, and prints the minor page faults of
# those rounds: with glibc's defaults the 48 MiB freed at the top of the heap are trimmed
# each round and faulted back in the next (thousands of faults a round); with the tuning
# the heap keeps them.
FAULTS = """
import resource, sys, numpy as np, sgn_theano
if sys.argv[1] == "call":
    sgn_theano.reuse_freed_memory()
def one_round():
    arrays = [np.ones(2**21, np.float32) for _ in range(6)]
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(call: bool, tuning: str = "1") -> int:
    environment = dict(os.environ, SGN_THEANO_MALLOC_TUNING=tuning)
    completed = subprocess.run([sys.executable, "-c", FAULTS, "call" if call else "import"],
                               env=environment, capture_output=True, text=True, check=True)
    return int(completed.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's")
def test_the_call_makes_malloc_reuse_freed_blocks_and_the_import_does_not():
    assert page_faults(call=False) > 20 * 1000  # 48 MiB a round is 12288 pages
    assert page_faults(call=True) < 20 * 100
    assert page_faults(call=True, tuning="0") > 20 * 1000


def test_the_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SGN_THEANO_MALLOC_TUNING", "0")
    assert reuse_freed_memory() is False
