"""The report: its schema and merge, the summary table and pages, plots and reproducer bundles."""
