"""How a bus tells copies of one malformed plain publish from another publish of the same
bytes (``QuarantineOnce``): never fewer letters than publishes it received."""

from __future__ import annotations

from plantcrew.bus.base import QuarantineOnce

BAD = b'{"not": "a message"}'


def test_copies_to_several_subscriptions_are_one_publish_and_a_repeat_is_another() -> None:
    once = QuarantineOnce()
    a, b = object(), object()
    assert [once.first("telemetry.p1", BAD, r, every=True) for r in (a, b)] == [True, False]
    assert [once.first("telemetry.p1", BAD, r, every=True) for r in (a, b)] == [True, False]
    assert once.first("telemetry.p2", BAD, a, every=True)  # another subject: another message


def test_a_queue_group_alone_letters_each_publish_its_members_get() -> None:
    # the group's copy of the last publish may have gone to another process: a member that
    # gets the bytes is a new publish unless a subscription without a group also got them
    once = QuarantineOnce()
    group, other_group = ("monitor", "telemetry.>"), ("audit", "telemetry.>")
    assert once.first("telemetry.p1", BAD, group, every=False)
    assert once.first("telemetry.p1", BAD, group, every=False)
    assert once.first("telemetry.p1", BAD, other_group, every=False)  # may count twice
    # with a subscription without a group, which gets every publish first here
    plain = object()
    assert once.first("telemetry.p2", BAD, plain, every=True)
    assert not once.first("telemetry.p2", BAD, group, every=False)  # plain saw it: a copy
    assert once.first("telemetry.p2", BAD, plain, every=True)  # the next publish


def test_a_plain_subscription_getting_the_bytes_again_is_a_new_publish() -> None:
    # the queue group's copy went elsewhere: the next identical publish is not taken for it
    once = QuarantineOnce()
    plain = object()
    assert once.first("telemetry.p1", BAD, plain, every=True)
    assert once.first("telemetry.p1", BAD, plain, every=True)


def test_entries_expire_and_are_bounded() -> None:
    once = QuarantineOnce(window_s=0.0, limit=2)
    a, b = object(), object()
    assert once.first("telemetry.p1", BAD, a, every=True)
    assert once.first("telemetry.p1", BAD, b, every=True)  # expired: lettered again
    for i in range(5):
        once.first(f"telemetry.p{i}", BAD, a, every=True)
    assert len(once._seen) == 2
