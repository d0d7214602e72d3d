"""Does precise BN (re-estimated running stats on clean train images) change floor and trained val kNN?"""
import json, sys, time, torch
torch.set_num_threads(1)
from trainer import Recipe, DataSpec
from trainer.data import load_proxy
from trainer.loop import TrainingRun
from trainer.device import resolve_device

seed, classes, tpc, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bb = sys.argv[5] if len(sys.argv) > 5 else "mobilenetv3_small_100"
dev = resolve_device("cpu")
spec = DataSpec(dataset="cifar10", root="/work/shared/data/cifar10-jpeg.tar.gz", cache_dir="/tmp/rs_cache",
                classes=classes, train_per_class=tpc, val_per_class=50, test_per_class=10)
r = Recipe(backbone=bb, image_size=32, batch_size=64, queue_size=1024, seed=seed, epochs=epochs, blur_p=0.0)
p = load_proxy(spec, 32, 0)
run = TrainingRun(r, p, dev)

def precise(run):
    m = run.model.encoder_q
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    bns = [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    for b in bns: b.reset_running_stats(); b.momentum = None
    m.train()
    with torch.no_grad():
        for chunk in p.train_x.split(256): m.backbone(chunk.float().div(255))
    k = run.knn()
    m.load_state_dict(saved)
    for b in bns: b.momentum = 0.1
    return k

out = open(f"/tmp/explore2/res_{bb}_{classes}x{tpc}_s{seed}.jsonl", "a")
def log(**d):
    print(d, flush=True); out.write(json.dumps(d) + "\n"); out.flush()
log(epoch=0, knn=run.knn(), knn_precise=precise(run))
t0 = time.time()
while run.epoch < epochs:
    loss, s = run.train_epoch(); run.epoch += 1
    log(epoch=run.epoch, loss=loss, knn=run.knn(), knn_precise=precise(run), train_s=s, wall=time.time() - t0)
