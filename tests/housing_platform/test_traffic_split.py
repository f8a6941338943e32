from __future__ import annotations

import pytest

from housing_platform import traffic_split
from housing_platform.artifact_store import LocalStore
from housing_platform.traffic_split import ServingRevision, TagUrl, TrafficSplit


def test_a_published_split_reads_back_and_one_that_does_not_sum_to_100_is_refused(tmp_path):
    store = LocalStore(tmp_path)
    assert traffic_split.read(store) is None
    split = TrafficSplit(
        revisions=[
            ServingRevision(revision="a", model_version=1, percent=90),
            ServingRevision(
                revision="b", model_version=2, percent=10, tags=[TagUrl("canary", "u")]
            ),
        ]
    )
    published = traffic_split.publish(store, split)
    assert published.updated_at > 0
    assert traffic_split.read(store) == published
    with pytest.raises(ValueError, match="sum to 100"):
        traffic_split.publish(store, TrafficSplit(revisions=split.revisions[:1]))
    assert traffic_split.read(store) == published, "the refused split wrote nothing"
