"""The command line: ``python -m psvit.<command>`` (Hydra apps over the library, one module per command), their
launcher (one-line errors, interrupts), the checks made before any work, and Hydra's sweep callback.

Nothing outside this package imports it (an import-linter contract); ``psvit/<command>/__main__.py`` are
two-line shims that call ``psvit.cli.<command>.main``.
"""
