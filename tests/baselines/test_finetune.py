"""The reference rows' network (Finetune and Joint): what each trainable choice trains, the growing
head, and Finetune's two losses by hand."""

import pytest
import torch
import torch.nn.functional as F

from cl_bench.baselines.finetune.model import ReferenceNet, finetune_loss
from cl_bench.baselines.joint.model import joint_loss
from helpers import tiny_vit


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("part", ["full", "head", "adapter", "ssf", "vpt_deep", "vpt_shallow"])
def test_each_trainable_choice_trains_its_part_and_the_head(part):
    vit = tiny_vit()
    backbone = sum(p.numel() for p in vit.parameters())
    net = ReferenceNet(vit, n_classes=6, trainable=part)
    head = 6 * 32 + 6
    expected = {"full": backbone, "head": 0, "adapter": 4 * (32 * 64 + 64 + 64 * 32 + 32), "ssf": 2 * (32 + 4 * (32 + 96 + 32 + 32 + 128 + 32) + 32),
                "vpt_deep": 4 * 5 * 32, "vpt_shallow": 5 * 32}[part]
    assert trainable(net) == expected + head


def test_the_head_grows_keeping_old_rows():
    net = ReferenceNet(tiny_vit(), n_classes=2, trainable="head")
    old = net.head.weight.detach().clone()
    net.expand_head(5)
    assert net.head.weight.shape == (5, 32) and torch.equal(net.head.weight[:2], old)
    assert net(torch.rand(1, 3, 28, 28)).shape == (1, 5)


def test_finetune_losses_by_hand():
    logits = torch.randn(3, 6)
    columns = torch.tensor([2, 3, 3])
    torch.testing.assert_close(finetune_loss(logits, columns, 2, 4, "current"), F.cross_entropy(logits[:, 2:4], columns - 2))
    torch.testing.assert_close(finetune_loss(logits, columns, 2, 4, "seen"), F.cross_entropy(logits[:, :4], columns))
    torch.testing.assert_close(joint_loss(logits, columns), F.cross_entropy(logits, columns))
