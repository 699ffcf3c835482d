# The README's two fresh-machine commands: `make demo` and `make test`.
# Each builds its own virtual environment from scratch (no system packages).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint venv clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "witness-failover needs Python >= 3.11")'
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '.[watcher,signer,devnet,drill,dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/witness-devnet demo

# lint-imports checks the package graph and the trust boundary (pyproject.toml,
# docs/architecture.md). It reads the sources from this directory, so it runs
# before the non-editable install below, like mypy.
lint: venv
	$(BIN)/ruff check shared devnet signer watcher drill tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

# Two phases: the suite on two workers (most tests wait on devnet slots, not on the
# CPU), then the final scan of every log that run wrote for secrets, which must come
# after all of them (tests/zz_final reads WITNESS_LOG_SCAN_DIR).
TESTTMP ?= $(CURDIR)/.pytest-tmp

test: venv lint
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall .
	rm -rf $(TESTTMP)
	$(BIN)/pytest -p no:cacheprovider -n 2 --basetemp=$(TESTTMP)/suite tests/unit tests/integration tests/e2e
	WITNESS_LOG_SCAN_DIR=$(TESTTMP)/suite $(BIN)/pytest -p no:cacheprovider --basetemp=$(TESTTMP)/scan tests/zz_final

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .pytest-tmp

# Mutation testing, not part of `make test` (minutes per module, CPU-heavy): mutmut over
# the decision and request-verification modules, one module at a time, each against
# its unit tests ([tool.mutmut] in pyproject.toml). One module: `make mutation
# MODULE=shared.sfv`. Survivors: `.venv/bin/mutmut results`; scores: docs/benchmarks.md.
MUTATION_MODULES ?= shared.sfv shared.httpsig_base shared.httpsig signer.policy watcher.core watcher.schedule
.PHONY: mutation
mutation: venv
	$(BIN)/python -m pip install --quiet '.[mutation]'
	for m in $(or $(MODULE),$(MUTATION_MODULES)); do $(BIN)/mutmut run --max-children 1 "$$m.*" || exit 1; done
	$(BIN)/mutmut results
