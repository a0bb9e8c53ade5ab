"""Handlers of workflows/support_triage.yaml: classify, route, page on-call, answer, assign.

Deterministic stand-ins for model calls, so the example behaves the same on every run: the
on-call pager "times out" on the first attempt for odd ticket numbers (the retry path) and is
down for the `mars` region (retries run out: the dead-letter path); spam is rejected outright.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from agentflow import Context, Reject


class Ticket(BaseModel):
    """A support ticket as customers submit it."""

    id: str
    customer: str
    subject: str
    body: str
    tier: str = "standard"
    region: str = "eu"


class Classified(Ticket):
    """A ticket with its category and priority."""

    category: str
    priority: str


class Triaged(Classified):
    """A classified ticket with the response time it is owed."""

    sla_minutes: int


class Paged(BaseModel):
    """An on-call engineer acknowledged an urgent ticket."""

    ticket_id: str
    engineer: str
    attempts: int


class Reply(BaseModel):
    """An automatic answer sent to the customer."""

    ticket_id: str
    text: str


class Assignment(BaseModel):
    """A ticket placed in a team's queue."""

    ticket_id: str
    team: str


class PagerTimeout(Exception):
    """The paging service did not answer in time (transient: worth retrying)."""


_SPAM = re.compile(r"\b(lottery|winner|crypto giveaway)\b", re.I)
_URGENT = re.compile(r"\b(outage|down|data loss|cannot log in|security)\b", re.I)
_BILLING = re.compile(r"\b(invoice|refund|charged?|billing|payment)\b", re.I)
_SLA = {("urgent", "enterprise"): 15, ("urgent", "standard"): 60}
_ON_CALL = {"eu": "ana", "us": "bo", "apac": "chen"}


async def classify(ticket: Ticket) -> Classified:
    """Pick a category and priority from the ticket text; reject spam."""
    text = f"{ticket.subject} {ticket.body}"
    if _SPAM.search(text):
        raise Reject("spam")
    priority = "urgent" if _URGENT.search(text) else "normal"
    category = "billing" if _BILLING.search(text) else "technical"
    return Classified(**ticket.model_dump(), category=category, priority=priority)


async def route(ticket: Classified) -> Triaged:
    """Attach the SLA; the workflow's routes pick the next topic from priority and category."""
    minutes = _SLA.get((ticket.priority, ticket.tier), 24 * 60)
    return Triaged(**ticket.model_dump(), sla_minutes=minutes)


async def page_on_call(ticket: Triaged, ctx: Context) -> Paged:
    """Page the region's on-call engineer (flaky on purpose, see the module docstring)."""
    engineer = _ON_CALL.get(ticket.region)
    if engineer is None:
        raise PagerTimeout(f"no pager route for region {ticket.region!r}")
    number = int(re.sub(r"\D", "", ticket.id) or 0)
    if number % 2 == 1 and ctx.attempt == 1:
        raise PagerTimeout("pager did not acknowledge within 2s")
    return Paged(ticket_id=ticket.id, engineer=engineer, attempts=ctx.attempt)


async def answer_billing(ticket: Triaged) -> Reply:
    """Send the billing FAQ answer."""
    return Reply(
        ticket_id=ticket.id,
        text=f"Hi {ticket.customer}, invoices and refunds are under Settings > Billing.",
    )


async def assign(ticket: Triaged) -> Assignment:
    """Put the ticket in the right team's queue."""
    team = "billing" if ticket.category == "billing" else "support-l1"
    return Assignment(ticket_id=ticket.id, team=team)
