# The two things a newcomer types: `make demo` and `make test` (as root: the lab starts dockerd).
# Everything else here is what those two need; .ci/run calls `make test` on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two pytest-xdist workers: the session lab's tests on one, the scenarios with labs of their own (overlay,
# upgrade, molecule) and the unit tests on the other (tests/conftest.py's scheduler; in collection order,
# so the session lab starts first). PYTEST_PARALLEL= runs everything in one process.
PYTEST_PARALLEL ?= -n 2 --no-loadscope-reorder

.PHONY: demo test lint unit venv clean-lab

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint --strict .
	# ansible.cfg's default inventory (inventory/) has no mesh on a fresh clone: lint with the example.
	PATH="$(CURDIR)/$(BIN):$$PATH" ANSIBLE_INVENTORY=inventory/example.mesh.yml $(BIN)/ansible-lint --strict

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: lint
	rc=0; $(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing" >&2; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/meshctl demo

clean-lab: $(STAMP)
	$(BIN)/meshctl lab down --all
