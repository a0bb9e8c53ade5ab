"""Side-by-side benchmarks: agentflow vs FastStream, faust-streaming and tuned raw clients.

Run ``python -m benchmarks.run --broker nats`` (or ``kafka``); see ``benchmarks/README.md``.
"""
