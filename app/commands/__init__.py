"""One module per subcommand group; each defines `register(subparsers, common_options_parser)`."""
