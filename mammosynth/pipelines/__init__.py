"""Sampling pipelines (floor 4). Import :mod:`~mammosynth.pipelines.pipeline_mammo_ldm` or use
``mammosynth.MammoLDMPipeline`` (lazy)."""
