"""Representation sharing guided by CKA (Cao et al., MobiCom'24) and beyond.

Science: ``adapter`` (fixed and fitted adapters), ``fit``, ``merged`` (the merged classifier),
``memory``, ``evaluate`` (accuracy of merges), ``merges`` (every merge of a protocol, for the
``evaluate_merged`` stage), ``correlation``, ``search`` (sharing point under a budget), ``study``
(the analysis), ``claims`` (the paper's claims), ``section`` (dashboard section and comparison
rows), ``figures``. Import the submodules; this package imports nothing, so a stage pulls in only
what it uses.
"""
