# Two entry points: `make run` (whole system, locally) and `make test` (everything CI checks).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --editable .
	touch $(STAMP)

install: $(STAMP)

test: install
	bash scripts/apt-install.sh chromium chromium fonts-dejavu-core
	bash scripts/apt-install.sh firefox-esr firefox-esr fonts-dejavu-core
	bash scripts/apt-install.sh redis-sentinel redis-server redis-sentinel redis-tools
	bash scripts/apt-install.sh openssl openssl
	$(BIN)/python -m pytest

run: install
	@mkdir -p var
	@echo "Starting Redis, 2 simulated GPUs (ComfyUI simulators), 2 GPU workers, the web tier and Flower."
	@echo "  Web form: http://$${WEB_HOST:-127.0.0.1}:$${WEB_PORT:-8000}/"
	@echo "  Flower:   http://$${FLOWER_HOST:-127.0.0.1}:$${FLOWER_PORT:-5555}/"
	@echo "Ctrl-C stops everything."
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start
