"""Command-line entry points (``hrmkit <command>``): thin functions over the library, which never imports them."""
