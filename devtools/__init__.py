"""Developer tooling: an embedded Redis server and the ``make up`` supervisor."""
