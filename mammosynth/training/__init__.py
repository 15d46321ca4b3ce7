"""Training loops (floor 5): ``train_vae``, ``train_ldm`` and what they share (``common``).

Each script is ``parse_args()`` → ``main(args)`` and runs with ``python -m`` or
``accelerate launch -m mammosynth.training.<script>``.
"""
