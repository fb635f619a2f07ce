"""A stand-in for PyPA's get-pip.py, which ansible-test downloads from ci-files.testing.ansible.com to put pip
into each of its sanity venvs: a closed network reaches PyPI (or a mirror) but not that host.

Run by ansible-test in a new venv without pip, with get-pip's arguments (pip==VERSION and options): the
standard library's ensurepip puts its own pip there, which then installs what get-pip would.
"""

import ensurepip
import os
import subprocess
import sys

# ensurepip sets PIP_CONFIG_FILE=/dev/null in this process: the pip run after it reads the machine's config.
ENV = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
ARGS = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *ARGS], env=ENV))
