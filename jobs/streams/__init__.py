"""Result streams: the typed stream records, the consumer-group machinery with dead letters, and the index consumer."""
