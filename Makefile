# narm-lightning: `make install` once, then `make train` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RECBOLE_VENV ?= .venv-recbole
TORCH_SPEC ?= torch==2.13.0
# glibc: big blocks from a heap that is never trimmed, so a step's tensors reuse memory already faulted in instead
# of mmap + page faults every step (ml-100k epoch ~1.3x faster; the programs set the same themselves). No huge
# pages: their first touch costs every process's first epoch more than they save (docs/performance.md, hostcheck.py)
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184


.PHONY: mutate mutate-results
.PHONY: install recbole-venv recbole-sampled recbole-rows bench-recbole postgres train test test-slow lint docs study-hyper-test study-hyper-test-status study-hyper-test-save bench bench-clicks bench-gpu bench-sessions bench-serving bench-hugepages clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)  ## create .venv with the CPU torch pinned first, then the package and dev tools
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"

postgres:  ## install Debian's PostgreSQL server for the distributed-sweep tests, unless initdb is already there
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "postgres: initdb found, nothing to install"; \
	else \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null && \
		echo "postgres: installed $$(ls -d /usr/lib/postgresql/*/bin)"; \
	fi

# this project's developers keep the datasets in ../shared/data (never fetched, never committed): the Makefile's
# targets search it where it exists; the shipped default searches data.root only, then fetches ml-100k
SHARED_DATA ?= $(abspath $(wildcard $(CURDIR)/../shared/data))
DATA_ROOTS := $(if $(SHARED_DATA),data.extra_roots=[$(SHARED_DATA)])

train:  ## train NARM on ml-100k with RecBole's defaults; extra overrides via ARGS="key=value ..."
	$(PY) train.py $(DATA_ROOTS) $(ARGS)

# tests are mostly process start-ups (train.py, sweeps, DDP): pytest-xdist runs one test process a core (at most
# 4); each test has its own tmp_path and free ports, each worker its own PostgreSQL server. ARGS="-n 0": one process.
PYTEST_PARALLEL ?= -n auto --maxprocesses=4

test:  ## the fast test suite (what CI runs), one test process a core
	$(PY) -m pytest -q $(PYTEST_PARALLEL) $(ARGS)

test-slow:  ## the slow tests only
	$(PY) -m pytest -q -m slow $(PYTEST_PARALLEL) $(ARGS)

# mutation testing (issue 32): mutmut over metrics, the protocol, the confirm statistics, safe_load and resume, each
# mutant against the tests that call its function ([tool.mutmut] in pyproject.toml); results: make mutate-results
mutate:  ## mutation testing of the modules whose numbers users quote (mutmut; ~1 h on 2 cores); survivors: docs/reliability.md
	$(PY) -m pip install -q "mutmut==3.8.1"
	rm -rf mutants
	# one OpenMP thread: mutmut forks each mutant's tests from a process that has used torch, and GNU OpenMP's
	# thread pool does not survive a fork (the child hangs in a futex, never using CPU, so mutmut's CPU-time
	# limit never fires)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NARM_SHARED_DATA=$(CURDIR)/../shared/data NARM_REQUIRE_SHARED_DATA=1 \
		$(VENV)/bin/mutmut run --max-children 2 $(ARGS)
	$(VENV)/bin/mutmut results

mutate-results:  ## the surviving mutants of the last make mutate (mutmut show <name> prints one)
	$(VENV)/bin/mutmut results

bench:  ## speed report (bench/out/report.{json,md}) + an entry in bench/HISTORY.md; ARGS="--quick" for a smoke run
	$(PY) -m bench.bench $(ARGS)

bench-recbole: $(RECBOLE_VENV)/bin/python  ## RecBole 1.2.1 vs our defaults vs our exact path, ml-100k epoch, alternating processes -> bench/out/recbole.md + HISTORY
	$(PY) -m bench.bench_recbole $(ARGS)

bench-clicks:  ## a YOOCHOOSE-size click log (made once in bench/out/, 1.35 GB) through data=clicks: read/split/cache seconds, peak RSS, training memory
	$(PY) -m bench.bench_clicks $(ARGS)

bench-gpu:  ## the GPU check (needs CUDA torch): ml-100k + DIGINETICA epochs, eval and GPU memory, bf16 vs fp32 on one GPU
	$(PY) -m bench.bench --epochs 3 --no-serving --variant gpu-bf16=trainer=gpu --variant gpu-fp32=trainer=gpu,trainer.precision=32-true --note "GPU check: trainer=gpu, bf16-mixed vs fp32" $(ARGS)

# Issue 20: RecBole's NARM hyper.test on ml-100k (30 grid points, each to early stopping; median pruner from the
# 6th trial, after epoch 10), then the best 3 configs and the default config over seeds 2020-2022 to early
# stopping. One persistent study in bench/studies/ (a run output, not tracked): rerun the same target to resume;
# make study-hyper-test-save writes its text snapshot (Optuna's journal) and status table to bench/studies-summary/
# to commit, and make study-hyper-test on a fresh checkout restores the snapshot before resuming.
# Precision is pinned to fp32: `auto` means bf16 on a CPU with AMX and fp32 elsewhere, and the sessions that carry
# the study run on both kinds of host; one study must not mix the two.
STUDY_DIR = bench/studies/hyper-test-ml-100k
# the confirm step: the best configs retrained, each over seeds 2020 up (the sweep and its README section read both)
STUDY_CONFIRM_TOP = 3
STUDY_CONFIRM_SEEDS = 3
STUDY_HYPER_TEST = sweep.py -m --params-file=bench/hyper.test hydra.sweeper.study_name=hyper-test-ml-100k \
	hydra.sweeper.storage=$(STUDY_STORAGE) \
	hydra/sweeper/pruner=median hydra.sweeper.pruner.n_startup_trials=5 hydra.sweeper.pruner.n_warmup_steps=10 \
	hydra.sweeper.confirm_top=$(STUDY_CONFIRM_TOP) hydra.sweeper.confirm_seeds=$(STUDY_CONFIRM_SEEDS) hydra.sweep.dir=$(STUDY_DIR)/sweep \
	trainer.precision=32-true $(DATA_ROOTS)

STUDY_STORAGE = sqlite:///$(CURDIR)/$(STUDY_DIR)/study.db
STUDY_SNAPSHOT = bench/studies-summary/hyper-test-ml-100k.journal
# every sitting's console, appended; its committed copy travels with the snapshot (the confirm step's time is read there)
STUDY_CONSOLE = bench/studies-summary/hyper-test-ml-100k-console.log

study-hyper-test:  ## issue 20: the hyper.test study on ml-100k + its confirm step (resumable; restores the committed snapshot into a fresh checkout first; console log in $(STUDY_DIR)/)
	mkdir -p $(STUDY_DIR)
	@if [ ! -f $(STUDY_DIR)/study.db ] && [ -f $(STUDY_SNAPSHOT) ]; then \
		$(PY) -m bench.study.snapshot import --study hyper-test-ml-100k --storage $(STUDY_STORAGE) --file $(STUDY_SNAPSHOT) \
		&& { [ ! -f $(STUDY_CONSOLE) ] || cp $(STUDY_CONSOLE) $(STUDY_DIR)/console.log; }; fi
	$(PY) $(STUDY_HYPER_TEST) trainer.enable_progress_bar=false $(ARGS) 2>&1 | tee -a $(STUDY_DIR)/console.log

study-hyper-test-status:  ## where issue 20's study stands: every trial, trials/hour, the confirm table (read-only)
	$(PY) -m bench.study.status --study hyper-test-ml-100k --storage $(STUDY_STORAGE)

study-hyper-test-save:  ## issue 20: the study's text snapshot, status table and pictures (PNG) into bench/studies-summary/, its README section (to commit)
	$(PY) -m bench.study.snapshot export --study hyper-test-ml-100k --storage $(STUDY_STORAGE) --file $(STUDY_SNAPSHOT)
	cp $(STUDY_DIR)/console.log $(STUDY_CONSOLE)
	{ echo "# hyper.test study (issue 20): where it stood, $$(date -u '+%Y-%m-%d %H:%M UTC'), $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"; \
	  echo; echo "make study-hyper-test-status; the study itself: $(STUDY_SNAPSHOT) (make study-hyper-test restores it)."; echo; \
	  $(PY) -m bench.study.status --study hyper-test-ml-100k --storage $(STUDY_STORAGE); } > bench/studies-summary/hyper-test-ml-100k.md
	$(PY) -m bench.study.figures --study hyper-test-ml-100k --storage $(STUDY_STORAGE) \
		--out bench/studies-summary/hyper-test-ml-100k --reference bench/studies-summary/recbole-default-ml-100k.json
	$(PY) -m bench.study.readme --study hyper-test-ml-100k --storage $(STUDY_STORAGE) --readme README.md \
		--figures bench/studies-summary/hyper-test-ml-100k --reference bench/studies-summary/recbole-default-ml-100k.json \
		--confirm-top $(STUDY_CONFIRM_TOP) --confirm-seeds $(STUDY_CONFIRM_SEEDS) --console $(STUDY_CONSOLE)

bench-sessions:  ## the NARM paper's benchmark on DIGINETICA + YOOCHOOSE 1/64 -> bench/out/sessions.md; ARGS="--epochs 3" or ARGS="--collect RUN_DIR..."
	$(PY) -m bench.bench_sessions $(ARGS)

bench-hugepages:  ## CPU step time and page faults with vs without GLIBC_TUNABLES=glibc.malloc.hugetlb=1 -> bench/out/hugepages.{json,md}
	$(PY) -m bench.bench_hugepages $(ARGS)

bench-serving:  ## recommendations/s at batch size 1 and 256 on CPU -> bench/out/serving.json; ARGS="--ckpt best.ckpt"
	$(PY) -m bench.bench_serving $(ARGS)

# RecBole 1.2.1 in a venv of its own (never .venv): the baseline of `make bench-recbole` and the sampled-candidates
# check. It needs NumPy<2 and friends, a stub `ray` (bench/recbole/stubs on PYTHONPATH) and torch.load without
# weights_only (its checkpoints pickle its Config): RECBOLE_RUN sets both.
$(RECBOLE_VENV)/bin/python:
	$(PYTHON) -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install -q --upgrade pip
	$(RECBOLE_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(RECBOLE_VENV)/bin/python -m pip install -q -r bench/recbole/requirements.txt
	$(RECBOLE_VENV)/bin/python -m pip install -q --no-deps recbole==1.2.1

recbole-venv: $(RECBOLE_VENV)/bin/python  ## RecBole 1.2.1 in .venv-recbole (for bench-recbole and the sampled check)

RECBOLE_RUN = PYTHONPATH=bench/recbole/stubs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 $(RECBOLE_VENV)/bin/python

recbole-sampled: $(RECBOLE_VENV)/bin/python  ## RecBole's own uni100/pop100 figures for the shared checkpoint over 10 seeds -> bench/recbole/sampled_reference.json
	$(RECBOLE_RUN) -m bench.recbole.sampled_check $(ARGS)

recbole-rows: $(RECBOLE_VENV)/bin/python  ## RecBole 1.2.1's own ml-100k rows (digests) and its figures for the shared checkpoint -> tests/recbole/reference/recbole_ml100k_rows.json
	$(RECBOLE_RUN) -m bench.recbole.rows_reference $(ARGS)

docs:  ## regenerate docs/keys.md (every key, default and help) from the schema, docs/recbole-keys.md from recbole/keys.py
	$(PY) -m narm_lightning.cli.help > docs/keys.md
	$(PY) -m narm_lightning.recbole.keys > docs/recbole-keys.md

lint:
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
