# Eve — the two commands:  `make run`  and  `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := .make

.PHONY: run test test-fast lint setup setup-dev data

# the app opens on Shapes (built in seconds) while SynthBrain and the explorer's banks are drawn in the
# background (log: data/build.log); SynthBrain's sidebar entry shows its progress until it is ready
run: setup
	$(PY) -m engine build-data shapes
	$(PY) -m engine build-data --banks --background
	$(PY) -m streamlit run app.py

# every tier (CI runs this), the 25 slowest tests listed at the end
test: setup-dev data lint
	$(PY) -m pytest --durations=25

# the developer loop: no browser, app, cluster or slow tier (tests/conftest.py says which is which)
test-fast: setup-dev data
	$(PY) -m pytest -m "not browser and not app and not cluster and not slow" -q

# ruff's lint rules and its formatter, as configured in pyproject.toml
lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

setup: $(STAMP)/requirements
setup-dev: $(STAMP)/requirements-dev $(STAMP)/chromium $(STAMP)/t1-data

$(STAMP)/requirements: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	mkdir -p $(STAMP) && touch $@

$(STAMP)/requirements-dev: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	mkdir -p $(STAMP) && touch $@ $(STAMP)/requirements

# Browser tests drive Debian's Chromium, never a downloaded browser build.
$(STAMP)/chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	mkdir -p $(STAMP) && touch $@

# Real T1 files other tools wrote, for the tests: Colin27 in MNI space (mricron-data) and a native-space
# head T1 (insighttoolkit5-examples), from Debian's packages.
T1_FILES := /usr/share/mricron/templates/ch2.nii.gz /usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz
$(STAMP)/t1-data:
	ls $(T1_FILES) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mricron-data insighttoolkit5-examples)
	ls $(T1_FILES) >/dev/null
	mkdir -p $(STAMP) && touch $@

# Builds the embedded default datasets when missing (progress bars; ~5 min on 2 cores).
data: setup
	$(PY) -m engine build-data
