"""Browser tests of the example site (Playwright + Debian Chromium)."""
