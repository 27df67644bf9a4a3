"""Disclosure bags: a case's clips in a signed BagIt bag that anyone checks with free tools.

``bag.py`` writes one from central storage, ``verify_bag.py`` (copied into every bag,
standard library only) checks one and re-bags a subset for the next recipient.
"""
