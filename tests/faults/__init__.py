"""The fault-injection suite: thousands of routed calls against a misbehaving upstream.

``plan.py`` is the fault catalogue and the seeded choices, shared by ``server.py``
(the upstream, run in a process of its own) and ``test_fault_injection.py``.
"""
