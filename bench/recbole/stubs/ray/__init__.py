"""An empty stand-in for Ray: RecBole 1.2.1 imports ``ray`` (and ``ray.tune``) at module level for its
hyper-parameter tuner, which the benchmark never calls; the real package would pull in hundreds of MB."""
