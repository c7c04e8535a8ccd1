"""The commands of ``router`` / ``python -m router`` (router/cli.py builds the parser
and dispatches here): each module declares its commands' arguments and runs them.

- :mod:`~router.commands.common`: exit codes, usage errors, where output goes, loading the plan.
- :mod:`~router.commands.report`: what results and errors look like, as text and as JSON.
- :mod:`~router.commands.vars`: ``--var NAME=VALUE`` / ``NAME=@FILE`` / ``NAME=@-``.
- :mod:`~router.commands.calls`: ``complete`` and ``stream``.
- :mod:`~router.commands.inspect`: ``render``, ``routes``, ``spend``, ``health``.
- :mod:`~router.commands.check`: ``validate`` and ``schema``.
- :mod:`~router.commands.init`: ``init``.

The whole interface (every option, exit code and JSON shape) is in docs/cli.md.
"""
