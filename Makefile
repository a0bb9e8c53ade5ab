# Developer entry points. `make test` is what the README and CI (.ci/run) run.
# Pass pytest arguments with ARGS, e.g.  make test ARGS="-k kafka -x"
SHELL := /bin/bash
ARGS ?=
SVC ?= all

.PHONY: test install services-start services-stop services-status lint clean

test:
	scripts/test.sh $(ARGS)

install:
	AGENTFLOW_TEST_STEPS=install scripts/test.sh

lint:
	AGENTFLOW_TEST_STEPS="ruff mypy stubtest" scripts/test.sh

services-start:
	scripts/services.sh start $(SVC)

services-stop:
	scripts/services.sh stop $(SVC)

services-status:
	scripts/services.sh status $(SVC)

clean:
	rm -rf target rust_ext/target .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
