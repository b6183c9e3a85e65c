"""OverFeat greedy merging on constructed boxes (docs/formats.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.localise.merge import DEFAULT_THRESHOLDS, MergeConfig, best_box, greedy_merge, match_scores

# three predictions of one object (scores 0.2 each) and one stronger lone box elsewhere
CLUSTER = np.array([[10, 10, 50, 50], [12, 8, 52, 48], [14, 12, 54, 52]], dtype=float)
LONE = np.array([[100, 100, 150, 150]], dtype=float)


def test_cluster_merges_and_accumulated_score_beats_a_stronger_single_box():
    boxes = np.concatenate([CLUSTER, LONE])
    scores = np.array([0.2, 0.2, 0.2, 0.5])
    mb, ms, n = greedy_merge(boxes, scores, MergeConfig(), size=(200, 200))
    assert sorted(n.tolist()) == [1, 3]
    assert sorted(ms.tolist()) == pytest.approx([0.5, 0.6])  # accumulated: 0.2 * 3
    box, score = best_box(boxes, scores, MergeConfig(), size=(200, 200))
    assert score == pytest.approx(0.6)
    # plain pair averages: the two closest (0, 1: IoU 0.82) first, then with box 2
    first = (CLUSTER[0] + CLUSTER[1]) / 2
    np.testing.assert_allclose(box, (first + CLUSTER[2]) / 2)


def test_weighted_merge_is_the_mean_of_all_members():
    box, _ = best_box(CLUSTER, np.ones(3), MergeConfig(weighted=True), size=(200, 200))
    np.testing.assert_allclose(box, CLUSTER.mean(axis=0))


def test_threshold_stops_merging():
    boxes = np.concatenate([CLUSTER, LONE])
    scores = np.array([0.2, 0.2, 0.2, 0.5])
    mb, ms, n = greedy_merge(boxes, scores, MergeConfig(threshold=0.1), size=(200, 200))  # needs IoU >= 0.9
    assert len(mb) == 4 and n.tolist() == [1, 1, 1, 1]
    box, score = best_box(boxes, scores, MergeConfig(threshold=0.1), size=(200, 200))
    np.testing.assert_allclose(box, LONE[0])
    # disjoint boxes never merge at the default (1 - IoU = 2 for disjoint boxes)
    assert len(greedy_merge(np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), np.ones(2))[0]) == 2


def test_overfeat_match_scores_by_hand():
    a = np.array([[0, 0, 9, 9]], dtype=float)     # centre (5, 5)
    b = np.array([[5, 0, 14, 9]], dtype=float)    # centre (10, 5), overlap 5 x 10 = 50 px
    size = (100, 50)
    dist = 5 / 100
    inter = 50 / (100 * 50)
    assert match_scores(a, b, "overfeat", size)[0, 0] == pytest.approx(dist + inter)
    assert match_scores(a, b, "overfeat-signed", size)[0, 0] == pytest.approx(dist - inter)
    assert match_scores(a, b, "iou", size)[0, 0] == pytest.approx(1 - 50 / 150)
    assert MergeConfig(match="overfeat").t == DEFAULT_THRESHOLDS["overfeat"]
    assert MergeConfig(match="overfeat", threshold=0.3).t == 0.3


def test_overfeat_score_merges_near_boxes_and_keeps_far_ones():
    boxes = np.concatenate([CLUSTER, LONE])
    for match in ("overfeat", "overfeat-signed"):
        mb, ms, n = greedy_merge(boxes, np.array([0.2, 0.2, 0.2, 0.5]), MergeConfig(match=match), size=(200, 200))
        assert sorted(n.tolist()) == [1, 3], match


def test_edge_cases():
    mb, ms, n = greedy_merge(np.zeros((0, 4)), np.zeros(0))
    assert mb.shape == (0, 4)
    box, s = best_box(LONE, np.array([0.3]))
    np.testing.assert_allclose(box, LONE[0])
    with pytest.raises(ValueError):
        best_box(np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ValueError):
        greedy_merge(CLUSTER, np.ones(2))
