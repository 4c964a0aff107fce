"""APER against the spec (more_baselines_prompt_analytic.md §4): parameter counts of every variant on
ViT-B/16, the concatenated features, the prototypes and the cosine over the whole concatenation, the
frozen branch as the pretrained ViT, and nothing trainable after the first experience."""

import pytest
import torch
import torch.nn.functional as F

from cl_bench.baselines.aper.model import AperNet, class_prototypes, concatenated_features
from cl_bench.models.heads import cosine_logits
from helpers import tiny_vit


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("petl, expected", [
    ("adapter", 1_189_632), ("ssf", 205_824), ("vpt_deep", 46_080), ("vpt_shallow", 3_840), ("full", 85_798_656),
])
def test_first_session_trainable_parameters_of_every_variant_on_vit_b(petl, expected):
    import timm

    with torch.device("meta"):
        net = AperNet(timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token"), petl)
        net.first_session.start_first_session(5)
    assert trainable(net) == expected + 5 * 768 + 1
    assert net.prototypes.weight.shape == (0, 1536)


def test_concatenated_features_and_prototypes_on_small_tensors():
    frozen = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    adapted = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 4.0]])
    z = concatenated_features(frozen, adapted)
    assert torch.equal(z, torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.0, 2.0, 1.0, 0.0], [3.0, 1.0, 0.0, 4.0]]))
    prototypes = class_prototypes(z, torch.tensor([7, 9, 7]), [9, 7])  # rows in the order asked
    assert torch.equal(prototypes, torch.tensor([[0.0, 2.0, 1.0, 0.0], [2.0, 0.5, 0.25, 2.25]]))
    # the cosine normalises the whole concatenation, not each branch; the branch order does not matter
    logits = cosine_logits(z, prototypes)
    torch.testing.assert_close(logits, F.normalize(z, dim=1) @ F.normalize(prototypes, dim=1).T)
    swapped = cosine_logits(concatenated_features(adapted, frozen), prototypes[:, [2, 3, 0, 1]])
    torch.testing.assert_close(logits, swapped)
    per_branch = cosine_logits(frozen, prototypes[:, :2]) + cosine_logits(adapted, prototypes[:, 2:])
    assert not torch.allclose(logits, per_branch / 2)


@pytest.mark.parametrize("petl", ["adapter", "ssf", "vpt_deep", "vpt_shallow", "full"])
def test_the_frozen_branch_is_the_pretrained_vit_and_the_adapted_one_differs(petl):
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    x = torch.rand(3, 3, 28, 28)
    with torch.no_grad():
        pretrained = vit(x)
        net = AperNet(vit, petl).eval()
        for p in net.first_session.petl_parameters:  # as if trained: move every PETL parameter
            p.add_(0.1 * torch.randn_like(p))
        z = net.features(x)
    assert torch.equal(z[:, :32], pretrained)
    assert (z[:, 32:] - pretrained).abs().max() > 1e-3
    net.prototypes.add(z[:2])
    assert net(x).shape == (3, 2)
    torch.testing.assert_close(net(x)[:2].diagonal(), torch.ones(2))


def test_after_the_first_experience_nothing_trains_and_the_head_is_gone():
    net = AperNet(tiny_vit(), "adapter")
    assert trainable(net) == 0  # nothing trains before the first experience starts either
    net.first_session.start_first_session(4)
    names = {n.split(".")[-2] for n, p in net.named_parameters() if p.requires_grad}
    assert names == {"down", "up", "head"}
    assert trainable(net.first_session.head) == 4 * 32 + 1
    net.first_session.freeze()
    assert trainable(net) == 0 and net.first_session.head is None
