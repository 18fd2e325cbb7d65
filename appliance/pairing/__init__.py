"""Pairing two units: discovery (mDNS), one-time codes, the SPAKE2 handshake, and unpairing."""
