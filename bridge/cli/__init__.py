"""The `bridge` command: main (arguments, one place for errors), dev, backfill, text output."""
