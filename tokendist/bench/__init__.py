"""``tokendist bench`` (``python -m tokendist.bench.run``): throughput, latency, lag and
memory of the whole pipeline, with the raw speed of each stage measured in the same run
so a reader can see where time goes."""
