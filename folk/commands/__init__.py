"""The ``folk`` commands, one module each (``add_arguments(parser)``, ``run(args)``): where
the libraries are put together. Only ``folk.cli`` imports these modules; no library does."""
