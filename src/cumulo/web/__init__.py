"""The web console: plain ES modules and CSS in ``static/`` (xterm.js copied into
``static/vendor/`` from the npm registry by scripts/install.sh), served at ``/ui/``.
It talks to the daemon only through the public API, like the CLI."""
