"""k-sample stability: one set of names, shared with the scoring that writes them."""

import numpy as np

from lmm_lightning.metrics.stability import STABILITY_NAMES, stability, stability_per_document


def test_corpus_names_are_the_per_document_statistics_renamed():
    scores = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    per_doc = stability_per_document(scores)
    assert list(per_doc) == list(STABILITY_NAMES)
    corpus = stability(scores)
    assert list(corpus) == list(STABILITY_NAMES.values())
    for stat, name in STABILITY_NAMES.items():
        assert corpus[name] == float(per_doc[stat].mean())
    assert corpus["consistency_rate"] == 1 / 3 and corpus["consensus_accuracy"] == 2 / 3
