"""Local, faithful sandboxes of the Slack, Lytho and Lytics APIs for `bridge dev` and the tests."""
