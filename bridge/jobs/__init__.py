"""3. Run: handle_event and run_rule (the only place joining rules to actions), dead letters,
traces, dedupe and throttle, and the poll schedule."""
