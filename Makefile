# p: push jobs to workers. `make demo` installs and shows it; `make test` tests it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := $(shell find p agent p_protocol -name '*.py' -o -name 'manifest.json') pyproject.toml

.PHONY: deps install demo demo-stop test lint bench agents qemu-tests clean

deps:
	bash tools/install-deps.sh

# A venv of p's own: its startup skips whatever .pth files the system has.
$(BIN)/p: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check ".[test]"
	@touch $@

install: deps $(BIN)/p
	@echo "p is installed: $(abspath $(BIN)/p)  (add $(abspath $(BIN)) to PATH)"

demo: install
	$(BIN)/python tools/demo.py

demo-stop:
	$(BIN)/python tools/demo.py --stop

# What the tests use besides p's own needs: a real Slurm (munge, slurmctld,
# slurmd), iptables to cut links, and the tools jobs run (git, less).
TEST_DEPS := slurmctld slurmd slurm-client munge iptables git less procps iproute2 util-linux

test: install
	bash tools/install-deps.sh $(TEST_DEPS)
	$(BIN)/ruff check .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests

# The agents' figures need `make agents` first (and root, for their rootfs).
bench: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/run.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/agents.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/slurm.py

agents:
	bash build/build-agents.sh

qemu-tests: install
	bash qemu-tests/run.sh

clean:
	rm -rf $(VENV) build/lib build/bdist.* *.egg-info
