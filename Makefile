# The two newcomer commands: `make demo` (set up, then run the main job on the built-in synthetic pair)
# and `make test` (set up, then run the test suite). Set-up is a local virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# This machine keeps a CPU wheel of torch 2.13.0 on disk; pinning it keeps pip from fetching a
# multi-GB CUDA build. On a GPU machine: make TORCH=torch
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.xlfast-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard csrc/cpu/*.cpp csrc/cpu/*.h csrc/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)" -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/xlfast demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[bench]" "$(TORCH)"
	$(BIN)/xlfast bench csls

clean:
	rm -rf $(VENV) build *.egg-info xlfast/*.so
