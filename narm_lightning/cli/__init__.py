"""The command line: entry points, apps, argv handling, --help, and how a run exits."""
