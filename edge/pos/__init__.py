"""The canteen POS agent: transaction engine, decisions (online and offline), control API."""
