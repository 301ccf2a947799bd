# Fine-tune a trained model on your own MIDI (README, "Your own MIDI"): the weights and model shape
# come from init_from, onto any prepared data_dir, with a fresh optimizer, schedule and iteration
# count.
#   python train.py config/finetune.py --data_dir=data/my_midi --init_from=out/amt_cpu
#   --out_dir=out/my_midi
# init_from is a checkpoint file or a run folder (its ckpt_best.pt, else its newest checkpoint).
# Shape settings (n_layer, n_embd, block_size ...) are the checkpoint's; a config that asks for
# others is refused.
init_from = "out/amt_cpu"
data_dir = "data/my_midi"
out_dir = "out/my_midi"

# The demo's own recipe (config/amt_cpu.py: Muon for the blocks' matrices, AdamW at 2e-3 for the
# rest, packed and re-voiced windows), batch 16, 200 steps: from the demo model it beats the same
# recipe from scratch (BENCHMARKS.md, "Fine-tuning on your own MIDI").
learning_rate = 2e-3
muon_lr = 0.02
min_lr = 2e-4
warmup_iters = 50
max_iters = 200  # about 2 minutes on 2 cores for the demo's 3.3M-weight model
lr_decay_iters = 200
batch_size = 16
dropout = 0.0
weight_decay = 0.01
pack = True
revoice = 0.3

transpose = 6
tempo_jitter = 0.5

eval_interval = 50
eval_iters = 10
save_interval = 50
log_interval = 10
compile = False
