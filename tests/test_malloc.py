"""nnscratch.malloc.keep_freed_memory(): freed memory is kept for reuse, so training steps stop
faulting pages in. (That importing nnscratch alone leaves malloc alone is
tests/test_import_side_effects.py.)

Page faults are counted (``ru_minflt``), not timed: the count is a property of the allocation
pattern, not of how busy the machine is.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="the settings are glibc's"
)

CHILD = r"""
import json, resource, sys
import numpy as np
import nnscratch
from nnscratch import malloc, models

returned = malloc.keep_freed_memory()  # what a training script does first

net = models.seed_net()
optimizer = nnscratch.SGD(net.parameters(), lr=0.01, momentum=0.9)
criterion = nnscratch.NLLLoss()
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (64, 1, 28, 28)).astype(np.float32)
t = rng.integers(0, 10, 64)

def step():
    optimizer.zero_grad()
    criterion(net(x), t)
    net.backward(criterion.backward(), need_input_grad=False)
    optimizer.step()

steps = int(sys.argv[1])
for _ in range(steps):  # warm-up: the heap grows to its working size (within ~8 steps)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(steps):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / max(steps, 1)
print(json.dumps({"applied": malloc.applied, "returned": returned, "faults_per_step": faults}))
"""


def run_child(steps, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NNSCRATCH_KEEP"))}
    environment.update(env, NNSCRATCH_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@glibc_only
def test_training_steps_stop_faulting_pages_in():
    kept = run_child(10)
    assert kept["applied"] is True and kept["returned"] is True
    # each step allocates ~100 MB; with the settings the heap is reused, so a step faults in at
    # most a few pages (about 900 per step without them, see nnscratch/malloc.py)
    assert kept["faults_per_step"] < 100, kept


@glibc_only
@pytest.mark.parametrize("env", [{"NNSCRATCH_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"}], ids=["opt-out", "user-trim", "user-mmap"])
def test_the_users_choice_wins(env):
    result = run_child(0, **env)
    assert result["applied"] is False and result["returned"] is False
