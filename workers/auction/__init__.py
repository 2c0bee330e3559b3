"""The auction's pure math: cost, entropy, jury parsing and aggregation, the score
``C - V``, the award rule, the weights file and the offline fit. No Celery, no database,
no network."""
