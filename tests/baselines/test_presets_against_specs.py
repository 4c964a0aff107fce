"""Every preset, resolved as a user gets it, against the values its spec gives, so drift fails CI.

Sources: ``../shared/specs/baselines.md`` (L2P §2.3, CODA-Prompt §3.3, EASE §4.5, class order §1.3, weights §1.1),
``cl_lora.md`` §6.2-6.3, ``protocol.md`` (splits, class order, backbones) and, for the offline proxy, the
README's "Offline proxy results" (epochs 3, batch 32, lr chosen per method by Avg on seed 0). A key absent from
an entry is one the spec does not fix.
"""

import pytest

from helpers import all_presets, preset_config

IN21K = "vit_base_patch16_224.augreg_in21k"
IN1K = "vit_base_patch16_224.augreg_in21k_ft_in1k"
ORIG_IN21K = "vit_base_patch16_224.orig_in21k"
MINI = "vit_mini_patch4_28.fmnist_letters"
NATURAL, ICARL = -1, 1993  # class_order_seed: -1 keeps the dataset order, 1993 is PILOT's shuffle (spec §1.3)

#: The protocol's splits, backbones and class order per bench (protocol.md; README bench table).
BENCH = {
    "split_cifar100": {"init_cls": 5, "inc_cls": 5, "backbone": IN21K, "class_order_seed": ICARL, "seed": 1993,
                       "transform": "reference", "pretrained": True},
    "imagenet_r": {"init_cls": 5, "inc_cls": 5, "backbone": IN1K, "class_order_seed": ICARL, "seed": 1993,
                   "transform": "reference", "pretrained": True},
    "digits_animals": {"init_cls": 4, "inc_cls": 4, "backbone": MINI, "pretrained": True, "class_order_seed": ICARL},
    "fashion_mnist": {"init_cls": 2, "inc_cls": 2, "backbone": MINI, "pretrained": False},
    "mnist_family30": {"init_cls": 6, "inc_cls": 6, "backbone": MINI, "pretrained": False},
}

#: Method constants the specs fix for every preset of a strategy.
METHOD = {
    # cl_lora.md §3-§4, §6.2-6.3: KD weight 5 at T 2, orth 1e-4, shared blocks = first half, SGD momentum 0.9
    "cl_lora": {"kd_weight": 5.0, "kd_temperature": 2.0, "orth_weight": 1e-4, "shared_blocks": -1, "momentum": 0.9,
                "distillation": True, "gradient_reassignment": True, "adapter_growth": True},
    # baselines.md §2.1, §2.3 (PILOT / l2p-pytorch column): pool 10, length 5, top 5, lambda 0.1, batch vote on
    "l2p": {"pool_size": 10, "prompt_length": 5, "top_k": 5, "pull_constraint": 0.1, "batchwise_prompt": True,
            "batchwise_prompt_eval": True, "weight_decay": 0.0},
    # baselines.md §3.1, §3.3: prompt_param [100, 8, 0.0] in blocks 0-4, Adam wd 0
    "coda_prompt": {"pool_size": 100, "prompt_length": 8, "prompt_layers": (0, 1, 2, 3, 4), "ortho_weight": 0.0,
                    "weight_decay": 0.0},
    # baselines.md §4.1, §4.4-4.5: bottleneck 64, scale 0.1, dropout 0.1, alpha 0.1, SGD momentum 0.9
    "ease": {"adapter_dim": 64, "adapter_scale": 0.1, "adapter_dropout": 0.1, "alpha": 0.1, "momentum": 0.9},
    "simple_cil": {"epochs": 0},  # trains nothing
}

#: (strategy, bench, preset) -> the values its spec gives, on top of BENCH and METHOD.
SPEC = {
    # cl_lora.md §6.3: exps/cifar.json and exps/inr.json
    ("cl_lora", "split_cifar100", "default"): {"backbone": IN21K, "epochs": 30, "batch_size": 64, "lr": 0.03,
                                               "weight_decay": 1e-4, "rank": 8},
    ("cl_lora", "imagenet_r", "default"): {"backbone": IN1K, "epochs": 20, "batch_size": 32, "lr": 0.05,
                                           "weight_decay": 5e-4, "rank": 10},
    ("cl_lora", "digits_animals", "default"): {"epochs": 3, "batch_size": 32, "lr": 0.002},
    # baselines.md §2.3: PILOT exps/l2p.json recipe on the protocol split; no clipping in PILOT
    ("l2p", "split_cifar100", "default"): {"epochs": 5, "batch_size": 16, "lr": 0.001875, "clip_grad_norm": 0.0},
    # §2.3 first-release column (= l2p-pytorch): 10 tasks, orig IN-21k weights (§1.1), clip 1.0, natural order
    ("l2p", "split_cifar100", "reference"): {"init_cls": 10, "inc_cls": 10, "backbone": ORIG_IN21K, "epochs": 5,
                                             "batch_size": 16, "lr": 0.001875, "clip_grad_norm": 1.0,
                                             "class_order_seed": NATURAL},
    # §2.3 PILOT exps/l2p_inr.json
    ("l2p", "imagenet_r", "default"): {"epochs": 10, "batch_size": 32, "lr": 0.001875, "clip_grad_norm": 0.0},
    ("l2p", "imagenet_r", "reference"): {"init_cls": 20, "inc_cls": 20, "backbone": IN1K, "epochs": 10,
                                         "batch_size": 32, "lr": 0.001875, "clip_grad_norm": 0.0,
                                         "class_order_seed": ICARL},
    ("l2p", "digits_animals", "default"): {"epochs": 3, "batch_size": 32, "lr": 0.005},
    # §3.3 official configs/cifar-100_prompt.yaml and imnet-r_prompt.yaml, CODA's own transforms (§1.2)
    ("coda_prompt", "split_cifar100", "default"): {"epochs": 20, "batch_size": 128, "lr": 0.001, "transform": "coda"},
    # §1.3: CODA's 10 x 10 in the natural order; §1.1: PILOT pins the AugReg IN-21k -> IN-1k weights
    ("coda_prompt", "split_cifar100", "reference"): {"init_cls": 10, "inc_cls": 10, "backbone": IN1K, "epochs": 20,
                                                     "batch_size": 128, "lr": 0.001, "transform": "coda",
                                                     "class_order_seed": NATURAL},
    ("coda_prompt", "imagenet_r", "default"): {"epochs": 50, "batch_size": 128, "lr": 0.001, "transform": "coda"},
    # §3.3 PILOT coda_prompt_inr.json: B0 Inc20, no shuffle
    ("coda_prompt", "imagenet_r", "reference"): {"init_cls": 20, "inc_cls": 20, "backbone": IN1K, "epochs": 50,
                                                 "batch_size": 128, "lr": 0.001, "transform": "coda",
                                                 "class_order_seed": NATURAL},
    ("coda_prompt", "digits_animals", "default"): {"epochs": 3, "batch_size": 32, "lr": 0.01},
    # §4.5 exps/ease_cifar_in21k.json: B0 Inc5 = B5-5-20, SGD 0.025, batch 48, wd 5e-4, 20 epochs
    ("ease", "split_cifar100", "default"): {"backbone": IN21K, "epochs": 20, "batch_size": 48, "lr": 0.025,
                                            "weight_decay": 5e-4},
    ("ease", "split_cifar100", "reference"): {"backbone": IN21K, "epochs": 20, "batch_size": 48, "lr": 0.025,
                                              "weight_decay": 5e-4},
    # §4.5 exps/ease_inr.json settings (no B0 Inc5 config was published)
    ("ease", "imagenet_r", "default"): {"epochs": 20, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-3},
    ("ease", "imagenet_r", "reference"): {"init_cls": 20, "inc_cls": 20, "backbone": IN1K, "epochs": 20,
                                          "batch_size": 16, "lr": 0.05, "weight_decay": 5e-3},
    ("ease", "digits_animals", "default"): {"epochs": 3, "batch_size": 32, "lr": 0.025},
    **{("simple_cil", bench, "default"): {} for bench in BENCH},
}


def expected(strategy, bench, preset):
    return {"class_order_from_seed": False, **BENCH[bench], **METHOD[strategy], **SPEC[(strategy, bench, preset)]}


def test_every_preset_has_a_spec_entry():
    assert set(all_presets()) == set(SPEC)


@pytest.mark.parametrize("strategy, bench, preset", sorted(SPEC))
def test_resolved_preset_equals_its_spec(strategy, bench, preset):
    config = preset_config(strategy, bench, preset)
    wrong = {k: (config.get(k), v) for k, v in expected(strategy, bench, preset).items() if config.get(k) != v}
    assert not wrong, f"(resolved, spec) of {strategy}/{bench}/{preset}: {wrong}"


def test_ease_cifar_weight_decay_and_l2p_official_order_are_the_specs():
    """The two drifts this file was written for (spec baselines.md §4.5, and l2p-pytorch's unshuffled order)."""
    assert preset_config("ease", "split_cifar100").get("weight_decay") == 5e-4
    reference = preset_config("l2p", "split_cifar100", "reference")
    assert reference.effective_class_order_seed == NATURAL
