"""Running by itself: schedules, queue hygiene, freshness, maintenance and status."""
