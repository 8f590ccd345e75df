# The two entry points of the README. Both create the virtual environment and install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The real MNIST: the course's copy beside the checkout unless MNIST_DIR names another folder.
MNIST_DIR ?= $(wildcard ../shared/data/mnist)
export MNIST_DIR := $(if $(MNIST_DIR),$(abspath $(MNIST_DIR)),)

.PHONY: demo test test-fast install

demo: $(VENV)/.installed  ## release both labs, then grade each lab's bundled sample submissions
	$(VENV)/bin/autograder release
	$(VENV)/bin/autograder grade samples/cnn_mnist --assignment cnn_mnist --out out/demo/cnn_mnist
	$(VENV)/bin/autograder grade samples/mlp_mnist --assignment mlp_mnist --out out/demo/mlp_mnist

test: $(VENV)/.installed  ## run the test suite
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed  ## the tests without sandboxes, training or notebooks: while working
	$(PY) -m pytest -q -m "not slow and not sandbox and not notebook"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq bubblewrap) \
		|| echo "warning: bubblewrap (bwrap) is missing: grading will run without a sandbox. Install the 'bubblewrap' package."; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $@
