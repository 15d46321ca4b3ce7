"""Training (floor 5): one loop (``loop``) and the trainers that use it.

``train_vae``, ``train_ldm`` and ``train_siamese`` each supply their networks, a loss function
and a validation to :class:`~mammosynth.training.loop.TrainingLoop`; ``common`` holds run
folders, checkpoints and schedules, ``options`` the shared command-line flags, ``model_card``
renders a checkpoint's card from its run folders. Each trainer is ``parse_args()`` → ``main(args)``
and runs with ``python -m`` or ``accelerate launch -m mammosynth.training.<trainer>``.
"""
