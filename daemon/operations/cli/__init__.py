"""The ``calstream`` command: one registry (``registry.py``) and one module per
command group; ``main.py`` builds the parser from the registry."""
