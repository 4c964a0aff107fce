"""The parts of one CL-LoRA training iteration (with KD), timed apart: what bounds the step's speed-up.

    python sweeps/bench_cl_lora_step.py --threads 1                # ViT-B/16, random weights, batch 4, CPU

Times, per iteration: the main forward (all blocks, with graph), the teacher's shared half (no
graph), the CE backward, the KD backward through the shared half, and the reference's separate
student pass over the shared half. Prints the median [min-max] of each over --repeats, and the most
that sharing the student's pass can give: (ours + student) / ours.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cl_bench.cli import ArgumentParser  # noqa: E402

PROG = "sweeps/bench_cl_lora_step.py"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--timm_name", default="vit_base_patch16_224", help="timm architecture, random weights (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=4, help="images per iteration (default: %(default)s)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed iterations (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default (default: %(default)s)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import timm
    import torch
    import torch.nn.functional as F

    from cl_bench.models.heads import CosineLinear
    from cl_bench.models.vit_parts import cls_feature
    from cl_bench.strategies.cl_lora.losses import distillation_loss
    from cl_bench.strategies.cl_lora.model import STUDENT, TEACHER, CLLoRANet

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vit = timm.create_model(args.timm_name, pretrained=False, num_classes=0, global_pool="token")
    net = CLLoRANet(vit, rank=args.rank, shared_blocks=len(vit.blocks) // 2)
    net.snapshot_teacher()  # the second experience: a teacher, a second branch, KD active
    branch = net.add_branch()
    net.proxy_head = CosineLinear(vit.embed_dim, 5)
    net.set_trainable(branch)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 2 and p.shape[1] == args.rank:
                p.normal_(0, 0.01)  # the student has left its teacher
    size = vit.patch_embed.img_size[0]
    x, y = torch.rand(args.batch_size, 3, size, size), torch.randint(0, 5, (args.batch_size,))
    params = [p for p in net.parameters() if p.requires_grad]
    ups = [p for pair in net.shared_pairs(STUDENT) for p in (pair.q.up.weight, pair.v.up.weight)]

    def iteration():
        seconds, start = {}, time.perf_counter()

        def lap(name):
            nonlocal start
            now = time.perf_counter()
            seconds[name], start = now - start, now

        embedded = net.embed(x)
        features, shared = net.train_features(x, branch, embedded)
        loss = F.cross_entropy(net.proxy_head(features), y)
        lap("main forward (all blocks, graph)")
        with torch.no_grad():
            teacher = net.shared_feature(x, TEACHER, embedded)
        lap("teacher's shared half (no graph)")
        torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        lap("CE backward (all blocks)")
        kd = distillation_loss(net.proxy_head(cls_feature(net.vit, shared)), net.proxy_head(teacher), weight=5.0, temperature=2.0)
        torch.autograd.grad(kd, ups)
        lap("KD backward (shared half)")
        net.shared_feature(x, STUDENT)
        lap("reference only: separate student shared half")
        return seconds

    iteration()  # warm-up
    runs = [iteration() for _ in range(args.repeats)]
    print(f"{args.timm_name}, random weights, batch {args.batch_size}, {torch.get_num_threads()} threads; "
          f"seconds, median of {args.repeats} [min-max]:")
    medians = {}
    for name in runs[0]:
        values = [r[name] for r in runs]
        medians[name] = statistics.median(values)
        print(f"  {name}: {medians[name]:.2f} [{min(values):.2f}-{max(values):.2f}]")
    student = medians.pop("reference only: separate student shared half")
    ours = sum(medians.values())
    print(f"our iteration {ours:.2f} s, the reference's {ours + student:.2f} s: sharing the student's pass gives at most "
          f"{(ours + student) / ours:.2f}x; 1.25x would need {ours - (ours + student) / 1.25:.2f} s more off ours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
