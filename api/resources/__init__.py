"""One module per noun of the REST contract."""
