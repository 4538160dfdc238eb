"""`vivace bench`: load generation, serving metrics, scores against targets, reports and plots."""
