"""What every process type shares: settings, database, models, security, events and jobs."""
