"""The pyuvm environment's constrained-random knobs (verif/uvm_env.py DagKnobs): the
constraints hold, and one seed gives the same knobs in every process (SEED= reproduces a run)."""
import os
import secrets
import subprocess
import sys

from verif.uvm_env import DagKnobs

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**20))

_DRAW = ("from verif.uvm_env import DagKnobs\n"
         "k = DagKnobs()\n"
         "for s in range(SEED, SEED + 8):\n"
         "    k.randomize_seeded(s); print(k.jobs, k.queues, k.p_dep, k.p_compute, k.p_extra)\n")


def test_knobs_meet_their_constraints():
    print(f"SEED={SEED}")
    knobs = DagKnobs()
    seen = set()
    for s in range(SEED * 1000, SEED * 1000 + 200):
        knobs.randomize_seeded(s)
        assert knobs.jobs >= 4 * knobs.queues, (s, knobs.jobs, knobs.queues)
        assert knobs.queues > 1 or knobs.p_dep <= 0.5, (s, knobs.queues, knobs.p_dep)
        seen.add(knobs.queues)
    assert seen == {1, 2, 3, 4}


def test_one_seed_gives_the_same_knobs_in_every_process():
    """crv draws from Python's random and NumPy's global generator; a fresh process each time
    (string hashing and NumPy's state differ between processes)."""
    print(f"SEED={SEED}")
    code = _DRAW.replace("SEED", str(SEED))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0].splitlines()) == 8
