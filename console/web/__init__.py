"""Every HTML page: the only app that combines the others (as Healthchecks' hc/front over hc/api)."""
