"""User: accounts, their credentials and the signed access tokens the gateway verifies."""
