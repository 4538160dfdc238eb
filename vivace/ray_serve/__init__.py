"""vivace on Ray Serve: N engine replicas behind one ingress, routed by cache affinity.

Imported only by `vivace serve --replicas/--ray-address` (and the Ray tests and bench): nothing else
in vivace imports Ray.
"""
