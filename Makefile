# Two entry points, both for a fresh clone on Linux:
#   make run   - set up .venv and start lanray-tui
#   make test  - set up everything (Debian packages too, when root) and run the whole suite
.PHONY: run test storm elastic lint clean

run:
	@scripts/setup.sh
	.venv/bin/lanray-tui $(ARGS)

test:
	@scripts/test.sh

# The storm tier (8 lab nodes joining at once, 1.5-2.5 min): kept out of 'make test' so the
# suite stays under 15 minutes on a 2-core machine.
storm:
	@scripts/test.sh -m storm tests/storm

# The elastic tier (a training run shrinks when its lent machine's owner comes back and
# grows back when it is lent again, about 3 min): out of 'make test' for the same reason.
elastic:
	@scripts/test.sh -m elastic tests/elastic

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
