"""Sampling primitives every backbone shares: the token draw and its seeding (``tokens``), sampling
options checked against a backbone (``options``) and the ADM ``.npz`` format (``npz``). Class-balanced
sampling and ``alignkit sample`` are the ``alignkit_sampling`` plugin."""
