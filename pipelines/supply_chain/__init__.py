"""The image supply chain: build -> SOCI index -> verify (blocking check) -> release, one partition per target."""
