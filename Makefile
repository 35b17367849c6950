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

# the main job on the embedded `digits` data set (no download): train MACER, certify, write the .mat
demo: venv
	$(PY) main.py --task train --preset digits-macer-0.25 --ckptdir runs/demo/macer --matdir runs/demo/macer \
		--resume_ckpt auto --start_img 0 --num_img 500 --skip 2 --N 10000

test: venv
	$(PY) -m pytest -q tests
