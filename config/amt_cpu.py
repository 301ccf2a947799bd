# The CPU demo (`make demo`): a small model that learns something musical from the bundled
# music21 corpus in under 5 minutes on 2 cores. bf16 autocast is picked where the CPU has
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

# The speedrun (bench.py --only speedrun, BENCHMARKS.md "Speedrun"): each of these won its race on
# this budget.
pos = "rope"  # rotary positions: 3.81 -> 3.27 val nats per note at 500 steps, alone
muon_lr = 0.02  # Muon for the blocks' matrices: 3.81 -> 3.14 alone; 0.01 and 0.04 did worse
pack = True  # windows filled with more pieces where one ends (3.7% of a window was padding)
learning_rate = 2e-3  # AdamW, for the embeddings, norms and biases beside Muon
warmup_iters = 50
min_lr = 2e-4
# 450 steps x 8,192 tokens (3.7M, 0.6 epoch) at about 13,100 tokens/s on 2 idle cores (AMD EPYC,
# AVX-512 BF16): about 4.7 minutes of training with its evals, inside the demo's budget of 5 (400
# steps took 4.2 minutes in a fresh clone's make demo and reached 2.895 val nats per note).
max_iters = 450
lr_decay_iters = 450

# Conditioning (BENCHMARKS.md, "Which conditioning"): the attribute prefix with each slot dropped
# 30% of the time, windows transposed by up to 6 semitones and played up to an octave/2 faster or
# slower. Transposition doubled the loss the key saves (+0.007 -> +0.013 nats) at the same
# adherence.
transpose = 6
tempo_jitter = 0.5
# Re-voicing (issue 18, BENCHMARKS.md "Control on the user's path"): 30% of windows are played by
# other instruments that can cover their parts (a chorale as a string quartet, brass or woodwind
# choir, organ...; a melody on flute, violin, oboe...), the prefix's instrument slots following. The
# model alone then plays the asked instruments exactly in 74% of samples instead of 28%, for 0.06
# val nats per note.
revoice = 0.3

eval_interval = 150
eval_iters = 10
save_interval = 100
log_interval = 10
compile = False
