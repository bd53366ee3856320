"""Landing: each feed's delivered files read into the canonical landing frames (adapters, readers, contract)."""
