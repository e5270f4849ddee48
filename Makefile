# Two entry points, both for a fresh clone on Linux:
#   make run   - set up .venv and start lanray-tui
#   make test  - set up everything (Debian packages too, when root) and run the whole suite
.PHONY: run test lint clean

run:
	@scripts/setup.sh
	.venv/bin/lanray-tui $(ARGS)

test:
	@scripts/test.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
