"""One module per pfdiag subcommand: add_parser(subparsers) and run(args) -> exit code."""
