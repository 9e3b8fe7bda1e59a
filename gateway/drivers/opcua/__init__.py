"""OPC UA (issue 10)."""
