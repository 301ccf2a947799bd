# The reference run: a GPT-2 of 6 layers, 8 heads, 768 wide (about 43M
# weights) on one GPU, bf16 autocast, torch.compile.
#   python train.py config/amt.py
#   torchrun --standalone --nproc_per_node=8 train.py config/amt.py --gradient_accumulation_steps=8
data_dir = "data/music21"
out_dir = "out/amt"

vocab_size = 512  # the seed's vocabulary size; tokenizer.py uses fewer ids, the rest stay unused
n_layer = 6
n_head = 8
n_embd = 768
dropout = 0.1
# 1024 tokens is about 225 notes with their timing. 90% of the music21 pieces (median 294 tokens)
# fit whole in one window, so the model learns openings, form and endings; longer (MidiCaps-like)
# pieces still get several phrases. Unpacked, 35% of the window would be padding on music21
# (bench.py --only padding); pack = True below fills it with the next pieces (0.1%).
block_size = 1024
batch_size = 32  # x 1024 = 32,768 tokens per optimizer step
gradient_accumulation_steps = 1

# Rotary positions, Muon for the blocks' matrices (AdamW at learning_rate for the rest) and packed
# windows: chosen on the CPU demo's model (BENCHMARKS.md "Speedrun"), not yet on this one or a GPU.
# pos="learned", muon_lr=0 and pack=False give back the GPT-2 recipe.
pos = "rope"
muon_lr = 0.02
pack = True
# Re-voicing 30% of the windows on other instruments: the bundled corpus is 97% piano and choir.
revoice = 0.3

learning_rate = 1e-4
warmup_iters = 1000
min_lr = 1e-5  # cosine decay from learning_rate to here at the last iteration
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
# Ten passes over train.bin: max_iters = 0 asks train.py to derive it as ceil(10 * train tokens /
# 32,768) (it prints the result); lr_decay_iters follows max_iters. On the bundled music21 corpus
# (5.36M train tokens) that is 1,637 steps, so a 1000-step warmup is most of the run (train.py
# prints a note); a larger corpus, or --warmup_iters=200, fits it better.
epochs = 10.0
max_iters = 0

eval_interval = 1000
eval_iters = 20
save_interval = 1000
log_interval = 10
compile = True
