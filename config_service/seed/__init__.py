"""Seeding the provider database from environment variables at config-service boot.

`env` turns the environment into a validated `SeedPlan` (pure, no I/O); the database half
applies that plan inside one locked transaction.
"""
