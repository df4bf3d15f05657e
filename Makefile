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

# The project's photos, style images and VGG-16 weights, beside the checkout; `make bench SHARED=DIR` for another.
SHARED ?= ../shared
# `FLAG $(SHARED)/PATH` when that path exists; without it fastst bench uses its synthetic stand-ins.
shared_flag = $(if $(wildcard $(SHARED)/$(2)),$(1) $(SHARED)/$(2))

bench:  ## reduced speed benchmark against plain PyTorch (minutes), see docs/benchmarks.md
	fastst bench --quick --json bench.json $(call shared_flag,--data,data/photos) \
		$(call shared_flag,--style,data/styles/starry_night.jpg) \
		$(call shared_flag,--vgg16-weights,weights/vgg16_caffe_conv.pth)
