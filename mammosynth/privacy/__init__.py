"""Privacy (floor 3, DESIGN §9): the re-identification gate and the privacy audit.

* :mod:`~mammosynth.privacy.reid` – identity labels, metric-learning loss, P@1 / R-precision /
  mAP@R and verification AUC;
* :mod:`~mammosynth.privacy.augment` – the disguises a copied image could hide behind;
* :mod:`~mammosynth.privacy.index` – the embedding index over a training split;
* :mod:`~mammosynth.privacy.calibration` – the threshold for a false-flag rate on unseen patients;
* :mod:`~mammosynth.privacy.checker` – :class:`PrivacyChecker`, the pipeline's gate;
* :mod:`~mammosynth.privacy.membership` – membership-inference attacks on the diffusion model;
* :mod:`~mammosynth.privacy.audit` – the ``privacy-audit`` report.

Nothing heavy is imported here; import the submodules you need.
"""
