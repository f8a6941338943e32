import msgspec
import pytest

from housing_platform import release_feed
from housing_platform.artifact_store import LocalStore
from housing_platform.release_feed import ReleaseFeed, ReleaseFeedError


def test_no_feed_published_means_no_shadow_phase(tmp_path):
    assert release_feed.read(LocalStore(tmp_path)) is None


def test_a_published_feed_reads_back_stamped(tmp_path):
    store = LocalStore(tmp_path)
    feed = ReleaseFeed(
        stable_revision="housing-api-m6-1a2b3c4d",
        shadow_percent=25,
        shadow_url="http://127.0.0.1:8080/tags/shadow",
        shadow_revision="housing-api-m7-5e6f7a8b",
        shadow_model_version=7,
    )
    published = release_feed.publish(store, feed)
    assert published.updated_at > 0
    assert release_feed.read(store) == published
    assert store.list("releases") == [release_feed.KEY]
    assert published.mirroring


def test_a_later_publish_replaces_the_feed(tmp_path):
    store = LocalStore(tmp_path)
    release_feed.publish(store, ReleaseFeed(shadow_percent=50, shadow_url="http://x"))
    release_feed.publish(store, ReleaseFeed(shadow_percent=0, shadow_url="http://x"))
    feed = release_feed.read(store)
    assert feed is not None
    assert feed.shadow_percent == 0
    assert not feed.mirroring


def test_a_share_out_of_range_is_named(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes(release_feed.KEY, msgspec.json.encode({"shadow_percent": 150}))
    with pytest.raises(
        ReleaseFeedError, match=r"`shadow_percent`: Expected `int` <= 100. Publish it again"
    ):
        release_feed.read(store)


def test_an_unknown_field_is_named(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes(release_feed.KEY, b'{"shadowPercent": 10}')
    with pytest.raises(ReleaseFeedError, match="shadowPercent"):
        release_feed.read(store)
