# The longer CPU run (about 30 minutes on 2 idle cores, 8,400 tokens/s): the demo's model and settings, 7x the
# steps (3,500 x 4,096 = 14M tokens, 2.5 passes over the bundled corpus), for numbers closer to what this
# model can do.
#   python train.py config/amt_cpu_long.py
#   python evaluate.py --out_dir out/amt_cpu_long
data_dir = "data/music21"
out_dir = "out/amt_cpu_long"

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
block_size = 256
batch_size = 16

learning_rate = 1e-3
warmup_iters = 100
min_lr = 1e-4
max_iters = 3500
lr_decay_iters = 3500

eval_interval = 500
eval_iters = 10
save_interval = 500
log_interval = 50
keep_last = 7          # every 500 steps, so evaluate.py can follow control as training goes on
compile = False
transpose = 6          # as config/amt_cpu.py: see BENCHMARKS.md, "Which conditioning"
tempo_jitter = 0.5
