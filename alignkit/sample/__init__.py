"""Sampling: the token draw every backbone shares (``tokens``), class-balanced resumable sampling
(``balanced``), images and grids (``images``) and the ADM ``.npz`` format (``npz``)."""
