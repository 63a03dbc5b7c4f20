"""aibridgeproxyd: a CONNECT proxy that hands provider traffic to the bridge (DESIGN §8)."""
