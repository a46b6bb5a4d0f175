"""One module per optimizer pass; each exposes ``run(network) -> list[Rewrite]`` and mutates in place."""
