"""Sub-commands of ``backchannel`` for delegations and intermediaries."""
