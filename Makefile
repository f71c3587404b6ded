# occlabel — developer entry points. `make test` is the test command CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# torch spec: 2.13.0 takes the local CPU wheel on the dev machines; override e.g. TORCH="torch==2.5.1".
TORCH ?= torch==2.13.0
EXTRAS ?= dev,nuscenes,kitti,scale
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean nuscenes kitti kitti-raw ddad

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	# one resolver call: nuscenes-devkit pins numpy<2, which must resolve together with torch and zarr
	$(BIN)/pip install -q "$(TORCH)" -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check occlabel tests scripts examples
	$(BIN)/ruff format --check occlabel tests scripts examples

test: install lint
	$(BIN)/pytest -q

demo: install
	$(BIN)/occlabel demo --out runs/demo

# Every stage on a real dataset (extract-2d -> calibrate-depth -> voxelize -> export occ3d -> evaluate when
# Occ3D ground truth (gts/) is there). MODELS passes extract-2d's model flags, e.g.
# MODELS="--depth-model oracle --semantic-model oracle" on a layout written by `occlabel synth --layout ...`.
# SPLIT and SCENES serve nuscenes and ddad.
VERSION ?= v1.0-mini
SPLIT ?=
SCENES ?=
GTS ?=
SEQ ?= 08
CAMERA ?= cam2
MODELS ?=
NUSCENES_OUT ?= runs/nuscenes-$(VERSION)$(if $(SPLIT),-$(SPLIT))
KITTI_GRID ?= semantickitti
KITTI_OUT ?= runs/kitti-$(SEQ)-$(CAMERA)
DRIVE ?=
KITTI_RAW_OUT ?= runs/kitti-raw-$(DRIVE)-$(CAMERA)
CAMERAS ?=
DDAD_OUT ?= runs/ddad$(if $(SPLIT),-$(SPLIT))$(if $(SCENES),-$(subst $(comma),_,$(SCENES)))
comma := ,

nuscenes: install
	@test -n "$(NUSCENES)" || { echo "usage: make nuscenes NUSCENES=/path/to/nuscenes [VERSION=v1.0-mini] [SPLIT=mini_val] [SCENES=scene-0061,scene-0103] [GTS=/path/to/occ3d/gts] [MODELS='--depth-model ... --semantic-model ...']" >&2; exit 2; }
	$(BIN)/occlabel extract-2d --dataset nuscenes --root "$(NUSCENES)" --version $(VERSION) \
		$(if $(SPLIT),--split $(SPLIT)) $(if $(SCENES),--dataset-option scenes=$(SCENES)) \
		$(if $(GTS),--dataset-option gts=$(GTS)) --out $(NUSCENES_OUT)/cache.zarr $(MODELS)
	$(BIN)/occlabel calibrate-depth $(NUSCENES_OUT)/cache.zarr
	$(BIN)/occlabel voxelize $(NUSCENES_OUT)/cache.zarr --out $(NUSCENES_OUT)/labels.zarr --grid occ3d
	$(BIN)/occlabel export $(NUSCENES_OUT)/labels.zarr --format occ3d --out $(NUSCENES_OUT)/occ3d
	@if [ -n "$(GTS)" ] || [ -d "$(NUSCENES)/gts" ]; then \
		$(BIN)/occlabel evaluate $(NUSCENES_OUT)/labels.zarr --json $(NUSCENES_OUT)/eval.json; \
	else echo "no $(NUSCENES)/gts (Occ3D ground truth): evaluation skipped"; fi

kitti: install
	@test -n "$(KITTI)" || { echo "usage: make kitti KITTI=/path/to/kitti/dataset SEQ=08 [CAMERA=cam2] [KITTI_GRID=semantickitti|occ3d] [MODELS='--depth-model ... --semantic-model ...']" >&2; exit 2; }
	$(BIN)/occlabel extract-2d --dataset kitti --root "$(KITTI)" --dataset-option 'sequences="$(SEQ)"' \
		--dataset-option cameras=$(CAMERA) $(if $(GTS),--dataset-option gts=$(GTS)) \
		--out $(KITTI_OUT)/cache.zarr $(MODELS)
	$(BIN)/occlabel calibrate-depth $(KITTI_OUT)/cache.zarr
	$(BIN)/occlabel voxelize $(KITTI_OUT)/cache.zarr --out $(KITTI_OUT)/labels.zarr --grid $(KITTI_GRID)
	$(BIN)/occlabel export $(KITTI_OUT)/labels.zarr --format $(KITTI_GRID) --out $(KITTI_OUT)/$(KITTI_GRID)
	@if [ "$(KITTI_GRID)" = semantickitti ] && ls "$(KITTI)"/sequences/$(SEQ)/voxels/*.label >/dev/null 2>&1; then \
		$(BIN)/occlabel evaluate $(KITTI_OUT)/labels.zarr --json $(KITTI_OUT)/eval.json; \
	elif [ "$(KITTI_GRID)" = occ3d ] && { [ -n "$(GTS)" ] || [ -d "$(KITTI)/gts" ]; }; then \
		$(BIN)/occlabel evaluate $(KITTI_OUT)/labels.zarr --json $(KITTI_OUT)/eval.json; \
	else echo "no ground truth for the $(KITTI_GRID) grid (SemanticKITTI voxels/*.label, or Occ3D-layout gts/): evaluation skipped"; fi

kitti-raw: install
	@test -n "$(KITTI_RAW)" -a -n "$(DRIVE)" || { echo "usage: make kitti-raw KITTI_RAW=/path/to/kitti_raw DRIVE=2011_09_26_drive_0005 [CAMERA=cam2] [GTS=...] [MODELS='--depth-model ... --semantic-model ...']" >&2; exit 2; }
	$(BIN)/occlabel extract-2d --dataset kitti-raw --root "$(KITTI_RAW)" --dataset-option drives=$(DRIVE) \
		--dataset-option cameras=$(CAMERA) $(if $(GTS),--dataset-option gts=$(GTS)) \
		--out $(KITTI_RAW_OUT)/cache.zarr $(MODELS)
	$(BIN)/occlabel calibrate-depth $(KITTI_RAW_OUT)/cache.zarr
	$(BIN)/occlabel voxelize $(KITTI_RAW_OUT)/cache.zarr --out $(KITTI_RAW_OUT)/labels.zarr --grid occ3d
	$(BIN)/occlabel export $(KITTI_RAW_OUT)/labels.zarr --format occ3d --out $(KITTI_RAW_OUT)/occ3d
	@if [ -n "$(GTS)" ] || [ -d "$(KITTI_RAW)/gts" ]; then \
		$(BIN)/occlabel evaluate $(KITTI_RAW_OUT)/labels.zarr --json $(KITTI_RAW_OUT)/eval.json; \
	else echo "no $(KITTI_RAW)/gts (Occ3D-layout ground truth in the KITTI raw ego frame): evaluation skipped"; fi

# DDAD (or any DGP scene dataset): no occupancy ground truth, so evaluate scores the calibrated depth of the
# cache against each image's projected LiDAR depth; the labels are exported all the same.
ddad: install
	@test -n "$(DDAD)" || { echo "usage: make ddad DDAD=/path/to/ddad_train_val [SPLIT=val] [SCENES=000150,000151] [CAMERAS=CAMERA_01,CAMERA_05] [MODELS='--depth-model ... --semantic-model ...']" >&2; exit 2; }
	$(BIN)/occlabel extract-2d --dataset dgp --root "$(DDAD)" $(if $(SPLIT),--split $(SPLIT)) \
		$(if $(SCENES),--dataset-option 'scenes="$(SCENES)"') $(if $(CAMERAS),--dataset-option cameras=$(CAMERAS)) \
		--out $(DDAD_OUT)/cache.zarr $(MODELS)
	$(BIN)/occlabel calibrate-depth $(DDAD_OUT)/cache.zarr
	$(BIN)/occlabel voxelize $(DDAD_OUT)/cache.zarr --out $(DDAD_OUT)/labels.zarr --grid occ3d
	$(BIN)/occlabel export $(DDAD_OUT)/labels.zarr --format occ3d --out $(DDAD_OUT)/occ3d
	$(BIN)/occlabel evaluate $(DDAD_OUT)/cache.zarr --json $(DDAD_OUT)/depth_eval.json

bench: install
	$(BIN)/python scripts/bench.py --out docs/benchmarks.md
	$(BIN)/python scripts/bench_extract.py --out docs/benchmarks.md
	$(BIN)/python scripts/bench_real.py --out docs/benchmarks.md
	$(BIN)/python scripts/bench_ddad.py --out docs/benchmarks.md
	$(BIN)/python scripts/bench_scale.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
