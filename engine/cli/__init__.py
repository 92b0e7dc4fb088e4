"""Eve's command line: `main` (the parser and its shared argument groups), `common` (what every
command shares: the model a command names, progress bars, where output goes) and one module a
command."""
