"""Long-term memory storage: tables, engine, migrations and queries."""
