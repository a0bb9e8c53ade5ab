"""A support-ticket pipeline in Python: classify -> route, on the embedded broker.

    agentflow run workflows/example_app.py:app

``main(app)`` below feeds 20 sample tickets, waits until the pipeline is idle and returns; the
CLI then stops the app and prints its summary. Expect (every run, it is deterministic):

- classify: 19 processed, 6 retried, 1 dead-lettered. Four tickets (T-105, T-110, T-115,
  T-120) hit a simulated model time-out on their first attempt and succeed on the second;
  T-113 is too long for the model on every attempt, so after 3 attempts it lands in
  ``tickets.new.dlq`` (see it with ``agentflow dlq list tickets.new`` on a durable broker).
- route: 19 processed.

Set AGENTFLOW_BROKER (or pass --broker) to run the same pipeline on NATS or Kafka.
"""

from __future__ import annotations

from pydantic import BaseModel

from agentflow import App, Context, RetryPolicy

app = App("support-example")

# Small delays so the example finishes in a few seconds; production values are seconds.
RETRY = RetryPolicy(max_attempts=3, backoff=[0.05, 0.1])
MODEL_MAX_CHARS = 2_000


class Ticket(BaseModel):
    """A ticket as customers submit it."""

    id: str
    customer: str
    text: str


class Classified(BaseModel):
    """A ticket with a category and a priority."""

    id: str
    customer: str
    category: str
    priority: str


class Routed(BaseModel):
    """A ticket assigned to a team queue."""

    id: str
    queue: str


class ModelTimeout(Exception):
    """The (simulated) model API did not answer in time: transient, worth a retry."""


class ModelInputError(Exception):
    """The (simulated) model cannot take this input: it fails the same way every time."""


def fake_model(ticket: Ticket, attempt: int) -> tuple[str, str]:
    """A deterministic stand-in for an LLM call: (category, priority)."""
    number = int(ticket.id.removeprefix("T-"))
    if number % 5 == 0 and attempt == 1:
        raise ModelTimeout(f"model did not answer within 2s for {ticket.id}")
    if len(ticket.text) > MODEL_MAX_CHARS:
        raise ModelInputError(f"{len(ticket.text)} characters exceed the model's context")
    text = ticket.text.lower()
    category = next(
        (c for c, words in _CATEGORIES.items() if any(w in text for w in words)), "general"
    )
    priority = "high" if any(w in text for w in ("down", "outage", "urgent", "lost")) else "normal"
    return category, priority


_CATEGORIES = {
    "billing": ("invoice", "refund", "charged", "payment"),
    "access": ("password", "log in", "login", "2fa"),
    "bug": ("error", "crash", "broken", "down"),
}


@app.agent(consumes="tickets.new", produces="tickets.classified", retry=RETRY, concurrency=4)
async def classify(ticket: Ticket, ctx: Context) -> Classified:
    """Ask the model for a category and priority (retried on time-outs)."""
    category, priority = fake_model(ticket, ctx.attempt)
    return Classified(id=ticket.id, customer=ticket.customer, category=category, priority=priority)


@app.agent(consumes="tickets.classified", produces="tickets.routed", idempotency_key="id")
async def route(ticket: Classified) -> Routed:
    """Pick a team queue; idempotent per ticket id, so a redelivery routes a ticket once."""
    queue = "on-call" if ticket.priority == "high" else f"{ticket.category}-team"
    return Routed(id=ticket.id, queue=queue)


SAMPLE_TEXTS = [
    "I was charged twice for my invoice",
    "Cannot log in after password reset",
    "The export button shows an error",
    "Dashboard is down for our whole team, urgent",
    "How do I change my billing address?",
    "2FA codes never arrive",
    "App crash when uploading a photo",
    "Please refund my last payment",
    "We lost data after the sync, urgent",
    "Feature request: dark mode",
]


def sample_tickets() -> list[Ticket]:
    """Twenty tickets T-101..T-120; T-113 carries a text too long for the model."""
    tickets = []
    for n in range(101, 121):
        text = SAMPLE_TEXTS[n % len(SAMPLE_TEXTS)]
        if n == 113:
            text = "log dump follows: " + "0xDEADBEEF " * 400
        tickets.append(Ticket(id=f"T-{n}", customer=f"customer-{n % 4}", text=text))
    return tickets


async def main(app: App) -> None:
    """Feed the sample tickets, then wait until every one reached its final outcome."""
    for ticket in sample_tickets():
        # Keyed by customer: one customer's tickets are handled in order.
        await app.publish("tickets.new", ticket, key=ticket.customer)
    if not await app.wait_idle(timeout=30):
        raise TimeoutError("the example did not settle within 30s")
