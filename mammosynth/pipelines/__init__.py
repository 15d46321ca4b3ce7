"""Sampling pipelines (floor 4).

* :mod:`.pipeline_mammo_ldm` – ``MammoLDMPipeline`` (also ``mammosynth.MammoLDMPipeline``, lazy);
* :mod:`.checkpoint` – checkpoint folders: loading, checks, the fingerprint, the bundled default;
* :mod:`.sampling` – ``mammosynth sample`` (a folder of images with recipes);
* :mod:`.testing` – the tiny random pipeline tests and benchmarks build.
"""
