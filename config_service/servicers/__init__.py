"""gRPC servicers: thin adapters from messages to the store, errors mapped in `edge`."""
