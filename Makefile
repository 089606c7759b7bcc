# The README's two commands are `make demo` and `make test`; CI runs `make test` and `make lint`.
# The venv gets the dev extra (workbench + test tools); `pip install routerlab` alone is the production router.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Public datasets are read from the mirror beside the repo when it exists (CI provides it), else downloaded
# from their pinned public URLs. An explicit ROUTERLAB_MIRROR in the environment wins.
MIRROR_BESIDE := $(abspath ../shared/datasets/github)
ifneq ($(wildcard $(MIRROR_BESIDE)),)
export ROUTERLAB_MIRROR ?= $(MIRROR_BESIDE)
endif

.PHONY: install demo test lint lab bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/routerlab demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check routerlab tests benchmarks
	$(VENV)/bin/ruff format --check routerlab tests benchmarks
	$(VENV)/bin/mypy --strict routerlab

bench: install
	cd benchmarks && for b in bench_replay bench_sweep bench_scale bench_build bench_storage bench_rouge bench_overhead fault_load bench_explorer; do ../$(PY) $$b.py || exit 1; done

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .routerlab-data reports
