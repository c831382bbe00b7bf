"""The fixtures every test folder shares: the testing kit's throwaway PostgreSQL server
(``pg_server``, and ``pg_url``: a fresh database for one test)."""

pytest_plugins = ["eventpile.testing.postgres"]
