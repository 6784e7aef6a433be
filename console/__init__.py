"""Instance Console: keeps GPU inference services healthy."""
