"""The Gradio app's screens (floor 5): Generate, Reader study, Results.

* :mod:`.services` – settings, the lazily loaded model, accounts, the study (no gradio);
* :mod:`.display` – window/level and the breast outline (pure numpy);
* :mod:`.generate`, :mod:`.study`, :mod:`.results` – one tab each: pure handlers, then layout;
* :mod:`.app` – assembles the tabs (``build_app``, ``create_app``, ``launch_options``);
* :mod:`.demo` – the demo reader study built on first start.

``app.py`` at the repository root parses the command line and launches ``create_app``.
Import :mod:`.app` only after setting ``GRADIO_*`` environment variables.
"""
