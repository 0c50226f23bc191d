# neucomp — every task a person does has a target here.
# `make demo` and `make test` work on a fresh machine: they create .venv and install first.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test lint format data shard eval-data eval-tools eval bench bench-quick lm-size train train48 train-lm clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m neucomp.demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check neucomp tests scripts
	$(VENV)/bin/ruff format --check neucomp tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format neucomp tests scripts
	$(VENV)/bin/ruff check --fix neucomp tests

# Real-audio training corpus and dev-eval clips, from Debian packages (see docs/DATA.md).
data: $(STAMP)
	$(PY) -m neucomp.data corpus --out data

# A 24 MiB Opus subset of the corpus: with the ~34 MiB tracked repo it still fits
# through the lent GPU's 64 MiB-per-call door (docs/TRAINING.md).
shard: $(STAMP)
	$(PY) -m neucomp.data shard --out .shards/shard0 --max-mib 24 --format opus --seed 0

eval-data: $(STAMP)
	$(PY) -m neucomp.data devset --out data/deveval

eval-tools:
	@command -v opusenc >/dev/null && command -v lame >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq opus-tools lame) || \
	  echo "could not install opus-tools/lame: baselines will be skipped"
	$(PY) -m pip install -q --disable-pip-version-check -e '.[eval]'

eval: $(STAMP) eval-tools
	$(PY) -m neucomp eval data/deveval --json bench/eval.json --plot docs/rate_quality.png --markdown docs/rate_quality.md --spectrograms build/spectrograms
	$(PY) -m neucomp.eval levels data/deveval --json bench/levels.json

# Whole-file size of the fast coder and the LM against plain packing on the dev-eval
# clips, per bandwidth and category.
lm-size: $(STAMP)
	$(PY) -m neucomp.eval lmsize data/deveval --json bench/lm_size.json

bench: $(STAMP)
	$(PY) -m neucomp.eval bench

bench-quick: $(STAMP)
	$(PY) -m neucomp.eval bench --quick

train: $(STAMP)
	$(PY) -m neucomp.train codec --config configs/codec24_cpu.json

# The 48 kHz stereo codec (configs/codec48.json: data/music48 from `make data`).
train48: $(STAMP)
	$(PY) -m neucomp.train codec --config configs/codec48.json

# The codec's entropy coders: the LM, then the fast coder's tables (~20 s once the
# training codes are cached), both tied to the codec's hash: rerun after changing the codec.
# MODEL=48khz does the same for the 48 kHz stereo model (configs/lm48.json, data/music48).
# LM_INIT=models/neucomp_24khz.lm starts from the shipped LM (for a codec that continued
# training from the one it was made for: far fewer steps than from scratch).
MODEL ?= 24khz
LM_INIT ?=
LM_CONFIG_24khz := configs/lm24.json
LM_CONFIG_48khz := configs/lm48.json
CORPUS_24khz := data/corpus24/manifest.tsv
CORPUS_48khz := data/music48/manifest.tsv
train-lm: $(STAMP)
	$(PY) -m neucomp.train lm --config $(LM_CONFIG_$(MODEL)) $(if $(LM_INIT),--init-from $(LM_INIT))
	$(PY) -m neucomp.eval.coders tables --codec $(MODEL) --corpus $(CORPUS_$(MODEL))

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
