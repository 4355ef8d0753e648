"""Jobs, schedules and the alpha sensor."""
