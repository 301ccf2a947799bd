# Fine-tune a trained model on your own MIDI (README, "Your own MIDI"): the weights and model shape come from
# init_from, onto any prepared data_dir, with a fresh optimizer, schedule and iteration count.
#   python train.py config/finetune.py --data_dir=data/my_midi --init_from=out/amt_cpu --out_dir=out/my_midi
# init_from is a checkpoint file or a run folder (its ckpt_best.pt, else its newest checkpoint). Shape settings
# (n_layer, n_embd, block_size ...) are the checkpoint's; a config that asks for others is refused.
init_from = "out/amt_cpu"
data_dir = "data/my_midi"
out_dir = "out/my_midi"

# A few hundred files overfit a 3.3M-weight model within a few hundred steps at the demo's rate (1e-3): a lower
# rate keeps what the model learned on the big corpus, and a short warm-up because Adam's moments start at zero.
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 20
max_iters = 200         # about 3 minutes on 2 cores for the demo's 3.3M-weight model (BENCHMARKS.md, "Fine-tuning")
lr_decay_iters = 200
batch_size = 16
dropout = 0.1           # small data: some regularisation (the demo trained with none)
weight_decay = 0.1

# the demo's augmentation: more distinct windows from few files
transpose = 6
tempo_jitter = 0.5

eval_interval = 50
eval_iters = 10
save_interval = 50
log_interval = 10
compile = False
