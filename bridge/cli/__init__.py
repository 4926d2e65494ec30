"""The `bridge` command: main (arguments, errors), rule, operation and process commands, dev."""
