"""The ``factedit`` command line (Typer): one module per command group, each thin."""
