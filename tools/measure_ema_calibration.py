"""Which calibration statistics should the EMA model carry? Train demo-rtmcc (known-good point,
10 epochs) with rtmpose-m's EMAHook (ExpMomentumEMA, update_buffers=True; momentum/gamma scaled so
the EMA window in epochs is rtmpose-m's: 5000 iters / 585 per epoch ~ 8.5 epochs, gamma ~ 3.4 epochs),
then validate the final EMA weights with three sets of peak_min/peak_max:
A the EMA-averaged buffers (status quo), B the raw head's (copied), C the EMA model's own peaks
gathered over one training epoch, as the head gathers them. Prints coco/AP and the ranges.
A one-off measurement (docs/real_backbone.md, "EMA and calibration"), not a test; about 2.5 min:

    OMP_NUM_THREADS=1 python tools/measure_ema_calibration.py $(mktemp -d) SEED
"""
import copy, sys, torch
from pathlib import Path
from mmengine.runner import Runner
from rspose_tune.demo_data import generate_demo_dataset
from rspose_tune.spaces import load_preset
from rspose_tune.training import prepare_trial_config
from rspose_tune.mmpose_adapter import setup_mmpose

tmp = Path(sys.argv[1]); seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
setup_mmpose()
root = generate_demo_dataset(tmp / "data", seed=0)
preset = load_preset("demo-rtmcc", data_root=root)
cfg = prepare_trial_config(preset, dict(preset.known_good[0]), tmp / f"trial{seed}", seed=seed, num_workers=0)
cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1)
cfg.train_cfg.val_interval = 100
cfg.custom_hooks = [dict(type="EMAHook", ema_type="ExpMomentumEMA", momentum=0.0002, gamma=2000, update_buffers=True, priority=49)]
runner = Runner.from_cfg(cfg)
ipe = len(runner.train_dataloader)
ema_hook_cfg = dict(momentum=1 / (8.5 * ipe), gamma=3.4 * ipe)
cfg.custom_hooks[0].update(ema_hook_cfg)
runner = Runner.from_cfg(cfg)
runner.train()
ema = next(h for h in runner.hooks if type(h).__name__ == "EMAHook")
raw_state = {k: v.clone() for k, v in runner.model.state_dict().items()}
ema_state = {k: v.clone() for k, v in ema.ema_model.module.state_dict().items()}
# C: the EMA model's own peaks over one training epoch (train mode, no grad, a copy: BN stats untouched)
own = copy.deepcopy(ema.ema_model.module).train()
own.head._window = None
with torch.no_grad():
    for batch in runner.train_dataloader:
        data = own.data_preprocessor(batch, True)
        own._run_forward(data, mode="loss")
variants = {"A_ema_averaged": ema_state, "B_raw_copied": {**ema_state, **{k: raw_state[k] for k in raw_state if "peak_" in k}},
            "C_ema_own": {**ema_state, **{k: v.clone() for k, v in own.state_dict().items() if "peak_" in k}}}
runner._hooks = [h for h in runner._hooks if type(h).__name__ != "EMAHook"]
print(f"iters/epoch {ipe}, EMA {ema_hook_cfg}, steps {int(ema.ema_model.steps)}")
for name, state in variants.items():
    runner.model.load_state_dict(state)
    m = runner.val_loop.run()
    lo, hi = state["head.peak_min"], state["head.peak_max"]
    print(f"RESULT seed={seed} {name}: coco/AP {m['coco/AP']:.4f} AR {m['coco/AR']:.4f} "
          f"mean peak_min {lo.mean():.3f} mean peak_max {hi.mean():.3f} mean span {(hi - lo).mean():.3f}")
