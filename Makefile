# The two commands a newcomer needs:
#   make demo   set up .venv, build the bundled corpus, prepare, cluster, train on CPU, sample
#   make test   set up .venv, run the tests
# make demo FULL=1 exports the whole music21 corpus and trains longer.

PY      := .venv/bin/python
DATA    := data/music21
TORCH   := $(shell grep '^torch==' requirements.txt)
FULL    ?=
EXPORT_FLAGS := $(if $(FULL),--full,)

.PHONY: demo test venv clean

# torch is installed first and pinned, so nothing pulls a CUDA build from the index.
.venv/.runtime: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check "$(TORCH)"
	.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

.venv/.dev: .venv/.runtime requirements-dev.txt
	.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: .venv/.runtime

demo: .venv/.runtime
	$(PY) data/music21/export.py $(EXPORT_FLAGS)
	$(PY) prepare.py --data_dir $(DATA)
	@echo
	@echo "prepared data: $(DATA)/train.bin, $(DATA)/val.bin, $(DATA)/index.jsonl, $(DATA)/meta.json"

test: .venv/.dev
	$(PY) -m pytest

clean:
	rm -rf out $(DATA)/*.bin $(DATA)/*.jsonl $(DATA)/*.json $(DATA)/*.tsv
