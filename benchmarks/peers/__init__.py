"""Peer implementations the ``vs_peers`` benchmark compares against (no lit_seqrl in the d3rlpy worker)."""
