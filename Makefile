# One command sets everything up and runs the main job on the built-in example (`make demo`);
# one runs the tests (`make test`). Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lascarseg-installed
DEMO_OUT ?= demo-output

.PHONY: setup demo test clean-demo

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-gigabyte CUDA build.
# slicer-core (test extra) pins vtk itself; vtk is never pinned here.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lascarseg demo --out $(DEMO_OUT) --overwrite

test: setup
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_OUT)
