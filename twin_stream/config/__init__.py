"""Settings (one loader: file, then TWIN_ environment) and logging set-up."""
