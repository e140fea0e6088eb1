"""The ``effsweep`` command line: ``main`` parses and dispatches; each command group is a module of its own."""
