"""Per-partition bookkeeping: which handed-out offsets are done, and what to commit.

Messages of one partition complete out of order (different keys run in parallel), but a
Kafka commit is a single number: everything below it counts as done. So the tracker commits
the lowest offset that is not done yet (or one past the last tracked offset when all are
done) and never moves past an unfinished one. It also keeps how often each offset was
handed out, seeded from the attempt record the previous owner left (see kafka_attempts).

Details the callers rely on:

* offsets are tracked in fetch order, strictly increasing, possibly with gaps (compaction,
  transaction markers); an offset in a gap or below the window counts as done;
* done slots at the front of the window are forgotten at once (they are below the commit
  point): ``attempts``/``handed_out_again`` of such an offset raise ``KeyError``;
* ``skip`` tracks an offset as done without counting a hand-out;
* ``runs()`` is the attempt record above the commit point: neighbouring tracked slots of one
  state (DONE or their hand-out count) make one run, followed by the prior runs not tracked
  yet (merged into the last run when they touch it with the same state).

The tracker is native (``agentflow._native.PartitionTracker``, rust_ext/src/offsets.rs):
``is_new``, ``track`` and ``done`` run once per message, ``runs()`` and ``commit_offset()``
once per commit, walking every slot in flight.
"""

from __future__ import annotations

from agentflow._native import PartitionTracker

__all__ = ["PartitionTracker"]
