# Everything runs from a local virtual environment that these targets create; torch is pinned through
# constraints.txt (2.13.0, a CPU wheel here) so that nothing pulls CUDA packages.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

# The main job on a bundled fixture: PyTorch -> ONNX with a dynamic batch, validated, then inspected.
demo: install
	mkdir -p build
	$(VENV)/bin/mdeploy convert fixtures/models/tiny_cnn.py:build -o build/tiny_cnn.onnx --dynamic image:0 --force
	$(VENV)/bin/mdeploy inspect build/tiny_cnn.onnx

# Two workers by default (CI has 2 cores); each test file stays on one worker so its fixtures are built once.
PYTEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

bench: install
	$(PY) benchmarks/startup.py

clean:
	rm -rf build .pytest_cache
