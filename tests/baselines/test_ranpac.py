"""RanPAC against the spec (more_baselines_prompt_analytic.md §3): first-session parameter counts on
ViT-B/16, the ridge solution and lambda search against a direct computation, streaming accumulation
against one solve, and independence from the batch order."""

import numpy as np
import pytest
import torch

from cl_bench.baselines.first_session import FirstSessionNet
from cl_bench.baselines.ranpac.model import (RIDGE_LAMBDAS, RanPACClassifier, one_hot, project, random_projection, ridge_weights,
                                    select_ridge_lambda)


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("petl, n_first, expected", [
    ("adapter", 5, 1_193_473), ("adapter", 10, 1_197_313), ("ssf", 5, 209_665), ("ssf", 20, 221_185),
])
def test_first_session_trainable_parameters_on_vit_b(petl, n_first, expected):
    import timm

    with torch.device("meta"):
        net = FirstSessionNet(timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, global_pool="token"), petl)
        net.start_first_session(n_first)
    assert trainable(net) == expected
    if petl == "ssf":
        assert len(net.petl_parameters) == 148  # scale and shift at 74 sites
    net.freeze()
    assert trainable(net) == 0 and net.head is None


def direct_lambda_search(H, Y):
    """The reference's search written out in numpy float64, with explicit inverses."""
    n_fit = int(H.shape[0] * 0.8)
    fit, val = H[:n_fit], H[n_fit:]
    losses = []
    for lam in 10.0 ** np.arange(-8, 9):
        W = np.linalg.inv(fit.T @ fit + lam * np.eye(H.shape[1])) @ fit.T @ Y[:n_fit]
        losses.append(np.mean((val @ W - Y[n_fit:]) ** 2))
    return 10.0 ** np.arange(-8, 9)[int(np.argmin(losses))], losses


def features_and_targets(n=60, dim=6, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    columns = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    features = centres[columns] + 1.5 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return features, columns


def test_ridge_solution_and_chosen_lambda_equal_a_direct_computation():
    features, columns = features_and_targets()
    W = random_projection(6, 12, torch.Generator().manual_seed(1)).double()
    H, Y = project(features, W), one_hot(columns, 4, torch.float64)
    lam, losses = select_ridge_lambda(H, Y)
    expected_lam, expected_losses = direct_lambda_search(H.numpy(), Y.numpy())
    assert lam == expected_lam and RIDGE_LAMBDAS[0] < lam < RIDGE_LAMBDAS[-1]  # an interior choice, not a boundary
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)
    G, Q = (H.T @ H).numpy(), (H.T @ Y).numpy()
    expected = (np.linalg.inv(G + lam * np.eye(12)) @ Q).T
    np.testing.assert_allclose(ridge_weights(H.T @ H, H.T @ Y, lam).numpy(), expected, rtol=1e-6, atol=1e-9)


def test_a_nan_loss_wins_the_search_as_np_argmin_unless_ignored():
    H, Y = torch.rand(4, 3, dtype=torch.float64), one_hot(torch.tensor([0, 1, 0, 1]), 2, torch.float64)
    lam, losses = select_ridge_lambda(H, Y, fit_fraction=1.0)  # no validation rows: every loss is NaN
    assert lam == RIDGE_LAMBDAS[0] and all(np.isnan(losses))
    with pytest.raises(FloatingPointError):
        select_ridge_lambda(H, Y, fit_fraction=1.0, ignore_nan=True)


def test_streaming_accumulation_over_experiences_equals_one_solve_on_all_features():
    features, columns = features_and_targets(n=80)
    classifier = RanPACClassifier(6, projection_size=16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for classes in ((0, 1), (2, 3)):  # two experiences of two classes, columns grow as classes arrive
        rows = (columns == classes[0]) | (columns == classes[1])
        classifier.grow(classes[1] + 1)
        for chunk in torch.arange(int(rows.sum())).split(7):
            classifier.accumulate(features[rows][chunk], columns[rows][chunk])
    classifier.solve(10.0)
    H = project(features, classifier.projection)
    expected = ridge_weights(H.T @ H, H.T @ one_hot(columns, 4, torch.float64), 10.0)
    torch.testing.assert_close(classifier.weight, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(classifier(features), H @ expected.T, rtol=1e-9, atol=1e-12)


def test_the_classifier_does_not_depend_on_the_order_of_batches():
    features, columns = features_and_targets(n=50)
    solved = []
    for order in (torch.arange(50), torch.randperm(50, generator=torch.Generator().manual_seed(5))):
        classifier = RanPACClassifier(6, projection_size=16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        classifier.grow(4)
        for chunk in order.split(6):
            classifier.accumulate(features[chunk], columns[chunk])
        classifier.solve(1.0)
        solved.append(classifier)
    torch.testing.assert_close(solved[0].gram, solved[1].gram, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(solved[0].weight, solved[1].weight, rtol=1e-8, atol=1e-10)
    assert torch.equal(solved[0](features).argmax(1), solved[1](features).argmax(1))


def test_projection_is_seeded_normal_and_the_reference_precision_is_float32():
    a = RanPACClassifier(8, projection_size=500, generator=torch.Generator().manual_seed(7))
    b = RanPACClassifier(8, projection_size=500, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.projection, b.projection) and a.projection.dtype == a.gram.dtype == torch.float32
    assert abs(a.projection.mean()) < 0.05 and abs(a.projection.std() - 1) < 0.05
    a.grow(3)
    H, Y = a.accumulate(torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert H.min() >= 0 and H.dtype == torch.float32 and Y.sum(1).eq(1).all()
    wide = RanPACClassifier(8, projection_size=5, dtype=torch.float64)
    assert wide.projection.dtype == wide.gram.dtype == torch.float64


def test_cosine_classifier_option_scores_pilots_cosine():
    classifier = RanPACClassifier(4, projection_size=6, generator=torch.Generator().manual_seed(0), cosine=True)
    classifier.weight = torch.randn(3, 6)
    x = torch.randn(2, 4)
    H = project(x, classifier.projection)
    expected = torch.nn.functional.cosine_similarity(H.unsqueeze(1), classifier.weight.unsqueeze(0), dim=2)
    torch.testing.assert_close(classifier(x), expected)


def test_state_dict_round_trip_restores_grown_buffers():
    classifier = RanPACClassifier(4, projection_size=6, generator=torch.Generator().manual_seed(0))
    classifier.grow(3)
    classifier.accumulate(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    classifier.solve(1.0)
    fresh = RanPACClassifier(4, projection_size=6)
    fresh.load_state_dict(classifier.state_dict())
    x = torch.randn(2, 4)
    assert torch.equal(fresh(x), classifier(x))
