"""The sandboxed Jinja environment of rule templates and expressions, and its bounds."""
