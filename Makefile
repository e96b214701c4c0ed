# The single source of how to install and run sentistream.  `make demo` and `make test` work on a
# fresh clone: each creates .venv if it is missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-without-data lint bench clean constraints browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# After changing dependencies in pyproject.toml: install them, then pin what the venv now holds.
constraints:
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable --disable-pip-version-check; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

demo: install
	$(VENV)/bin/sentistream demo

test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest

# The dashboard's browser test drives Debian's headless chromium (Playwright cannot download browsers
# here).  Installed when missing and we are root; otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			|| echo "chromium could not be installed: the dashboard's browser test will skip"; \
		else echo "chromium/chromedriver missing and not root: the dashboard's browser test will skip"; fi; }

# The model tests as a fresh clone without ../shared/data runs them: the data folder is an empty
# directory, only full-data-set evaluations (marked dataset) may skip, any other skip fails.
test-without-data: install
	empty=$$(mktemp -d) && status=0 && SENTISTREAM_DATA_DIR=$$empty $(PY) -m pytest tests/model \
		tests/bench/test_bench_results.py -m "not slow" -q --only-dataset-skips || status=$$?; \
		rmdir $$empty; exit $$status

# Default-size benchmarks (a few minutes each); results are appended to bench/RESULTS.md.
bench: install
	$(PY) -m bench.sink
	$(PY) -m bench.inference
	$(PY) -m bench.pipeline
	$(PY) -m bench.accuracy

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
