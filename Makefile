# Common tasks. Each target is one command you can also run by hand.
.PHONY: install test lint format smoke

install:  ## install fastst with the tested, pinned versions
	python -m pip install -c constraints.txt -e ".[dev]"

test:  ## the test suite (offline, CPU, about a minute)
	python -m pytest

lint:  ## ruff lint + format check
	ruff check . && ruff format --check .

format:  ## apply ruff formatting and safe fixes
	ruff check --fix . && ruff format .

smoke:  ## 4 training steps on ../shared data with random VGG weights
	python train.py debug=fast data.root=../shared/data/photos paths.style_dir=../shared/data/styles \
		loss.weights=random hydra.run.dir=logs/smoke
