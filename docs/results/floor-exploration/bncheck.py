import json, torch
torch.set_num_threads(1)
from trainer import Recipe, DataSpec
from trainer.data import load_proxy
from trainer.engine import _Run
from trainer.device import resolve_device
out=[]
for seed in (0,1,2):
    spec = DataSpec(dataset="cifar10", root="/work/shared/data/cifar10-jpeg.tar.gz", cache_dir="/tmp/rs_cache",
                    classes=10, train_per_class=64, val_per_class=50, test_per_class=10)
    r = Recipe(image_size=32, batch_size=64, queue_size=256, seed=seed, blur_p=0.0)
    p = load_proxy(spec, 32, seed); run = _Run(r, p, resolve_device("cpu"), None, False, None)
    floor = run.knn()
    # re-estimate BN running stats on clean train images, weights untouched
    m = run.model.encoder_q.backbone
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm): mod.reset_running_stats(); mod.momentum=None
    m.train()
    with torch.no_grad():
        for chunk in p.train_x.split(64): m(chunk.float().div(255))
    bn = run.knn()
    d={"tag":"BN-recalibrated untrained encoder (no weight update)","seed":seed,"data":"10x64 val50 32px","floor_knn":round(floor,4),"floor_bn_recal_knn":round(bn,4)}
    print(d, flush=True)
    with open("/tmp/explore/explore_results.jsonl","a") as f: f.write(json.dumps(d)+"\n")
