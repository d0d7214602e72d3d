import json, sys, time, torch
torch.set_num_threads(1)
from trainer import Recipe, DataSpec
from trainer.data import load_proxy
from trainer.engine import _Run
from trainer.device import resolve_device

cfg = json.loads(sys.argv[1])
data_cfg = cfg["data"]; rec_cfg = cfg["recipe"]; evals = cfg.get("eval_epochs")
tag = cfg.get("tag", "")
spec = DataSpec(dataset="cifar10", root="/work/shared/data/cifar10-jpeg.tar.gz", cache_dir="/tmp/rs_cache",
                test_per_class=10, **data_cfg)
recipe = Recipe.from_dict(rec_cfg)
t0 = time.perf_counter()
proxy = load_proxy(spec, recipe.image_size, recipe.seed)
load_s = time.perf_counter() - t0
dev = resolve_device("cpu")
run = _Run(recipe, proxy, dev, None, False, None)
t0 = time.perf_counter(); floor = run.knn(); floor_s = time.perf_counter() - t0
hist = []
train_s = 0.0
while run.epoch < recipe.epochs:
    loss, s = run.train_epoch(); train_s += s
    run.epoch += 1
    if evals is None or run.epoch in evals or run.epoch == recipe.epochs:
        k = run.knn()
        hist.append({"epoch": run.epoch, "loss": round(loss, 4), "knn": round(k, 4), "train_s": round(train_s, 1)})
        print(tag, hist[-1], flush=True)
    if loss != loss:
        break
out = {"tag": tag, "data": data_cfg, "recipe": rec_cfg, "seed": recipe.seed, "load_s": round(load_s, 1),
       "floor_knn": round(floor, 4), "floor_eval_s": round(floor_s, 1), "train_s": round(train_s, 1),
       "img_per_s": round(run.epoch * run.steps_per_epoch * recipe.batch_size / max(train_s, 1e-9), 1),
       "history": hist, "final_knn": hist[-1]["knn"] if hist else None,
       "margin": round(hist[-1]["knn"] - floor, 4) if hist else None,
       "best_knn": max(h["knn"] for h in hist) if hist else None}
print("RESULT", json.dumps(out), flush=True)
with open("/tmp/explore/explore_results.jsonl", "a") as f:
    f.write(json.dumps(out) + "\n")
