"""The pipeline stages, one module each, database in and database out: bidding, judging,
awarding, executing, updating; the Celery tasks in ``sale.workers.tasks`` call them."""
