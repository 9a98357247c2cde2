# Two commands set up a fresh machine: `make bench` (default benchmark, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# pyproject.toml declares ranges; constraints.txt pins the exact versions the references and CI use.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

.PHONY: install bench test test-all lint browser weights fashion-data
install: $(STAMP)

# The leaderboard page's browser test drives Debian's headless Chromium (tests/test_site.py):
# installed here when missing and we are root with apt (as on CI); never downloaded otherwise.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver >/dev/null; \
	  else \
	    echo "note: chromium / chromium-driver missing and not root: the browser test skips (it fails under CI)"; \
	  fi; \
	fi

# Full Fashion-MNIST offline: Debian's dataset-fashion-mnist (installed when missing, as root with apt).
fashion-data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; fi

# Retrain the reference weights zoo (bench/zoo/zoo.toml): two single-threaded trainers side by side
# (the longest model alone in one), each line saying whether the new weights equal the shipped ones.
# SHIP=1 writes them into bench/zoo with their provenance (refused from a dirty tree).
LONG := mnist/countergan-adaptive-long
weights: $(STAMP) fashion-data
	$(PY) -m bench weights --only $(LONG) $(if $(SHIP),--ship) & long=$$!; \
	$(PY) -m bench weights --skip $(LONG) $(if $(SHIP),--ship); rest=$$?; wait $$long && exit $$rest

bench: $(STAMP)
	$(PY) -m bench --offline

# The committed reference grids (results/reference/<grid>/), each run by its own grid.toml (its
# steps: runs, adequacy sweeps, the report and README/page blocks), and README's headline, all
# computed from the shipped weights zoo (bench/zoo) by one clean commit: the runner refuses to
# write under results/reference/ from a dirty tree. A regeneration starts from empty runs/ folders
# (the records it replaces stay in git history). `make verify` recomputes a sample.
REF := results/reference
GRIDS := default label-leak threat-matrix threat-matrix-aa fashion-threat-matrix defensegan adaptive ranking-n500
.PHONY: reference verify headline site $(GRIDS)
reference: $(GRIDS) headline site

$(GRIDS): $(STAMP) fashion-data
	$(PY) -m bench grid $(REF)/$@

# Every reference grid and the GPU run's grids (GPU_RUN, GPU_GRIDS below) on one leaderboard page
# (docs/site/index.html), rows best first by their worst case over every attack and threat model on
# any device: README's headline numbers, from the same function; its links point into each grid's
# folder, its lead plots (worst case against defense ms/sample) are drawn beside it.
comma := ,
site: $(STAMP)
	$(PY) -m bench report --results-dir docs --site-from $(subst $() ,$(comma),$(addprefix $(REF)/,$(GRIDS)) $(addprefix $(GPU_RUN)/,$(GPU_GRIDS)))

# README's headline: each defense's worst case over every attack and threat model (MNIST at eps 0.3,
# Fashion-MNIST at 0.1, the grids' budgets), every stored cell of a row counting on any device: with
# AutoAttack's components on 500 images from the GPU run below, and its cascade on 500 images for
# every MNIST row above 0.05 under every threat model (ranking-n500, CPU).
headline: $(STAMP)
	$(PY) -m bench report --readme README.md --headline $(REF)/threat-matrix,$(REF)/threat-matrix-aa,$(REF)/adaptive,$(REF)/ranking-n500,$(REF)/fashion-threat-matrix,$(GPU_RUN)/autoattack-n500 --headline-eps 0.3,fashion-mnist=0.1

# Measurements made on a GPU machine (results/gpu/<date>-<gpu>/, each folder's PROVENANCE.md and
# grid.toml name the commands run there). `make gpu-table`: their reports, from their records, and
# docs/results/devices.md's devices block (CPU beside GPU: the default grid, DefenseGAN against the counterGAN preset,
# DefenseGAN's reconstruction). Nothing is computed: records only.
GPU_RUN := results/gpu/2026-12-04-h200
GPU_GRIDS := default-grid-and-defensegan autoattack-n500
.PHONY: gpu-table
gpu-table: $(STAMP)
	for g in $(GPU_GRIDS); do $(PY) -m bench report --results-dir $(GPU_RUN)/$$g || exit 1; done
	$(PY) -m bench report --readme docs/results/devices.md --devices $(REF)/default,$(GPU_RUN)/default-grid-and-defensegan --devices-from $(REF)/defensegan,$(REF)/threat-matrix,$(GPU_RUN)/reconstruction

# Recompute the 3 cheapest cells of the default reference grid from their stored identity (CI runs
# the same check in tests/test_reference.py); `make verify N=` more cells, `N=all` every one.
N ?= 3
verify: $(STAMP)
	$(PY) -m bench verify --results-dir $(REF)/default $(if $(filter all,$(N)),,--sample $(N))

# Guard-rails first (seconds): ruff's lint and format check over the whole tree, mypy over all of
# bench/ (pyproject.toml, [tool.ruff] and [tool.mypy]); then the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Two xdist workers, one per core (tests/conftest.py gives each one torch thread); a file's tests
# stay on one worker (--dist loadfile), so module fixtures and session caches are built once per file.
test: $(STAMP) browser lint
	WANDB_MODE=disabled WANDB_SILENT=true $(PY) -m pytest -q -n 2 --dist loadfile

test-all: $(STAMP) browser
	WANDB_MODE=disabled WANDB_SILENT=true $(PY) -m pytest -q -m ''

# The GPU script (tools/gpu.py): an environment check, the plan (tools/gpu_plan.toml, a grid file run
# by `python -m bench grid` with the time left) and a packer. `make gpu-wheels`, here with network:
# the pure-Python wheels the GPU machine lacks (torchattacks, mlxtend) into wheels/ (ignored; carry
# it). `make gpu` on the GPU machine, with its python3 and PYTHONPATH=. (the project is not
# pip-installed there): ≤ 9 minutes, first the ranking rows at n = 1,000, packed into $OUT.
# `make gpu DRY_RUN=1`: tools/gpu_plan_dry.toml on CPU at toy sizes, as CI runs it.
GPU_DRY := $(filter-out 0 no false,$(DRY_RUN))
GPU_PY := $(if $(GPU_DRY)$(wildcard $(PY)),$(PY),python3)
.PHONY: gpu gpu-wheels
gpu-wheels: $(STAMP)
	$(PY) -m tools.gpu --prepare

gpu: $(if $(GPU_DRY),$(STAMP))
	PYTHONPATH=. WANDB_MODE=disabled $(GPU_PY) -m tools.gpu $(if $(GPU_DRY),--dry-run)
