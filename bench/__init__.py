"""fintask's side-by-side benchmarks against bare Dramatiq and Celery, on a Redis of their own."""
