"""LIVEGATE_REDIS_URL forms: plain, Sentinel, and shards of either (livegate.bus.redis.address)."""

from __future__ import annotations

import pytest

from livegate.bus import create_bus
from livegate.bus.redis import RedisBus
from livegate.bus.redis.address import SentinelTarget, parse_sentinel_url, split_urls
from livegate.bus.sharded import ShardedBus
from livegate.config import Config


def test_a_sentinel_url_names_sentinels_service_db_and_the_nodes_credentials() -> None:
    target = parse_sentinel_url("redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/livegate/2")
    assert target == SentinelTarget([("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)], "livegate", 2,
                                    "app", "s@cret")
    assert target.node_url("10.0.0.9", 6380) == "redis://app:s%40cret@10.0.0.9:6380/2"
    assert parse_sentinel_url("redis+sentinel://h:26379/lg") == SentinelTarget([("h", 26379)], "lg")
    assert parse_sentinel_url("redis+sentinel://h/lg").node_url("n", 1) == "redis://n:1/0"  # type: ignore[union-attr]
    assert parse_sentinel_url("redis://h:6379/0") is None


@pytest.mark.parametrize("url", ["redis+sentinel://h:26379", "redis+sentinel://h:26379/", "redis+sentinel://:1/x"])
def test_a_sentinel_url_without_service_or_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)


def test_shards_split_on_commas_but_a_sentinel_list_stays_one_url() -> None:
    assert split_urls("redis://a:1/0, redis://b:2/0") == ["redis://a:1/0", "redis://b:2/0"]
    assert split_urls("redis+sentinel://s1:26379,s2:26379/one,redis+sentinel://s3,s4/two/1") == [
        "redis+sentinel://s1:26379,s2:26379/one", "redis+sentinel://s3,s4/two/1"]
    assert split_urls("redis://a:1/0,") == ["redis://a:1/0"]


def test_the_config_picks_one_bus_per_url() -> None:
    one = create_bus(Config(redis_url="redis+sentinel://s1:26379,s2:26379/livegate"))
    assert isinstance(one, RedisBus) and one.url == "redis+sentinel://s1:26379,s2:26379/livegate"
    two = create_bus(Config(redis_url="redis+sentinel://s1,s2/a,redis://b:6379/0"))
    assert isinstance(two, ShardedBus) and [s.url for s in two.shards] == [  # type: ignore[attr-defined]
        "redis+sentinel://s1,s2/a", "redis://b:6379/0"]
