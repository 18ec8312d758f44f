"""pfdiag diagnose: reason over the evidence that checks gathered.

Data flows one way: target -> checks -> findings -> diagnose -> report.
diagnose imports checks; checks never imports diagnose.
"""

__version__ = "0.1.0"
