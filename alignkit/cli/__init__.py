"""The ``alignkit`` command line: ``main`` builds the app from the engine's commands (one module
each, all importing ``common``) and the commands plugins add (``alignkit_register_commands``)."""
