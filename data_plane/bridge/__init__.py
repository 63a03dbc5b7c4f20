"""aibridged: the bridge daemon serving each provider's HTTP API at /<provider>/..."""
