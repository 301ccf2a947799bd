# The CPU demo (`make demo`): a small model that learns something musical from the bundled
# music21 corpus in under 5 minutes, on any machine. bf16 autocast is picked where the CPU has
# AVX-512 BF16 (this model steps 1.6x faster than in fp32); compile stays off (little gain on
# CPU, 20-30 s to compile).
#   python train.py config/amt_cpu.py
data_dir = "data/music21"
out_dir = "out/amt_cpu"

n_layer = 4  # 3.3M weights
n_head = 4
n_embd = 256
dropout = 0.0  # a few minutes of training is far from overfitting
block_size = 256  # most music21 tunes are 150-600 tokens
batch_size = 32  # 8,192 tokens per step: on 2 cores a batch of 32 runs 1.2x the tokens/s of 16

# The speedrun's winners on this budget (BENCHMARKS.md "Speedrun").
pos = "rope"  # rotary positions
muon_lr = 0.02  # Muon for the blocks' matrices
pack = True  # windows filled with the next pieces where one ends, instead of padding
learning_rate = 2e-3  # AdamW, for the embeddings, norms and biases beside Muon
warmup_iters = 50
min_lr = 2e-4
# A wall-clock budget rather than a step count, so that the demo trains for the same time on any
# machine: at the 12,200 tokens/s that BENCHMARKS.md measured on 2 idle cores, evals included,
# about 400 steps x 8,192 tokens (3.3M, 0.5 epoch); half as many on a machine half as fast. The
# budget holds the evals and the final save; train.py's start (the data, the model, a matmul that
# measures the peak) adds seconds. The log and the summary say what it bought. 4.5 minutes, not 5:
# make demo's other stages take about 5 minutes on 2 cores, and the whole must end within 10.
max_minutes = 4.5
max_iters = 2000  # an upper bound: what a machine 5x as fast would reach
# The schedule's shape, followed over the budget's time (train.get_lr): warm-up for the first
# 50/450 of it, then a cosine decay to min_lr at its end.
lr_decay_iters = 450

# Conditioning (BENCHMARKS.md, "Which conditioning"): the attribute prefix with each slot dropped
# 30% of the time, windows transposed by up to 6 semitones and played up to an octave/2 faster or
# slower, so that key and tempo are heard apart from the pieces that carry them.
transpose = 6
tempo_jitter = 0.5
# Re-voicing: 30% of windows are played by other instruments that can cover their parts (a chorale
# as a string quartet, brass or woodwind choir, organ...; a melody on flute, violin, oboe...), the
# prefix's instrument slots following, so that the model learns to play the instruments it is asked
# for (BENCHMARKS.md "Control on the user's path").
revoice = 0.3

eval_interval = 150
eval_iters = 10
save_interval = 100
log_interval = 10
compile = False
