"""Evaluation (floor 4, DESIGN §10): fidelity, utility, condition adherence, realism, report.

Nothing heavy is imported here; import the submodules you need:

* :mod:`~mammosynth.evaluation.fidelity` – FID, KID, precision/recall, density/coverage (pure functions)
* :mod:`~mammosynth.evaluation.utility` – TRTR / TSTR / real + synthetic ROC-AUC with bootstrap CIs
* :mod:`~mammosynth.evaluation.adherence` – do synthetic images show the requested conditions?
* :mod:`~mammosynth.evaluation.realism` – classifier two-sample tests
* :mod:`~mammosynth.evaluation.evaluate` – the whole run (``mammosynth evaluate``)
* :mod:`~mammosynth.evaluation.report` – ``metrics.json``, plots, ``summary.md``
* :mod:`~mammosynth.evaluation.paper_table` – the seed paper's table beside ours
* :mod:`~mammosynth.evaluation.generate_set` – synthetic sets matching a real split
* :mod:`~mammosynth.evaluation.features` – the fidelity encoder and local Inception files
* :mod:`~mammosynth.evaluation.toy` – tiny labelled toy sets for tests and benchmarks
"""
