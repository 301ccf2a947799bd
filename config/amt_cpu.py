# The CPU demo (`make demo`): a small model that learns something musical from the bundled
# music21 corpus in about 5 minutes on 2 cores. bf16 autocast is picked where the CPU has
# AVX-512 BF16 (this model steps 1.6x faster than in fp32); compile stays off (little gain on
# CPU, 20-30 s to compile).
#   python train.py config/amt_cpu.py
data_dir = "data/music21"
out_dir = "out/amt_cpu"

n_layer = 4            # 3.3M weights
n_head = 4
n_embd = 256
dropout = 0.0          # a few minutes of training is far from overfitting
block_size = 256       # most music21 tunes are 150-600 tokens; 256 wastes little on padding
batch_size = 16        # 4,096 tokens per step

learning_rate = 1e-3   # a small model on a short schedule takes large steps
warmup_iters = 50
min_lr = 1e-4
# Measured on the 2-core AMD EPYC (AVX-512 BF16) dev box, bf16: 0.8 s per step on one core
# (5,100 tokens/s); two idle cores are faster. 500 steps (2M tokens, 0.4 epoch) plus five evals
# take about 5 minutes; val loss reaches about 1.0 nats by step 200.
max_iters = 500
lr_decay_iters = 500

# Conditioning (BENCHMARKS.md, "Which conditioning"): the attribute prefix with each slot dropped 30% of the
# time, windows transposed by up to 6 semitones and played up to an octave/2 faster or slower. Transposition
# doubled the loss the key saves (+0.007 -> +0.013 nats) at the same adherence.
transpose = 6
tempo_jitter = 0.5

eval_interval = 100
eval_iters = 10
save_interval = 100
log_interval = 10
compile = False
