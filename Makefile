# mogrpo: every target creates .venv and installs what it needs on first use.
#   make local-smoke    a short GRPO run (GPU if nvidia-smi finds one, else CPU)
#   make test           the whole test suite
#   make bench          benchmarks -> runs/bench/results.json
#   make reward         train the multi-label reward model -> runs/reward-model
#   make reward-eval    held-out metrics of runs/reward-model
#   make eval           safety evaluation of policies -> runs/eval (ARGS='--policy trained=runs/<run>/final --limit 30')
#   make submit CONFIG=... ADDRESS=http://HEAD:8265 [ARGS='output_dir=/mnt/runs ...']   a run as a Ray job
#   make report RUN=runs/<name>   PNG plots of a run's metrics -> runs/<name>/report/
#   make align          the alignment recipe (builds runs/reward-model first if missing) -> runs/align, then base vs trained -> runs/eval-align
#   make align-ablation the recipe with the safety label alone and with the four labels summed (no gate) -> runs/eval-align

PROFILE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(PROFILE)
SMOKE_CONFIG ?= $(if $(filter gpu,$(PROFILE)),cluster_configs/local_smoke.yaml,cluster_configs/cpu_smoke.yaml)
REWARD_MODEL ?= runs/reward-model
export MOGRPO_CACHE ?= $(HOME)/.cache/mogrpo
export TORCH_EXTENSIONS_DIR ?= $(MOGRPO_CACHE)/torch_extensions
export PYTHONUNBUFFERED = 1
ifeq ($(PROFILE),cpu)
export DS_ACCELERATOR ?= cpu
endif
export TOKENIZERS_PARALLELISM = false

.PHONY: venv local-smoke test test-fast bench reward reward-eval clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh $(PROFILE)

venv: $(STAMP)

local-smoke: $(STAMP)
	$(PY) -m orchestration.train --config $(SMOKE_CONFIG) run_name=local-smoke $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

reward: $(STAMP)
	$(PY) -m reward_training.train --config cluster_configs/reward_default.yaml output=$(REWARD_MODEL) $(ARGS)

reward-eval: $(STAMP)
	$(PY) -m reward_training.evaluate --model $(REWARD_MODEL) $(ARGS)

.PHONY: submit report eval
submit: $(STAMP)
	$(if $(CONFIG),,$(error set CONFIG, e.g. make submit CONFIG=cluster_configs/multi_gpu.yaml ADDRESS=http://HEAD:8265))
	$(PY) -m orchestration.submit --config $(CONFIG) $(if $(ADDRESS),--address $(ADDRESS)) $(ARGS)

report: $(STAMP)
	$(if $(RUN),,$(error set RUN, e.g. make report RUN=runs/local-smoke))
	$(PY) -m orchestration.report $(RUN) $(ARGS)

eval: $(STAMP)
	$(PY) -m evaluation --config cluster_configs/eval_sets.yaml --out runs/eval \
		$(if $(wildcard $(REWARD_MODEL)/reward_model.json),--reward-model $(REWARD_MODEL)) $(ARGS)

clean:
	rm -rf runs/local-smoke runs/bench

# The alignment recipe and its ablation (README, "The alignment recipe"). The recipe's reward is
# the default one ($(REWARD_MODEL), built by `make reward` if missing), with XSTest and justification
# prompt files from that model's splits. EVAL_ARGS go to the evaluation, e.g.
# EVAL_ARGS='--limit 60' for a quicker look (a rerun reuses the answers already in runs/eval-align).
ALIGN_CONFIG ?= cluster_configs/align_smollm2_cpu.yaml
ALIGN_PROMPTS := runs/prompts/xstest_trainval.jsonl runs/prompts/xstest_test.jsonl runs/prompts/justify_trainval.jsonl
ALIGN_TRAIN = $(PY) -m orchestration.train --config $(ALIGN_CONFIG) reward.model=$(REWARD_MODEL)
ALIGN_EVAL = $(PY) -m evaluation --config cluster_configs/eval_sets.yaml --train-config $(ALIGN_CONFIG) \
	--reward-model $(REWARD_MODEL) --policy base=smollm2-135m-instruct --policy align=runs/align/final \
	--export-blind 200 --out runs/eval-align

.PHONY: align align-ablation
$(REWARD_MODEL)/reward_model.json: | $(STAMP)
	$(MAKE) reward ARGS=

runs/prompts/xstest_trainval.jsonl: $(REWARD_MODEL)/reward_model.json
	$(PY) -m reward_training.export_prompts --model $(REWARD_MODEL) --source xstest --out $@

runs/prompts/xstest_test.jsonl: $(REWARD_MODEL)/reward_model.json
	$(PY) -m reward_training.export_prompts --model $(REWARD_MODEL) --source xstest --split test --out $@

runs/prompts/justify_trainval.jsonl: $(REWARD_MODEL)/reward_model.json
	$(PY) -m reward_training.export_prompts --model $(REWARD_MODEL) --source justify_requests --out $@

align: $(STAMP) $(REWARD_MODEL)/reward_model.json $(ALIGN_PROMPTS)
	$(ALIGN_TRAIN) $(ARGS)
	$(ALIGN_EVAL) $(EVAL_ARGS)

# What the multi-objective reward buys (README): the recipe again, changing only how the reward
# combines its labels (the recipe's own run is reused, or trained first if missing).
align-ablation: $(STAMP) $(REWARD_MODEL)/reward_model.json $(ALIGN_PROMPTS)
	test -d runs/align/final || $(ALIGN_TRAIN) $(ARGS)
	$(ALIGN_TRAIN) run_name=align-safety-only reward.aggregation.mode=weighted_sum \
		'reward.aggregation.weights={safety: 1.0}' $(ARGS)
	$(ALIGN_TRAIN) run_name=align-weighted-sum reward.aggregation.mode=weighted_sum $(ARGS)
	$(ALIGN_EVAL) --policy safety-only=runs/align-safety-only/final \
		--policy weighted-sum=runs/align-weighted-sum/final $(EVAL_ARGS)
