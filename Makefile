# mogrpo: every target creates .venv and installs what it needs on first use.
#   make local-smoke    a short GRPO run (GPU if nvidia-smi finds one, else CPU)
#   make test           the whole test suite
#   make bench          benchmarks -> runs/bench/results.json
#   make reward         train the multi-label reward model -> runs/reward-model
#   make reward-eval    held-out metrics of runs/reward-model
#   make eval           safety evaluation of policies -> runs/eval (ARGS='--policy trained=runs/<run>/final --limit 30')
#   make submit CONFIG=... ADDRESS=http://HEAD:8265 [ARGS='output_dir=/mnt/runs ...']   a run as a Ray job
#   make report RUN=runs/<name>   PNG plots of a run's metrics -> runs/<name>/report/
#   make align          the alignment recipe (runs/align), then base vs trained -> runs/eval-align
#   make align-ablation the request-reading recipe (30 steps) with its gated reward, the safety label alone, and the four labels summed (no gate) -> runs/eval-ablation
#   make align-reqhead  the recipe with the request-reading reward (runs/reward-model-reqhead) -> runs/align-reqhead, runs/eval-align-reqhead

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

# The alignment recipes and the ablation (README, "The alignment recipe"). EVAL_ARGS go to the
# evaluation, e.g. EVAL_ARGS='--limit 60' for a quicker look (a rerun reuses the answers
# already in its --out folder).
ALIGN_CONFIG ?= cluster_configs/align_smollm2_cpu.yaml
# $(call eval_sets,TRAIN_CONFIG,REWARD_MODEL): the evaluation of base and a recipe's policies
eval_sets = $(PY) -m evaluation --config cluster_configs/eval_sets.yaml --train-config $(1) \
	--reward-model $(2) --policy base=smollm2-135m-instruct --export-blind 200
EVAL_SETS := $(call eval_sets,$(ALIGN_CONFIG),$(REWARD_MODEL))

$(REWARD_MODEL)/reward_model.json: | $(STAMP)
	$(MAKE) reward

# XSTest's prompts in the reward model's test split, for the recipe's in-training evaluation.
ALIGN_PROMPTS := runs/prompts/xstest_reward_test.jsonl
runs/prompts/xstest_reward_test.jsonl: $(REWARD_MODEL)/reward_model.json
	$(PY) -m reward_training.export_prompts --model $(REWARD_MODEL) --source xstest --split test --out $@

.PHONY: align
align: $(STAMP) $(REWARD_MODEL)/reward_model.json $(ALIGN_PROMPTS)
	$(PY) -m orchestration.train --config $(ALIGN_CONFIG) $(ARGS)
	$(EVAL_SETS) --policy align=runs/align/final --out runs/eval-align $(EVAL_ARGS)

clean:
	rm -rf runs/local-smoke runs/bench

# The recipe with the reward whose harmful_request head also reads the request (README, recipe
# run 12): its own reward model, XSTest prompt files from that model's splits, and evaluation.
REQHEAD_MODEL := runs/reward-model-reqhead
REQHEAD_CONFIG := cluster_configs/align_smollm2_reqhead_cpu.yaml
REQHEAD_PROMPTS := runs/prompts/xstest_reqhead_trainval.jsonl runs/prompts/xstest_reqhead_test.jsonl

.PHONY: reward-reqhead align-reqhead align-ablation
reward-reqhead: $(STAMP)
	$(PY) -m reward_training.train --config cluster_configs/reward_default.yaml output=$(REQHEAD_MODEL) \
		'model.request_encoder.labels=[safety, harmful_request]' $(ARGS)

$(REQHEAD_MODEL)/reward_model.json: | $(STAMP)
	$(MAKE) reward-reqhead

runs/prompts/xstest_reqhead_trainval.jsonl: $(REQHEAD_MODEL)/reward_model.json
	$(PY) -m reward_training.export_prompts --model $(REQHEAD_MODEL) --source xstest --out $@

runs/prompts/xstest_reqhead_test.jsonl: $(REQHEAD_MODEL)/reward_model.json
	$(PY) -m reward_training.export_prompts --model $(REQHEAD_MODEL) --source xstest --split test --out $@

align-reqhead: $(STAMP) $(REQHEAD_MODEL)/reward_model.json $(REQHEAD_PROMPTS)
	$(PY) -m orchestration.train --config $(REQHEAD_CONFIG) $(ARGS)
	$(call eval_sets,$(REQHEAD_CONFIG),$(REQHEAD_MODEL)) --policy align-reqhead=runs/align-reqhead/final \
		--out runs/eval-align-reqhead $(EVAL_ARGS)

# What the multi-objective reward buys (README, "What the multi-objective reward buys"): the
# request-reading recipe at run 13's settings, three times, changing only how the reward combines its labels.
ABLATION_TRAIN = $(PY) -m orchestration.train --config $(REQHEAD_CONFIG) steps=30 learner.loss.written_push_down_weight=0.25

align-ablation: $(STAMP) $(REQHEAD_MODEL)/reward_model.json $(REQHEAD_PROMPTS)
	$(ABLATION_TRAIN) run_name=ablation-gate $(ARGS)
	$(ABLATION_TRAIN) run_name=ablation-safety-only reward.aggregation.mode=weighted_sum \
		'reward.aggregation.weights={safety: 1.0}' $(ARGS)
	$(ABLATION_TRAIN) run_name=ablation-weighted-sum reward.aggregation.mode=weighted_sum $(ARGS)
	$(call eval_sets,$(REQHEAD_CONFIG),$(REQHEAD_MODEL)) --policy gate=runs/ablation-gate/final \
		--policy safety-only=runs/ablation-safety-only/final --policy weighted-sum=runs/ablation-weighted-sum/final \
		--out runs/eval-ablation $(EVAL_ARGS)
