# Common tasks. Each target is one command you can also run by hand.
.PHONY: install test lint format styles smoke bench

install:  ## install fastst with the tested, pinned versions
	python -m pip install -c constraints.txt -e ".[dev]"

test:  ## the test suite (offline, CPU, a few minutes)
	python -m pytest

lint:  ## ruff lint + format check
	ruff check . && ruff format --check .

format:  ## apply ruff formatting and safe fixes
	ruff check --fix . && ruff format .

styles:  ## download the shipped style images into ~/.cache/fastst/styles now (e.g. on a login node)
	fastst styles --fetch

smoke:  ## 4 training steps on ../shared data with random VGG weights
	fastst train debug=fast data.root=../shared/data/photos paths.style_dir=../shared/data/styles \
		loss.weights=random hydra.run.dir=logs/smoke

bench:  ## reduced speed benchmark against plain PyTorch (minutes), see docs/benchmarks.md
	fastst bench --quick --json bench.json
