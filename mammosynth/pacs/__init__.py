"""Sending synthetic studies to a PACS and looking at them there (DESIGN §5, issue 22).

* :mod:`.client` – DICOMweb (STOW-RS, QIDO-RS, WADO-RS) with errors that name the URL;
* :mod:`.orthanc` – a local, loopback-only Orthanc to try it with.
"""
