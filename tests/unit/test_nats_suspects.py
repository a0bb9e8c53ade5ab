"""How the NATS subscription charges redeliveries: only deliveries a runtime saw are attempts."""

from __future__ import annotations

from typing import Any

from agentflow.brokers.nats_suspects import Mark, NakMarks


def marks() -> NakMarks:
    """Marks kept in this process only (no KV bucket), which is all ``read`` needs here."""
    none: Any = None
    return NakMarks(none, none, "unused", 1)


async def test_first_redelivery_without_a_mark_is_a_charged_suspect() -> None:
    # Delivery 1 went out and its worker died: delivery 2 is a suspect, count 2.
    assert await marks().read("S", "c", 7, 2) == (True, 0)


async def test_unmarked_deliveries_after_the_first_are_free() -> None:
    # Deliveries 2 and 3 were pulled by workers that died while another suspect ran; a
    # suspect that reaches a runtime leaves a mark, so these were never seen.
    suspect, free = await marks().read("S", "c", 7, 4)
    assert (suspect, 4 - free) == (True, 2)


async def test_a_suspect_handed_out_and_crashed_is_charged_again() -> None:
    m = marks()
    await m.write("S", "c", 7, Mark(2, 0, suspect=True))  # delivery 2 handed out alone
    assert await m.read("S", "c", 7, 3) == (True, 0)  # it killed its worker: count 3
    await m.write("S", "c", 7, Mark(3, 0, suspect=True))
    suspect, free = await m.read("S", "c", 7, 6)  # 4 and 5 never reached a runtime
    assert (suspect, 6 - free) == (True, 4)


async def test_after_a_nak_the_next_delivery_is_a_plain_retry_then_charged_if_lost() -> None:
    m = marks()
    await m.write("S", "c", 9, Mark(1, 0, suspect=False))  # nak'ed after attempt 1
    assert await m.read("S", "c", 9, 2) == (False, 0)  # plain retry, not a suspect
    # Delivery 2 went out unmarked in a batch and its worker died; 3 was never seen.
    suspect, free = await m.read("S", "c", 9, 4)
    assert (suspect, 4 - free) == (True, 3)


async def test_hand_backs_stay_free() -> None:
    m = marks()
    await m.write("S", "c", 5, Mark(2, 1, suspect=True))  # delivery 2 handed back unseen
    assert await m.read("S", "c", 5, 3) == (True, 1)
