# Entry points; each calls a script so that CI and users run the same thing.
.PHONY: demo test docs lint format bench bench-edge bench-fleet soak scale footprint generate image

demo:
	scripts/demo

test:
	scripts/test

docs:
	.venv/bin/mkdocs serve

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

bench:
	scripts/setup --dev
	.venv/bin/python bench/engine_bench.py
	.venv/bin/python bench/access_bench.py
	.venv/bin/python bench/image_bench.py
	.venv/bin/python bench/experiments_bench.py

bench-edge:
	scripts/setup --dev
	.venv/bin/python bench/edge_bench.py

bench-fleet:
	scripts/setup --dev
	.venv/bin/python bench/fleet_bench.py

generate:
	.venv/bin/python -m edgepipe.crds --write
	.venv/bin/python -m edgepipe.engine.oip.generate --write

image:
	scripts/testimage

footprint:
	scripts/setup --dev
	.venv/bin/python bench/image_footprint.py
	.venv/bin/python bench/image_footprint.py --arm64 --test-model --arm64-runs 1

soak:
	scripts/setup --dev
	.venv/bin/python bench/soak.py --requests 10000 --clients 4

scale:
	scripts/setup --dev
	.venv/bin/python bench/operator_scale.py --sizes 100,200,500,1000
