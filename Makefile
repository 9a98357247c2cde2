# Two commands set up a fresh machine: `make bench` (default benchmark, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

.PHONY: install bench reference threat-matrix defensegan adaptive test test-all browser weights fashion-data
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

# The committed reference grids (results/reference/<grid>/) and the README tables generated from
# them, all computed from the shipped weights zoo (bench/zoo) by one clean commit: the runner
# refuses to write under results/reference/ from a dirty tree. A regeneration starts from empty
# runs/ folders (the records it replaces stay in git history). `make verify` recomputes a sample.
REF := results/reference
.PHONY: reference reference-default label-leak verify headline
reference: reference-default label-leak threat-matrix defensegan adaptive headline

# README's headline: each defense's worst case over every attack and threat model at eps 0.3.
headline: $(STAMP)
	$(PY) -m bench report --readme README.md --headline $(REF)/threat-matrix,$(REF)/adaptive --headline-eps 0.3

reference-default: $(STAMP)
	$(PY) -m bench --offline --results-dir $(REF)/default
	$(PY) -m bench report --results-dir $(REF)/default --readme README.md --readme-block results --html

# Label leaking: the counterGAN preset with true-label and predicted-label FGSM, Fashion-MNIST (2,000
# test images, eps 0.1 and 0.3) and MNIST (the default grid's 1,000 images, eps 0.3).
LL := --offline --results-dir $(REF)/label-leak --defenses none,countergan --attack fgsm
label-leak: $(STAMP) fashion-data
	$(PY) -m bench $(LL) --dataset fashion-mnist --eps 0.1,0.3 --limit 2000 --attack-labels true
	$(PY) -m bench $(LL) --dataset fashion-mnist --eps 0.1,0.3 --limit 2000 --attack-labels predicted
	$(PY) -m bench $(LL) --attack-labels true
	$(PY) -m bench $(LL) --attack-labels predicted
	$(PY) -m bench report --results-dir $(REF)/label-leak

threat-matrix: $(STAMP)
	$(PY) -m bench --config $(REF)/threat-matrix/grid.toml
	$(PY) -m bench --config $(REF)/threat-matrix/grid.toml --classifier mnist-cnn-pgdat --defenses none
	$(PY) -m bench adequacy --config $(REF)/threat-matrix/grid.toml --defenses bitdepth --attack pgd --threat bpda --steps 40,100,200 --restarts 1,5
	$(PY) -m bench report --results-dir $(REF)/threat-matrix --readme docs/results/threat-matrix.md --readme-block threat-matrix

# DefenseGAN on the shipped generator, the paper's reconstruction beside every named variant in
# one run, then the paper's "Rec" setting (a classifier trained on reconstructions).
DG := --offline --results-dir $(REF)/defensegan --attack fgsm --eps 0.3 --limit 500
defensegan: $(STAMP)
	$(PY) -m bench $(DG) --defenses none,defensegan,defensegan-prior,defensegan-lrcut,defensegan-fast,defensegan-prior-fast
	$(PY) -m bench $(DG) --classifier mnist-cnn-rec --defenses none,defensegan-fast,defensegan
	$(PY) -m bench report --results-dir $(REF)/defensegan --readme docs/results/defensegan.md --readme-block defensegan

# The adaptive counterGAN beside the preset and the PGD-trained classifier at three eps, BPDA at
# 0.3, then the sanity checks a robust claim needs: more steps and restarts (adequacy sweep),
# unbounded eps, and a gradient-free attack (Square).
ADA := --offline --results-dir $(REF)/adaptive --limit 500
adaptive: $(STAMP)
	$(PY) -m bench $(ADA) --defenses none,countergan,countergan-adaptive,countergan-adaptive-long --attack fgsm,pgd --eps 0.1,0.2,0.3 --threat gray,white
	$(PY) -m bench $(ADA) --defenses countergan-adaptive,countergan-adaptive-long --attack fgsm,pgd --eps 0.3 --threat gray,white,bpda
	$(PY) -m bench $(ADA) --classifier mnist-cnn-pgdat --defenses none --attack fgsm,pgd --eps 0.1,0.2,0.3 --threat gray,white
	$(PY) -m bench adequacy $(ADA) --defenses countergan-adaptive,countergan-adaptive-long --attack pgd --eps 0.3 --threat white
	$(PY) -m bench $(ADA) --defenses none,countergan-adaptive,countergan-adaptive-long --attack pgd --eps 0.5,1.0 --threat white
	$(PY) -m bench --config $(REF)/adaptive/square.toml
	$(PY) -m bench report --results-dir $(REF)/adaptive --readme docs/results/adaptive.md --readme-block adaptive

# Recompute the 3 cheapest cells of the default reference grid from their stored identity (CI runs
# the same check in tests/test_reference.py); `make verify N=` more cells, `N=all` every one.
N ?= 3
verify: $(STAMP)
	$(PY) -m bench verify --results-dir $(REF)/default $(if $(filter all,$(N)),,--sample $(N))

test: $(STAMP) browser
	WANDB_MODE=disabled WANDB_SILENT=true $(PY) -m pytest -q

test-all: $(STAMP) browser
	WANDB_MODE=disabled WANDB_SILENT=true $(PY) -m pytest -q -m ''

# GPU wall-clock per sample (tools/gpu.py). `make gpu-wheels`, here with network:
# the pure-Python wheels the GPU machine lacks (torchattacks, mlxtend) into wheels/ (ignored; carry
# it). `make gpu` on the GPU machine: every step in ≤ 9 minutes with that machine's python3 and
# PYTHONPATH=. (the project is not pip-installed there), packed into $OUT. `make gpu DRY_RUN=1`:
# the same steps on CPU with tiny sizes, as CI runs them (tests/test_gpu_script.py).
GPU_DRY := $(filter-out 0 no false,$(DRY_RUN))
GPU_PY := $(if $(GPU_DRY)$(wildcard $(PY)),$(PY),python3)
.PHONY: gpu gpu-wheels
gpu-wheels: $(STAMP)
	$(PY) -m tools.gpu --prepare

gpu: $(if $(GPU_DRY),$(STAMP))
	PYTHONPATH=. WANDB_MODE=disabled $(GPU_PY) -m tools.gpu $(if $(GPU_DRY),--dry-run)
