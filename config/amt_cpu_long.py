# The longer CPU run (about 40 minutes on 2 idle cores): the demo's model and settings, eight times the
# steps (3.3 epochs... of the bundled corpus: 16M tokens), for numbers closer to what the model can do.
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
max_iters = 4000
lr_decay_iters = 4000

eval_interval = 500
eval_iters = 10
save_interval = 500
log_interval = 50
compile = False
