# The longer CPU run: the demo's model and recipe (config/amt_cpu.py), 6.7x the steps (3,000 x
# 8,192 = 25M tokens, 4.1 passes over the bundled corpus); about 35 minutes on 2 cores
# (BENCHMARKS.md, "The long CPU preset").
#   python train.py config/amt_cpu_long.py
#   python evaluate.py --out_dir out/amt_cpu_long
data_dir = "data/music21"
out_dir = "out/amt_cpu_long"

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
block_size = 256
batch_size = 32

pos = "rope"  # the speedrun's winners, as in config/amt_cpu.py
muon_lr = 0.02
pack = True
learning_rate = 2e-3
warmup_iters = 100
min_lr = 2e-4
max_iters = 3000
lr_decay_iters = 3000

eval_interval = 500
eval_iters = 10
save_interval = 500
log_interval = 50
keep_last = 6  # every 500 steps, so evaluate.py can follow control as training goes on
compile = False
transpose = 6  # as config/amt_cpu.py: see BENCHMARKS.md, "Which conditioning"
tempo_jitter = 0.5
revoice = 0.3  # as config/amt_cpu.py: other instruments play 30% of the windows
