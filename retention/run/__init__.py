"""One pass over one account: the only caller of the adapters' destructive methods.

``account`` is the pass (connect, recover, measure, scan, plan, execute, measure again)
and the fan-out over accounts; ``executor`` carries a plan out, journal first, and
``recovery`` finishes what an interrupted pass left open. Both work on one
``Executor`` per account pass: recovery first, then execution.
"""
