"""The lab of the roles' Molecule scenarios: `lab.py up N` and `lab.py down` (run by create.yml, destroy.yml).

It has its own name, /24 and directory, so it never touches the test suite's lab (rmtest, 172.31.78.0/24)
or the demo's (rmlab, 172.31.77.0/24). The name is always given explicitly: a lab directory without its
lab.json would otherwise stand for the demo lab.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from replimesh.lab.errors import LabError
from replimesh.lab.lab import Lab, LabConfig

# REPLIMESH_TEST_SLOT=N (1-6) gives a second test run (another work tree) its own molecule lab too.
SLOT = int(os.environ.get("REPLIMESH_TEST_SLOT", "0"))
CONFIG = (
    LabConfig(name="rmmol", subnet="172.31.81.0/24")
    if SLOT == 0
    # The same subnets as tests/conftest.py's slot_lab_config("mol", 3).
    else LabConfig(name=f"rmmol{SLOT}", subnet=f"172.31.{28 + 8 * (SLOT - 1) + 3}.0/24")
)
# One fixed directory per slot: a lab left behind by any interrupted scenario is found and removed.
LAB_DIR = Path("/tmp/replimesh-molecule" + (f"-{SLOT}" if SLOT else ""))
USAGE = "usage: lab.py up N | down"


def main(argv: list[str]) -> int:
    lab = Lab(LAB_DIR, CONFIG, log=lambda msg: print(f"[lab {CONFIG.name}] {msg}"))
    try:
        if argv[:1] == ["up"] and len(argv) == 2 and argv[1].isdigit():
            lab.up(int(argv[1]))
            print(f"inventory: {lab.inventory_path}")
        elif argv == ["down"]:
            lab.down()
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except LabError as exc:
        print(f"lab {CONFIG.name}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
