"""The bus contract (livegate.bus.base), run against every backend: memory and Redis.

A backend passes when it behaves like this file says; app code relies on nothing else.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from livegate.bus.base import Bus, PublishItem, StreamEvent
from tests.bus._support import BusKit, Recorder, assert_contiguous, eventually, stream_name


def body(n: int, **extra: object) -> bytes:
    return json.dumps({"type": "progress", "n": n, **extra}, separators=(",", ":")).encode()


async def publish_n(bus: Bus, stream: str, count: int, start: int = 0) -> list[int]:
    positions = await bus.publish([PublishItem(stream, body(start + i)) for i in range(count)])
    return [p.offset for p in positions]


# -- publish and read --------------------------------------------------------------------------


async def test_publish_assigns_consecutive_offsets_with_a_stable_epoch(bus: Bus) -> None:
    stream = stream_name()
    first = await bus.publish([PublishItem(stream, body(0))])
    more = await bus.publish([PublishItem(stream, body(i)) for i in (1, 2, 3)])
    positions = first + more
    assert [p.offset for p in positions] == [1, 2, 3, 4]
    assert len({p.epoch for p in positions}) == 1
    read = await bus.read(stream, None)
    assert read.epoch == positions[0].epoch
    assert read.top == 4


async def test_each_stream_counts_on_its_own_and_a_batch_keeps_order(bus: Bus) -> None:
    a, b = stream_name("a"), stream_name("b")
    items = [PublishItem(a, body(0)), PublishItem(b, body(100)), PublishItem(a, body(1)),
             PublishItem(a, body(2)), PublishItem(b, body(101))]
    positions = await bus.publish(items)
    assert [p.offset for p in positions] == [1, 1, 2, 3, 2]
    assert positions[0].epoch != positions[1].epoch  # epochs are per stream
    read_a = await bus.read(a, 0)
    read_b = await bus.read(b, 0)
    assert [json.loads(e.data)["n"] for e in read_a.events] == [0, 1, 2]
    assert [json.loads(e.data)["n"] for e in read_b.events] == [100, 101]


async def test_publishing_nothing_returns_nothing(bus: Bus) -> None:
    assert await bus.publish([]) == []


async def test_a_body_that_is_not_a_json_object_is_refused(bus: Bus) -> None:
    with pytest.raises(ValueError):
        await bus.publish([PublishItem(stream_name(), b"[1,2]")])


async def test_read_after_n_returns_exactly_the_events_after_n(bus: Bus) -> None:
    stream = stream_name()
    await publish_n(bus, stream, 10)
    for after in (0, 1, 5, 9, 10, 11):
        read = await bus.read(stream, after)
        assert [e.offset for e in read.events] == list(range(after + 1, 11)), after
        assert read.top == 10
    read = await bus.read(stream, 6)
    assert [json.loads(e.data)["n"] for e in read.events] == [6, 7, 8, 9]


async def test_read_without_offset_gives_the_position_only(bus: Bus) -> None:
    stream = stream_name()
    positions = await bus.publish([PublishItem(stream, body(i)) for i in range(3)])
    read = await bus.read(stream, None)
    assert (read.epoch, read.top, read.first_available, read.events) == (positions[0].epoch, 3, 1, [])


async def test_an_untouched_stream_is_empty_and_keeps_its_epoch(bus: Bus) -> None:
    stream = stream_name()
    read = await bus.read(stream, 0)
    assert (read.top, read.first_available, read.events) == (0, 1, [])
    again = await bus.read(stream, None)
    assert again.epoch == read.epoch  # the epoch is made once, not per read
    (position,) = await bus.publish([PublishItem(stream, body(0))])
    assert position == type(position)(read.epoch, 1)


async def test_history_frames_carry_position_key_and_publish_time(bus: Bus) -> None:
    stream = stream_name()
    before = time.time()
    await bus.publish([PublishItem(stream, body(0), conflation_key="progress:g1"),
                       PublishItem(stream, body(1, text="é\n\"q\""))])
    after = time.time()
    read = await bus.read(stream, 0)
    first, second = read.events
    assert first.conflation_key == "progress:g1" and second.conflation_key is None
    assert first.data.startswith('{"epoch":"' + read.epoch + '","offset":1,')
    assert json.loads(second.data) == {"epoch": read.epoch, "offset": 2, "type": "progress", "n": 1,
                                       "text": "é\n\"q\""}
    for event in read.events:
        assert before - 1.0 <= event.published_at <= after + 1.0


# -- bounded history ---------------------------------------------------------------------------


async def test_history_is_bounded_by_count(kit: BusKit) -> None:
    bus = await kit.make(max_events=3)
    stream = stream_name()
    await publish_n(bus, stream, 5)
    read = await bus.read(stream, 0)
    assert (read.top, read.first_available) == (5, 3)
    assert [e.offset for e in read.events] == [3, 4, 5]
    assert [e.offset for e in (await bus.read(stream, 3)).events] == [4, 5]


async def test_history_is_bounded_by_age(kit: BusKit) -> None:
    bus = await kit.make(max_age_seconds=1.0)
    stream = stream_name()
    await publish_n(bus, stream, 2)  # offsets 1, 2
    await kit.advance(0.5)
    await publish_n(bus, stream, 1, start=2)  # offset 3, half a max_age younger

    async def first_two_aged_out() -> bool:
        await kit.advance(0.05)
        return (await bus.read(stream, None)).first_available > 2

    await eventually(first_two_aged_out, timeout=5.0, what="offsets 1-2 aged out")
    read = await bus.read(stream, 0)
    assert (read.top, read.first_available) == (3, 3)  # offset 3 is not old enough yet
    assert [e.offset for e in read.events] == [3]

    async def all_aged_out() -> bool:
        await kit.advance(0.05)
        return (await bus.read(stream, None)).first_available == 4

    await eventually(all_aged_out, timeout=5.0, what="offset 3 aged out")
    read = await bus.read(stream, 0)
    assert (read.top, read.events) == (3, [])  # the position outlives its history
    assert [p.offset for p in await bus.publish([PublishItem(stream, body(9))])] == [4]


# -- live delivery -----------------------------------------------------------------------------


async def test_a_listener_gets_live_events_in_order_with_exact_frames(bus: Bus) -> None:
    stream = stream_name()
    got = Recorder()
    subscription = await bus.subscribe(stream, got)
    items = [PublishItem(stream, body(i), conflation_key=f"k{i % 2}" if i % 3 else None) for i in range(20)]
    positions = await bus.publish(items[:5])
    positions += await bus.publish(items[5:])
    await got.wait_for(20)
    assert_contiguous(got.offsets, 1, 20)
    history = (await bus.read(stream, 0)).events
    for event, item, position, stored in zip(got.events, items, positions, history, strict=True):
        assert isinstance(event, StreamEvent)
        frame = json.loads(event.data)
        assert list(frame)[:2] == ["epoch", "offset"]
        assert frame == {"epoch": position.epoch, "offset": position.offset, **json.loads(item.body)}
        assert event.conflation_key == item.conflation_key
        assert event == stored  # live and history agree to the byte, key and time
        assert abs(event.published_at - time.time()) < 5.0
    await subscription.close()


async def test_listeners_of_one_stream_never_see_another_streams_events(bus: Bus) -> None:
    a, b = stream_name("a"), stream_name("b")
    got_a, got_b = Recorder(), Recorder()
    await bus.subscribe(a, got_a)
    await bus.subscribe(b, got_b)
    await bus.publish([PublishItem(a, body(1, s="a")), PublishItem(b, body(1, s="b")),
                       PublishItem(b, body(2, s="b"))])
    await got_a.wait_for(1)
    await got_b.wait_for(2)
    assert all(json.loads(e.data)["s"] == "a" for e in got_a.events) and got_a.offsets == [1]
    assert all(json.loads(e.data)["s"] == "b" for e in got_b.events) and got_b.offsets == [1, 2]


async def test_many_listeners_on_one_stream_each_get_everything(bus: Bus) -> None:
    stream = stream_name()
    recorders = [Recorder() for _ in range(10)]
    for recorder in recorders:
        await bus.subscribe(stream, recorder)
    for start in range(0, 30, 10):
        await publish_n(bus, stream, 10, start)
    for recorder in recorders:
        await recorder.wait_for(30)
        assert_contiguous(recorder.offsets, 1, 30)
        assert recorder.events == recorders[0].events


async def test_a_closed_subscription_gets_nothing_more(bus: Bus) -> None:
    stream = stream_name()
    leaving, staying = Recorder(), Recorder()
    subscription = await bus.subscribe(stream, leaving)
    await bus.subscribe(stream, staying)
    await publish_n(bus, stream, 2)
    await leaving.wait_for(2)
    await subscription.close()
    await subscription.close()  # closing twice is harmless
    await publish_n(bus, stream, 3, start=2)
    await staying.wait_for(5)  # delivered to `staying`, so it would have reached `leaving` by now
    assert leaving.offsets == [1, 2]
    assert_contiguous(staying.offsets, 1, 5)


async def test_resubscribing_after_the_last_listener_left_delivers_again(bus: Bus) -> None:
    stream = stream_name()
    for round_ in range(3):
        got = Recorder()
        subscription = await bus.subscribe(stream, got)
        (offset,) = await publish_n(bus, stream, 1, start=round_)
        await got.wait_for(offset)
        assert got.offsets == [offset]
        await subscription.close()


async def test_subscribe_then_read_leaves_no_seam(bus: Bus) -> None:
    """ws.py's join: subscribe, read history, then take live events above the read's top.
    With a publisher running all along, history + live must be every offset exactly once."""
    rng = random.Random(7)
    seams = 0
    for _ in range(8):
        stream = stream_name()
        total = 120
        done = asyncio.Event()

        async def publisher(stream: str = stream, done: asyncio.Event = done, total: int = total) -> None:
            sent = 0
            while sent < total:
                count = min(total - sent, rng.randint(1, 4))
                await publish_n(bus, stream, count, start=sent)
                sent += count
                await asyncio.sleep(0.0005)
            done.set()

        task = asyncio.create_task(publisher())
        await asyncio.sleep(rng.random() * 0.01)
        live = Recorder()
        subscription = await bus.subscribe(stream, live)
        read = await bus.read(stream, 0)
        await asyncio.wait_for(done.wait(), 10)
        await task
        if read.top < total:
            seams += 1
            await live.wait_for(total)
            assert_contiguous(live.offsets, live.offsets[0], total)  # live alone: ordered, no gap
        after_top = [o for o in live.offsets if o > read.top]
        assert_contiguous([e.offset for e in read.events] + after_top, 1, total)
        await subscription.close()
    assert seams >= 4, "the publisher should still be running while most rounds join"


async def read_in_pages(bus: Bus, stream: str, after: int, until: int, limit: int) -> list[StreamEvent]:
    """What a resume replays: pages after ``after`` up to ``until``, each checked to go on
    exactly where the previous one ended."""
    events: list[StreamEvent] = []
    for _ in range(until - after + 1):  # bounded: every page brings at least one event
        last = events[-1].offset if events else after
        if last >= until:
            break
        page = await bus.read(stream, last, limit=limit)
        assert 1 <= len(page.events) <= limit and page.events[0].offset == last + 1
        events += [e for e in page.events if e.offset <= until]
    return events


async def test_a_replay_read_in_pages_is_exactly_the_whole_read(bus: Bus) -> None:
    stream = stream_name()
    await publish_n(bus, stream, 25)
    whole = await bus.read(stream, 3)
    for limit in (1, 7, 22, 30):
        paged = await read_in_pages(bus, stream, 3, whole.top, limit)
        assert paged == whole.events  # same offsets, same frames, across every page boundary
    first = await bus.read(stream, 3, limit=7)
    assert (first.epoch, first.top, first.first_available) == (whole.epoch, 25, 1)
    assert [e.offset for e in first.events] == list(range(4, 11))


async def test_a_page_is_bounded_in_bytes_but_holds_at_least_one_event(bus: Bus) -> None:
    stream = stream_name()
    await bus.publish([PublishItem(stream, body(i, pad="x" * 1000)) for i in range(10)])
    one = await bus.read(stream, 0, max_bytes=10)
    assert [e.offset for e in one.events] == [1]
    size = len(one.events[0].data)
    some = await bus.read(stream, 2, max_bytes=3 * size + 50)
    assert [e.offset for e in some.events] == [3, 4, 5]
    assert [e.offset for e in (await bus.read(stream, 2, limit=2, max_bytes=10**6)).events] == [3, 4]


async def test_pages_and_live_events_meet_without_gap_or_duplicate(bus: Bus) -> None:
    """ws.py's paged replay: the join reads the first page and the top, live events above
    the top come from the subscription while the later pages are read."""
    stream = stream_name()
    await publish_n(bus, stream, 40)
    live = Recorder()
    subscription = await bus.subscribe(stream, live)
    first = await bus.read(stream, 5, limit=8)
    publisher = asyncio.create_task(publish_n(bus, stream, 30, start=40))
    rest = await read_in_pages(bus, stream, first.events[-1].offset, first.top, 8)
    await publisher
    await live.wait_for(70)
    replayed = [e.offset for e in first.events + rest]
    assert_contiguous(replayed + [o for o in live.offsets if o > first.top], 6, 70)
    await subscription.close()


# -- data loss ---------------------------------------------------------------------------------


async def test_losing_the_data_gives_a_new_epoch_and_offsets_restart(kit: BusKit) -> None:
    bus = await kit.make()
    stream = stream_name()
    old = await bus.publish([PublishItem(stream, body(i)) for i in range(3)])
    bus = await kit.lose_data(bus)
    read = await bus.read(stream, 0)
    assert read.epoch != old[0].epoch
    assert (read.top, read.first_available, read.events) == (0, 1, [])
    (position,) = await bus.publish([PublishItem(stream, body(9))])
    assert position.epoch == read.epoch and position.offset == 1


async def test_health_is_all_true_when_running(bus: Bus) -> None:
    health = await bus.health()
    assert health and all(health.values()), health
