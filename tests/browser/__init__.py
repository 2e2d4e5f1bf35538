"""Browser tests: the clients in qewd_twisted/static and the seed's page, in headless Chromium."""
