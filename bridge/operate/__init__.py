"""Operate the flow: the composition root of each process, the queries and commands shared
by the admin API, dashboard and CLI, and metrics."""
