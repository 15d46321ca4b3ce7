"""The Gradio app's screens (floor 5): Generate, Reader study, Results.

* :mod:`.services` – the settings and the shared services put together (no gradio):
  :mod:`.model` (requests, the lazily loaded checkpoint, outputs), :mod:`.accounts` (logins),
  :mod:`.studies` (the served study), :mod:`.reports` (a checkpoint's report files);
* :mod:`.choices` – the condition controls' choices, from :mod:`mammosynth.conditions`;
* :mod:`.api` – the API-only endpoints (``gr.api``) and the files they send;
* :mod:`.display` – window/level and the breast outline (pure numpy);
* :mod:`.generate`, :mod:`.study`, :mod:`.results` – one tab each: pure handlers, then layout;
* :mod:`.app` – assembles the tabs (``build_app``, ``create_app``, ``launch_options``);
* :mod:`.demo` – the demo reader study built on first start.

``app.py`` at the repository root parses the command line and launches ``create_app``.
Import :mod:`.app` only after setting ``GRADIO_*`` environment variables.
"""
