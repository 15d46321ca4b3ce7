"""Networks (floor 2): the VAE, the conditional UNet and the condition encoder.

Nothing heavy is imported here; import the submodules you need:
:mod:`~mammosynth.models.autoencoder`, :mod:`~mammosynth.models.unet`,
:mod:`~mammosynth.models.conditioning`.
"""
