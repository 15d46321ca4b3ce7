"""Subcommands of the ``mammosynth`` CLI, one module per area (floor 6)."""
