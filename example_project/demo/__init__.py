"""Demo app of the example site: login, account and API pages."""
