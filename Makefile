# Set-up, the demo and the tests in one place. Every target creates the virtual environment
# (.venv, from requirements.txt) the first time it is needed; nothing else must be installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv

venv: $(VENV)/.ready

$(VENV)/.ready: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# the main job on the embedded `digits` data set (no download): train Gaussian, MACER and SmoothAdv,
# certify them on the same images, draw the comparison (reproduce/demo.sh)
demo: venv
	PYTHON=$(PY) bash reproduce/demo.sh

test: venv
	$(PY) -m pytest -q --durations=20 tests
