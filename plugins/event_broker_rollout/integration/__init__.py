"""Stage 5, integration: sample events through the real cluster, validated, with their contracts proven.

Plain Python the DAG calls with each component's own client settings:

* ``events``: the sample events (the synthetic generator, or an operator's JSON-lines file);
* ``flow``: produce as each topic's producer, consume as every consuming component, dead-letter what
  cannot be read or fails a row-level rule, and count it all per event type;
* ``quality``: the Great Expectations suite over the flattened events (verdicts only, never values);
* ``contracts``: each component may do what its contract grants and is refused outside it;
* ``latency``: end-to-end latency percentiles.
"""
