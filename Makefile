# The two commands a newcomer needs:
#   make demo   set up .venv, build the bundled corpus, prepare, cluster, train on CPU, sample with audio
#   make test   set up .venv, run the tests
# make demo FULL=1 exports the whole music21 corpus and trains longer.
# make app    the local page (app.py) on the demo's model; make lock  refresh constraints.txt (README, "Installs")

PY      := .venv/bin/python
DATA    := data/music21
TORCH   := $(shell grep '^torch==' requirements.txt)
FULL    ?=
EXPORT_FLAGS := $(if $(FULL),--full,)
# Every install goes through constraints.txt: the versions `make test` passed with, so a fresh clone next month
# gets them too.
PIP     := .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test app lock venv clean

# torch is installed first and pinned, so nothing pulls a CUDA build from the index.
.venv/.runtime: requirements.txt constraints.txt
	python3 -m venv .venv
	$(PIP) "$(TORCH)"
	$(PIP) -r requirements.txt
	touch $@

.venv/.app: .venv/.runtime requirements-app.txt constraints.txt
	$(PIP) -r requirements-app.txt
	touch $@

.venv/.dev: .venv/.runtime requirements-dev.txt requirements-app.txt constraints.txt
	$(PIP) -r requirements-dev.txt
	touch $@

venv: .venv/.runtime

# The demo ends with the prompts of config/demo_prompts.txt, which differ in tempo, meter, key and instruments;
# each prints what it understood before it samples and what was measured in the file after. sample.py's own
# defaults, 20 s: the path evaluate.py's control section measures (its "demo" prompt set).
# Training has a 4.5-minute budget (config/amt_cpu.py), so it takes as long on any machine; FULL=1 trains a
# fixed 4000 steps instead. A finished run is resumed (and so skipped: its budget is spent) rather than refused,
# so a second `make demo` is quick; a run cut short goes on with the time its budget has left.
RESUME = $$(ls $(RUN)/ckpt_*.pt >/dev/null 2>&1 && echo --init_from=resume)
RUN    := out/amt_cpu
TRAIN_FLAGS := $(if $(FULL),--max_minutes=0 --max_iters=4000 --lr_decay_iters=4000 \
               --eval_interval=500 --save_interval=500,)
SAMPLE := $(PY) sample.py --out_dir $(RUN) --num_samples 1 --seed 1 --seconds 20 --audio

demo: .venv/.runtime
	$(PY) data/music21/export.py $(EXPORT_FLAGS)
	$(PY) prepare.py --data_dir $(DATA)
	$(PY) cluster.py --data_dir $(DATA)
	$(PY) train.py config/amt_cpu.py $(TRAIN_FLAGS) $(RESUME)
	grep -v '^#' config/demo_prompts.txt | while IFS= read -r prompt; do $(SAMPLE) --prompt "$$prompt" || exit 1; done
	@echo
	@echo "prepared data:   $(DATA)/train.bin, $(DATA)/val.bin, $(DATA)/index.jsonl, $(DATA)/meta.json"
	@echo "clusters:        $(DATA)/clusters.json (python cluster.py --data_dir $(DATA) --query 'your words')"
	@echo "checkpoints:     $(RUN)/ (TensorBoard: $(RUN)/tb)"
	@echo "MIDI + pictures: $(RUN)/samples/*.mid, *.png and *.wav"
	@echo "gallery:         $(RUN)/samples/index.html (open it in a browser: no server needed)"
	@echo "next:            python evaluate.py --out_dir $(RUN) --audio (its page: $(RUN)/eval/index.html)"

test: .venv/.dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest

# The page on localhost; it prints its address. It needs a trained model: make demo (or give another run folder).
app: .venv/.app
	$(PY) app.py --out_dir $(RUN)

# constraints.txt anew: the newest versions that the requirements files resolve to, in a fresh venv (torch first
# and pinned, as above; its local build label dropped so that the line matches requirements.txt). Then check
# them: rm -rf .venv && make test.
lock:
	rm -rf .venv-lock
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q --disable-pip-version-check "$(TORCH)"
	.venv-lock/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	(echo "# The versions make test passed with; every install goes through this file. Refresh: make lock"; \
	 .venv-lock/bin/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]*)\+.*/\1/') > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf .venv-lock
	@echo "constraints.txt refreshed; check it with: rm -rf .venv && make test"

clean:
	rm -rf out $(DATA)/*.bin $(DATA)/*.jsonl $(DATA)/*.json $(DATA)/*.tsv
