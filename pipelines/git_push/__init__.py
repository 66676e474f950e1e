"""Git push sensor: builds the targets whose context changed on their remotes."""
